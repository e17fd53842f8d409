"""Download shards against a local HTTP server: exact counts per status, limits, timeouts, resume."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image

from curate import layout
from curate.config import DownloadConfig
from curate.errors import StageFailed
from curate.pool import Pool
from curate.shards import SHARD_SCHEMA, iter_shard_samples, list_shards, read_shard_table
from curate.stages import download
from curate.stages.download.planning import plan_shards
from curate.stages.download.shard import Segment, download_shard
from curate.testing.http import Route, redirect, serve_routes
from curate.testing.synthetic import draw_shape
from curate.uid import make_uid


def _encode(fmt: str, size: tuple[int, int] = (80, 60), mode: str = "RGB") -> bytes:
    img = draw_shape("red", "circle", size=max(size)).resize(size).convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


JPEG = _encode("JPEG")
PNG = _encode("PNG", (700, 350), mode="P")  # palette PNG: small on the wire
WEBP = _encode("WEBP")
GIF = _encode("GIF", mode="P")
BIG_JPEG = _encode("JPEG", (400, 300))


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (2000, 2000)).save(buf, "PNG")  # a few KB on the wire, 4 Mpx once decoded
    return buf.getvalue()


BOMB = _bomb()


def _status_routes(stall: threading.Event) -> dict[str, Route]:
    big = b"\xff\xd8" + bytes(300_000)
    return {
        "/a.jpg": Route(JPEG, content_type="image/jpeg"),
        "/b.png": Route(PNG, content_type="image/png"),
        "/c.webp": Route(WEBP, content_type="image/webp"),
        "/d.gif": Route(GIF, content_type="image/gif"),
        "/e.jpg": Route(JPEG, content_type=None),  # no content type: try to decode
        "/500": Route(b"boom", status=500, content_type="text/plain"),
        "/slow.jpg": Route(JPEG, content_type="image/jpeg", hold=stall),  # no answer until the test is done
        "/drip.jpg": Route(JPEG, content_type="image/jpeg", drip_until=stall),  # a byte per 0.1 s < timeout
        "/big.jpg": Route(big, content_type="image/jpeg"),
        "/big-nolength.jpg": Route(big, content_type="image/jpeg", send_length=False),
        "/truncated.jpg": Route(BIG_JPEG[: len(BIG_JPEG) * 2 // 3], content_type="image/jpeg"),
        "/page.html": Route(b"<html>hi</html>", content_type="text/html; charset=utf-8"),
        "/bomb.png": Route(BOMB, content_type="image/png"),
        "/noai.jpg": Route(JPEG, content_type="image/jpeg", headers={"X-Robots-Tag": "noai"}),
        "/scoped.jpg": Route(JPEG, content_type="image/jpeg", headers={"X-Robots-Tag": "curate: noimageai"}),
        "/otherbot.jpg": Route(JPEG, content_type="image/jpeg", headers={"X-Robots-Tag": "otherbot: noai"}),
        "/to-meta": redirect("http://169.254.169.254/latest/meta-data/"),
        "/to-private-v6": redirect("http://[::1]/a.jpg", status=301),
        "/loop": redirect("/loop"),
    }


EXPECTED = {
    "/a.jpg": "success", "/b.png": "success", "/c.webp": "success", "/d.gif": "success", "/e.jpg": "success",
    "/redirect-ok": "success", "/otherbot.jpg": "success",
    "/missing.jpg": "failed_to_download", "/500": "failed_to_download", "/slow.jpg": "failed_to_download",
    "/drip.jpg": "failed_to_download", "/big.jpg": "failed_to_download", "/big-nolength.jpg": "failed_to_download",
    "/page.html": "failed_to_download", "/loop": "failed_to_download",
    "/truncated.jpg": "failed_to_resize", "/bomb.png": "failed_to_resize",
    "/to-meta": "blocked_address", "/to-private-v6": "blocked_address",
    "/noai.jpg": "opted_out", "/scoped.jpg": "opted_out",
}


def _config(**overrides) -> DownloadConfig:
    base = {"allow_addresses": ["127.0.0.1"], "retries": 0, "timeout": 1.0, "max_image_bytes": 200_000,
            "max_image_pixels": 1_000_000, "image_size": 256, "thread_count": 16, "per_host_concurrency": 32,
            "per_host_rate": 1000.0}
    return DownloadConfig(**{**base, **overrides})


def _write_candidates(pool: Pool, urls: list[str], files: int = 1) -> list[str]:
    uids = []
    per_file = -(-len(urls) // files)
    for f in range(files):
        chunk = urls[f * per_file : (f + 1) * per_file]
        texts = [f"caption {u.rsplit('/', 1)[-1]}" for u in chunk]
        ids = [make_uid(u, t) for u, t in zip(chunk, texts, strict=True)]
        uids += ids
        pool.write_parquet(f"candidates/part-{f:05d}.parquet", pa.table({
            "uid": ids, "url": chunk, "text": texts, "page_url": ["http://page.example/"] * len(chunk),
            "source": ["test"] * len(chunk), "crawl": [""] * len(chunk), "page_lang": [None] * len(chunk),
            "alt_kind": ["alt"] * len(chunk)}))
    return uids


@contextmanager
def _stalled_until_done(bound: float = 120.0) -> Iterator[threading.Event]:
    """An event that holds the stalling routes until the block ends: slower than any timeout.

    If the code under test waited for them instead of timing out, a failsafe releases them after
    `bound` seconds (so the test fails rather than hangs) and the block asserts it was not needed.
    """
    stall, failsafe_fired = threading.Event(), threading.Event()

    def failsafe() -> None:
        failsafe_fired.set()
        stall.set()

    timer = threading.Timer(bound, failsafe)
    timer.start()
    try:
        yield stall
    finally:
        timer.cancel()
        stall.set()
    assert not failsafe_fired.is_set(), "the download waited for stalled responses instead of timing out"


@pytest.mark.fault("download", "404, 500, slower than the timeout, body over the byte cap, truncated image, non-image content type, redirects (allowed and to a blocked address), X-Robots-Tag noai, decompression bomb, redirect loop", "each sample gets its status (exact counts asserted); the shard completes")  # noqa: E501 - one row of docs/reliability.md
def test_statuses_exact_counts(tmp_path: Path) -> None:
    with _stalled_until_done() as stall, serve_routes(routes := _status_routes(stall)) as server:
        routes["/redirect-ok"] = redirect(server.url("/a.jpg"))
        paths = list(EXPECTED)
        pool = Pool(str(tmp_path / "pool"))
        urls = [server.url(p) for p in paths] + ["ftp://127.0.0.1/a.jpg", ""]
        uids = _write_candidates(pool, urls)
        # /slow.jpg and /drip.jpg cannot finish before this returns: only the timeout ends them.
        stats = download_shard(pool, "00000000", [Segment("candidates/part-00000.parquet", 0, len(urls))],
                               _config(timeout=5.0))
        user_agents = set(server.user_agents)

    table = read_shard_table(pool, "00000000")
    assert table.schema.equals(SHARD_SCHEMA)
    by_path = dict(zip([u.split(str(server.port), 1)[-1] for u in urls], table.column("status").to_pylist(),
                       strict=True))
    assert by_path.pop("ftp://127.0.0.1/a.jpg") == "blocked_address"
    assert by_path.pop("") == "failed_to_download"
    assert by_path == EXPECTED
    expected_counts: dict[str, int] = {}
    for status in [*EXPECTED.values(), "blocked_address", "failed_to_download"]:
        expected_counts[status] = expected_counts.get(status, 0) + 1
    assert stats["counts"] == expected_counts
    assert stats["samples"] == len(urls) and stats["successes"] == 7
    assert table.column("uid").to_pylist() == uids
    errors = dict(zip(table.column("url").to_pylist(), table.column("error_message").to_pylist(), strict=True))
    assert errors[server.url("/slow.jpg")] == errors[server.url("/drip.jpg")] == "timeout"
    assert "larger than 200000 bytes" in errors[server.url("/big-nolength.jpg")]
    assert "content-type text/html" in errors[server.url("/page.html")]
    assert "169.254.169.254" in errors[server.url("/to-meta")]
    assert errors[server.url("/missing.jpg")] == "http 404"
    assert errors[server.url("/noai.jpg")] == "x-robots-tag noai"
    assert all("curate/" in ua for ua in user_agents)

    # Stored images: resized (keep_ratio_largest, only if bigger), re-encoded, sha256 of the stored bytes.
    samples = {s["uid"]: s for s in iter_shard_samples(pool, "00000000")}
    assert len(samples) == 7
    rows = {r["uid"]: r for r in table.to_pylist()}
    for uid, sample in samples.items():
        assert hashlib.sha256(sample["image"]).hexdigest() == rows[uid]["sha256"]
        img = Image.open(io.BytesIO(sample["image"]))
        assert img.format == "JPEG" and img.size == (rows[uid]["width"], rows[uid]["height"])
        assert sample["meta"]["page_url"] == "http://page.example/"
    png_row = rows[uids[paths.index("/b.png")]]
    assert (png_row["original_width"], png_row["original_height"], png_row["width"], png_row["height"]) == (
        700, 350, 256, 128)
    jpg_row = rows[uids[paths.index("/a.jpg")]]
    assert (jpg_row["width"], jpg_row["height"]) == (80, 60)  # smaller than image_size: not upscaled
    written = json.loads(pool.read_bytes("shards/00000000_stats.json"))
    assert written["status_dict"] == expected_counts and written["successes"] == 7


@pytest.mark.fault("download", "transient failures (reset, 5xx, 429)", "retried up to `retries` times")
def test_retries_transient_failures(tmp_path: Path) -> None:
    attempts = {"n": 0}

    def flaky(path: str) -> Route | None:
        attempts["n"] += 1
        if attempts["n"] <= 2:
            return Route(b"busy", status=503, content_type="text/plain")
        return Route(JPEG, content_type="image/jpeg")

    with serve_routes(flaky) as server:
        pool = Pool(str(tmp_path / "pool"))
        _write_candidates(pool, [server.url("/x.jpg")])
        seg = [Segment("candidates/part-00000.parquet", 0, 1)]
        assert download_shard(pool, "00000000", seg, _config(retries=1))["counts"] == {"failed_to_download": 1}
        attempts["n"] = 0
        assert download_shard(pool, "00000000", seg, _config(retries=2))["counts"] == {"success": 1}
        assert attempts["n"] == 3


def test_per_host_concurrency_and_rate(tmp_path: Path) -> None:
    routes = {f"/{i}.jpg": Route(JPEG, content_type="image/jpeg", delay=0.15) for i in range(12)}
    with serve_routes(routes) as server:
        pool = Pool(str(tmp_path / "pool"))
        _write_candidates(pool, [server.url(p) for p in routes])
        seg = [Segment("candidates/part-00000.parquet", 0, 12)]
        stats = download_shard(pool, "00000000", seg, _config(per_host_concurrency=2, thread_count=8, timeout=5))
        assert stats["counts"] == {"success": 12}
        assert server.max_in_flight == 2

    routes = {f"/{i}.jpg": Route(JPEG, content_type="image/jpeg") for i in range(11)}
    with serve_routes(routes) as server:
        pool = Pool(str(tmp_path / "pool2"))
        _write_candidates(pool, [server.url(p) for p in routes])
        started = time.monotonic()
        stats = download_shard(pool, "00000000", [Segment("candidates/part-00000.parquet", 0, 11)],
                               _config(per_host_rate=20.0, thread_count=8, timeout=5))
        assert stats["counts"] == {"success": 11}
        assert time.monotonic() - started >= 0.45  # 11 requests at 20/s: 10 intervals of 50 ms


def _drip(head: bytes, then: bytes) -> Iterator[bytes]:
    """`head` a byte at a time, then `then` for ever: each piece well inside the request timeout."""
    return itertools.chain((head[i : i + 1] for i in range(len(head))), itertools.repeat(then))


_IMAGE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"
_CHUNKED_HEAD = _IMAGE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
# Servers that never finish a response but never pause long: a socket timeout (per recv) never fires.
DRIP_ROUTES = {
    "/status-line": Route(raw=lambda: _drip(b"HTTP/1.1 200 ", b"O"), raw_interval=0.05),
    "/header": Route(raw=lambda: _drip(_IMAGE_HEAD + b"X-Slow: ", b"a"), raw_interval=0.05),
    "/continue": Route(raw=lambda: itertools.repeat(b"HTTP/1.1 100 Continue\r\n\r\n"), raw_interval=0.05),
    "/chunk-size": Route(raw=lambda: _drip(_CHUNKED_HEAD + b"1", b"0"), raw_interval=0.05),
    "/chunked-body": Route(raw=lambda: _drip(_CHUNKED_HEAD, b"1\r\nx\r\n"), raw_interval=0.05),
}


@pytest.mark.fault("download", "a status line, headers or a chunk-size line dripped for ever, or endless `100 Continue`", "each request ends at its `timeout` (status failed_to_download, error timeout), not at shard_timeout")  # noqa: E501 - one row of docs/reliability.md
def test_request_deadline_covers_status_headers_and_chunks(tmp_path: Path) -> None:
    with serve_routes(DRIP_ROUTES) as server:
        pool = Pool(str(tmp_path / "pool"))
        _write_candidates(pool, [server.url(p) for p in DRIP_ROUTES])
        started = time.monotonic()
        # Before one deadline covered every read, these ran until shard_timeout.
        stats = download_shard(pool, "00000000", [Segment("candidates/part-00000.parquet", 0, len(DRIP_ROUTES))],
                               _config(timeout=0.5, shard_timeout=30.0))
        elapsed = time.monotonic() - started
    assert elapsed < 10.0, f"requests ran {elapsed:.1f}s with a 0.5s timeout"
    assert stats["counts"] == {"failed_to_download": len(DRIP_ROUTES)}
    assert stats["errors"] == {"failed_to_download: timeout": len(DRIP_ROUTES)}


@pytest.mark.fault("download", "a shard that would outlast its deadline", "the shard ends at the deadline; unfinished samples get status timeout")  # noqa: E501 - one row of docs/reliability.md
def test_shard_timeout_marks_remaining_samples(tmp_path: Path) -> None:
    with _stalled_until_done() as stall, serve_routes({
            "/fast.jpg": Route(JPEG, content_type="image/jpeg"),
            "/stuck.jpg": Route(JPEG, content_type="image/jpeg", hold=stall)}) as server:
        pool = Pool(str(tmp_path / "pool"))
        _write_candidates(pool, [server.url("/fast.jpg"), server.url("/stuck.jpg")])
        # /stuck.jpg answers only after this returns, well within its 60 s request timeout: only
        # the shard's deadline can end it.
        stats = download_shard(pool, "00000000", [Segment("candidates/part-00000.parquet", 0, 2)],
                               _config(timeout=60.0, shard_timeout=3.0))
    assert stats["counts"] == {"success": 1, "timeout": 1}


def test_longest_allowed_timeouts_work(tmp_path: Path) -> None:
    """The largest timeout / shard_timeout the config accepts still fit every socket and thread wait."""
    with serve_routes({"/a.jpg": Route(JPEG, content_type="image/jpeg")}) as server:
        pool = Pool(str(tmp_path / "pool"))
        _write_candidates(pool, [server.url("/a.jpg"), server.url("/gone.jpg")])
        config = _config(timeout=86_400, shard_timeout=2_592_000)
        stats = download_shard(pool, "00000000", [Segment("candidates/part-00000.parquet", 0, 2)], config)
    assert stats["counts"] == {"success": 1, "failed_to_download": 1}


def test_parquet_output_format(tmp_path: Path) -> None:
    with serve_routes({"/a.jpg": Route(JPEG, content_type="image/jpeg")}) as server:
        pool = Pool(str(tmp_path / "pool"))
        _write_candidates(pool, [server.url("/a.jpg"), server.url("/gone.jpg")])
        download_shard(pool, "00000000", [Segment("candidates/part-00000.parquet", 0, 2)],
                       _config(output_format="parquet", encode_format="png"))
    assert not pool.exists("shards/00000000.tar")
    (sample,) = list(iter_shard_samples(pool, "00000000"))
    assert Image.open(io.BytesIO(sample["image"])).format == "PNG"
    assert read_shard_table(pool, "00000000").column("status").to_pylist() == ["success", "failed_to_download"]


def test_plan_spans_files_in_order() -> None:
    plan = plan_shards([("candidates/a.parquet", 5), ("candidates/b.parquet", 4)], 3)
    assert list(plan) == ["00000000", "00000001", "00000002"]
    assert plan["00000001"] == [Segment("candidates/a.parquet", 3, 5), Segment("candidates/b.parquet", 0, 1)]
    assert plan["00000002"] == [Segment("candidates/b.parquet", 1, 4)]


@pytest.mark.fault("download", "a shard dies half way through writing its tar and parquet", "nothing under the final names, no marker: the rerun refetches only that shard; outputs equal a clean run")  # noqa: E501 - one row of docs/reliability.md
def test_crash_then_resume_completes_only_missing_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shard killed while writing leaves no marker; the rerun redoes only it and equals a clean run."""
    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    routes = {f"/{i}.jpg": Route(_encode("JPEG", (40 + i, 30)), content_type="image/jpeg") for i in range(9)}
    with serve_routes(routes) as server:
        pool = Pool(str(tmp_path / "pool"))
        urls = [server.url(p) for p in routes]
        _write_candidates(pool, urls, files=2)
        config = _config(samples_per_shard=4)

        import curate.shards

        real_add, real_discard = curate.shards.ShardWriter.add, curate.shards.ShardWriter.discard

        def killed_mid_shard(self, row):
            if self.shard_id == "00000001" and len(self.uids) == 2:
                # Two samples are in the temporaries when the worker dies; a killed process runs no
                # clean-up, so they stay behind.
                self.discard = lambda: None
                raise RuntimeError("worker killed")
            real_add(self, row)

        monkeypatch.setattr(curate.shards.ShardWriter, "add", killed_mid_shard)
        with pytest.raises(StageFailed, match="00000001"):
            download.run(pool, config, quiet=True)
        assert list_shards(pool) == ["00000000", "00000002"]
        assert not pool.exists("shards/00000001.tar") and not pool.exists("shards/00000001.parquet")
        leftovers = [p.rsplit("/", 1)[-1] for p in pool.fs.find(pool.path("shards"))]
        assert any(name.startswith("00000001.tar.tmp-") for name in leftovers), leftovers  # written as it came
        assert [n for n in pool.listdir("shards") if n.startswith("00000001")] == []  # but not listed

        monkeypatch.setattr(curate.shards.ShardWriter, "add", real_add)
        monkeypatch.setattr(curate.shards.ShardWriter, "discard", real_discard)
        hits_before = dict(server.hits)
        report = download.run(pool, config, quiet=True)
        refetched = {p for p, n in server.hits.items() if n > hits_before.get(p, 0)}
        assert refetched == {"/4.jpg", "/5.jpg", "/6.jpg", "/7.jpg"}
        assert report["shards_run_now"] == 1 and report["shards_skipped_as_done"] == 2
        assert report["totals"]["counts"] == {"success": 9} and report["success_rate"] == 1.0
        resumed = {sid: read_shard_table(pool, sid) for sid in list_shards(pool)}

        clean = Pool(str(tmp_path / "clean"))
        _write_candidates(clean, urls, files=2)
        download.run(clean, config, quiet=True)
        for sid, table in resumed.items():
            assert table.equals(read_shard_table(clean, sid))
            assert pool.read_bytes(f"shards/{sid}.tar") == clean.read_bytes(f"shards/{sid}.tar")
        assert download.run(pool, config, quiet=True)["shards_run_now"] == 0


@pytest.mark.fault("download", "markers deleted (or --rerun) and the stage re-run while the image server is down", "each finished shard that would get fewer successes is kept as it was and the run says so; --overwrite-worse replaces it; a sample opted out since is never kept")  # noqa: E501 - one row of docs/reliability.md
def test_rerun_never_silently_replaces_a_better_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    images = {f"/{i}.jpg": _encode("JPEG", (40 + i, 30)) for i in range(6)}
    mode = {"down": False, "noai": ""}

    def route(path: str) -> Route | None:
        if mode["down"]:
            return Route(b"down", status=503, content_type="text/plain")
        headers = {"X-Robots-Tag": "noai"} if path == mode["noai"] else {}
        return Route(images[path], content_type="image/jpeg", headers=headers) if path in images else None

    with serve_routes(route) as server:
        pool = Pool(str(tmp_path / "pool"))
        _write_candidates(pool, [server.url(p) for p in images])
        config = _config(samples_per_shard=3)
        assert download.run(pool, config, quiet=True)["success_rate"] == 1.0
        good = {sid: (pool.read_bytes(f"shards/{sid}.tar"), pool.read_bytes(f"shards/{sid}.parquet"))
                for sid in list_shards(pool)}

        mode["down"] = True
        pool.remove(layout.DOWNLOAD_MARKERS, recursive=True)  # what a user deleting markers does
        report = download.run(pool, config)
        assert report["success_rate"] == 1.0 and report["totals"]["counts"] == {"success": 6}
        assert report["shards_run_now"] == 2 and report["kept_earlier_shards"] == ["00000000", "00000001"]
        assert "kept 2 earlier shard(s) (00000000, 00000001): this run got 0 successful images where they " \
               "hold 6; pass --overwrite-worse" in " ".join(capsys.readouterr().err.split())
        for sid, files in good.items():
            assert (pool.read_bytes(f"shards/{sid}.tar"), pool.read_bytes(f"shards/{sid}.parquet")) == files
            assert pool.read_json(layout.download_marker(sid))["counts"] == {"success": 3}
        report = download.run(pool, config, rerun=True, quiet=True)
        assert report["kept_earlier_shards"] == ["00000000", "00000001"] and report["success_rate"] == 1.0
        assert [s["image"] for sid in list_shards(pool) for s in iter_shard_samples(pool, sid)] == [
            s["image"] for sid in good for s in iter_shard_samples(pool, sid)]

        # The owner of /1.jpg opted out since: that shard is replaced even though it loses images.
        mode.update(down=False, noai="/1.jpg")
        server_503 = {"/0.jpg", "/2.jpg"}
        real_route = route

        def partly_down(path: str) -> Route | None:
            if path in server_503:
                return Route(b"down", status=503, content_type="text/plain")
            return real_route(path)

        server.routes = partly_down
        report = download.run(pool, config, rerun=True, quiet=True)
        assert report["kept_earlier_shards"] == []
        assert read_shard_table(pool, "00000000").column("status").to_pylist() == [
            "failed_to_download", "opted_out", "failed_to_download"]

        server.routes = route
        mode.update(down=True, noai="")
        report = download.run(pool, config.model_copy(update={"overwrite_worse": True}), rerun=True, quiet=True)
        assert report["kept_earlier_shards"] == [] and report["success_rate"] == 0.0
        assert list(iter_shard_samples(pool, "00000001")) == []


def test_shard_tar_is_what_tarfile_writes(tmp_path: Path) -> None:
    """ShardWriter builds tar headers itself (speed) as samples come; the bytes must equal tarfile's,
    long/unicode names too."""
    import tarfile

    from curate.shards import SampleRow, ShardWriter

    rows = [SampleRow(key=("k" * 120 if i == 3 else f"0000{i:04d}"), uid=f"{i:032x}", url=f"http://x/é{i}",
                      caption="ça va " * (i + 1), status="success" if i % 3 else "failed_to_download",
                      image=bytes([i]) * (700 + 911 * i), extra={"page_url": "p"}) for i in range(8)]
    pool = Pool(str(tmp_path))
    writer = ShardWriter(pool, "00000000")
    for row in rows:
        writer.add(row)
    writer.close({})
    reference = io.BytesIO()
    with tarfile.open(fileobj=reference, mode="w") as tar:
        for r in rows:
            if r.status != "success":
                continue
            meta = {"key": r.key, "uid": r.uid, "url": r.url, "caption": r.caption, "status": r.status,
                    "width": None, "height": None, "original_width": None, "original_height": None,
                    "sha256": None, "page_url": "p"}
            for ext, data in ((r.extension, r.image), ("txt", r.caption.encode()),
                              ("json", json.dumps(meta, ensure_ascii=False).encode())):
                info = tarfile.TarInfo(f"{r.key}.{ext}")
                info.size, info.mtime = len(data), 0
                tar.addfile(info, io.BytesIO(data))
    assert pool.read_bytes("shards/00000000.tar") == reference.getvalue()
