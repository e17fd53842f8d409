"""Download shards are written as samples finish (bounded memory), and error counts are capped
and name no host (issue #17)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate import layout
from curate.counters import OTHER, CappedCounter, capped, merge_capped, normalise_message, normalised
from curate.pool import TMP_MARK, Pool
from curate.shards import ShardWriter, iter_shard_samples, read_shard_table
from curate.stages import download
from curate.stages.download.shard import Segment, download_shard
from curate.tarstream import iter_tar_files
from curate.testing.http import Route, redirect, serve_routes
from tests.test_download import JPEG, _config, _encode, _stalled_until_done, _write_candidates


@pytest.mark.fault("download", "the last sample of a shard still in flight (its server holds the response)", "the samples before it are already in the shard's temporary tar and parquet writer, nothing under the final names; memory per shard task is bounded by the samples in flight, not the shard")  # noqa: E501 - one row of docs/reliability.md
def test_samples_are_written_while_the_last_is_still_fetched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    n = 12
    images = {f"/{i}.jpg": _encode("JPEG", (40 + i, 30)) for i in range(n - 1)}
    seen: dict[str, object] = {}
    real_add = ShardWriter.add
    pool = Pool(str(tmp_path / "pool"))

    with _stalled_until_done() as stall, serve_routes({
            **{p: Route(body, content_type="image/jpeg") for p, body in images.items()},
            "/last.jpg": Route(JPEG, content_type="image/jpeg", hold=stall)}) as server:

        def add(self: ShardWriter, row) -> None:  # type: ignore[no-untyped-def]
            real_add(self, row)
            if len(getattr(self, "uids", getattr(self, "rows", []))) == n - 1:
                # The server still holds /last.jpg (until `stall` is set below): what is in the
                # shard's temporaries now was written as it finished, not at the end of the shard.
                tar = getattr(self, "_tar", None)
                if tar is not None:
                    tar.fh.flush()
                    with open(tar.tmp, "rb") as fh:
                        seen["in_temporary_tar"] = [name for name, _ in iter_tar_files(fh)]
                seen["listed"] = pool.listdir("shards")
                seen["temporaries"] = sorted(p.name.split(TMP_MARK)[0] for p in (tmp_path / "pool" / "shards").iterdir()
                                             if TMP_MARK in p.name)
                stall.set()

        monkeypatch.setattr(ShardWriter, "add", add)
        urls = [server.url(p) for p in images] + [server.url("/last.jpg")]
        _write_candidates(pool, urls)
        stats = download_shard(pool, "00000000", [Segment("candidates/part-00000.parquet", 0, n)],
                               _config(timeout=20.0))

    keys = [f"00000000{i:04d}" for i in range(n - 1)]
    assert seen["in_temporary_tar"] == [f"{k}.{ext}" for k in keys for ext in ("jpg", "txt", "json")]
    assert seen["temporaries"] == ["00000000.tar"]
    assert seen["listed"] == []  # nothing under a final name, temporaries not listed
    assert stats["counts"] == {"success": n}
    assert [s["key"] for s in iter_shard_samples(pool, "00000000")] == [*keys, f"00000000{n - 1:04d}"]
    assert sorted(pool.listdir("shards")) == ["00000000.parquet", "00000000.tar", "00000000_stats.json"]
    assert not any(TMP_MARK in p.name for p in (tmp_path / "pool" / "shards").iterdir())


def test_parquet_output_is_written_in_row_groups_as_samples_finish(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """With the images in the parquet, row groups of bounded size are flushed while the shard runs."""
    import pyarrow.parquet as pq

    import curate.shards

    monkeypatch.setattr(curate.shards, "ROW_GROUP_BYTES", 1, raising=False)  # each image closes its row group
    monkeypatch.setattr(curate.shards, "_BATCH_ROWS", 1, raising=False)
    routes = {f"/{i}.jpg": Route(_encode("JPEG", (40 + i, 30)), content_type="image/jpeg") for i in range(5)}
    with serve_routes(routes) as server:
        pool = Pool(str(tmp_path / "pool"))
        _write_candidates(pool, [server.url(p) for p in routes] + [server.url("/gone.jpg")])
        download_shard(pool, "00000000", [Segment("candidates/part-00000.parquet", 0, 6)],
                       _config(output_format="parquet"))
    with pool.open("shards/00000000.parquet") as fh:
        meta = pq.ParquetFile(fh).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1, 1, 1, 1, 1, 1]
    assert read_shard_table(pool, "00000000").column("status").to_pylist() == ["success"] * 5 + ["failed_to_download"]
    assert len(list(iter_shard_samples(pool, "00000000"))) == 5


def test_normalised_messages_name_no_host_address_url_or_port() -> None:
    cases = {
        "redirect to 169.254.169.254 is link-local": "redirect to <ip> is link-local",
        "::ffff:127.0.0.1 embeds 127.0.0.1": "<ip> embeds <ip>",
        "fe80::1%eth0 has a zone id": "<ip> has a zone id",
        "[2001:db8::1]:8443 refused": "<ip> refused",
        "HTTPConnectionPool(host='images.example.com', port=80): Max retries":
            "HTTPConnectionPool(host=<value>, <port>): Max retries",
        "connect to cdn.example.org:8080 failed": "connect to <host> failed",
        "see https://x.example/a?b=c now": "see <url> now",
        "malformed host 'evil..com'": "malformed host <value>",
        "http 404": "http 404",
        "image larger than 200000 bytes": "image larger than 200000 bytes",
        "shard_timeout of 3600.0s reached": "shard_timeout of 3600.0s reached",
        "not an image: content-type text/html": "not an image: content-type text/html",
    }
    for message, key in cases.items():
        assert normalise_message(message) == key
    assert len(normalise_message("x" * 1000)) == 200


def test_capped_counts_keep_the_most_frequent_and_the_total() -> None:
    counts = {f"m{i:03d}": i for i in range(1, 251)}  # 250 distinct messages
    out = capped(counts, 100)
    assert len(out) == 100 and sum(out.values()) == sum(counts.values())
    assert set(out) - {OTHER} == {f"m{i:03d}" for i in range(152, 251)}  # the 99 most frequent
    assert capped({"a": 1, "b": 1, "c": 1}, 2) == {"a": 1, OTHER: 2}  # ties by key: arrival order is irrelevant
    assert capped({"b": 1, "c": 1, "a": 1}, 2) == {"a": 1, OTHER: 2}

    merged = merge_capped({**{f"a{i}": 5 for i in range(99)}, OTHER: 7}, {**{f"b{i}": 1 for i in range(99)}, OTHER: 3},
                          100)
    assert len(merged) == 100 and merged[OTHER] == 7 + 3 + 99 and sum(merged.values()) == 99 * 5 + 7 + 99 + 3
    assert merge_capped({"x": 1}, {"x": 2, "y": 1}, 100) == {"x": 3, "y": 1}

    # Counts written before the rules (an earlier shard's stats, an older version's markers) are re-keyed.
    assert normalised({"blocked_address: 10.0.0.1 is private": 2, "blocked_address: 10.0.0.2 is private": 3,
                       OTHER: 1}) == {"blocked_address: <ip> is private": 5, OTHER: 1}

    counter = CappedCounter(10)
    for i in range(1000):
        counter.add(f"rare {i}")
        counter.add("common")
        assert len(counter.counts) <= 20
    result = counter.result()
    assert len(result) == 10 and result["common"] == 1000 and sum(result.values()) == 2000


@pytest.mark.fault("download", "servers answering with hundreds of distinct error messages (content types), and URLs and redirects to blocked addresses", "the shard's and the report's error counts hold at most 100 messages (the rest summed under `other`, totals exact) and name no host, address or URL")  # noqa: E501 - one row of docs/reliability.md
def test_error_counts_are_capped_and_name_no_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    kinds = 250

    def route(path: str) -> Route | None:
        if path.startswith("/type/"):
            return Route(b"<x/>", content_type=f"text/x-kind{path.rsplit('/', 1)[-1]}")
        if path.startswith("/to/"):
            return redirect(f"http://[fd00::{int(path.rsplit('/', 1)[-1]) + 1:x}]/a.jpg")
        return Route(JPEG, content_type="image/jpeg") if path == "/ok.jpg" else None

    with serve_routes(route) as server:
        pool = Pool(str(tmp_path / "pool"))
        urls = ([server.url(f"/type/{i}") for i in range(kinds)] + [server.url(f"/to/{i}") for i in range(20)]
                + [f"http://10.77.{i}.9/a.jpg" for i in range(20)]
                + [f"http://secret-host{i}.example@10.88.0.{i}:8{i:03d}/" for i in range(5)]
                + [server.url("/ok.jpg")])
        _write_candidates(pool, urls)
        # Two shards, each with more than 100 distinct messages: 148 content types, then 102 and the blocked ones.
        report = download.run(pool, _config(samples_per_shard=-(-len(urls) // 2)), quiet=True)

    failures = {"00000000": 148, "00000001": len(urls) - 148 - 1, "report": len(urls) - 1}
    for shard, where in (("00000000", "shards/00000000_stats.json"), ("00000001", "shards/00000001_stats.json"),
                         ("00000001", layout.download_marker("00000001")), ("report", "reports/download.json")):
        text = pool.read_bytes(where).decode()
        for secret in ("10.77.", "10.88.", "fd00", "secret-host", "127.0.0.1", str(server.port), "http://"):
            assert secret not in text, f"{secret!r} in {where}"
        errors = json.loads(text)["totals"]["errors"] if shard == "report" else json.loads(text)["errors"]
        assert len(errors) == 100, where  # ERROR_MESSAGES_PER_SHARD, and the same cap for the stage
        assert sum(errors.values()) == failures[shard] and errors[OTHER] > 0
        if shard != "00000000":
            assert errors["blocked_address: <ip> is private"] == 25
            assert errors["blocked_address: redirect to <ip> is private"] == 20
    assert report["totals"]["counts"]["success"] == 1
    # Each row keeps its own full message next to its url, in the shard's parquet.
    messages = read_shard_table(pool, "00000001").column("error_message").to_pylist()
    assert "10.77.3.9 is private" in messages and "not an image: content-type text/x-kind170" in messages
