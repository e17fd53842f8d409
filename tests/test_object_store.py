"""s3:// pools and inputs, against moto's S3 server on 127.0.0.1 (no network, real s3fs/botocore calls)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pyarrow as pa
import pytest

from curate import layout
from curate.config import IngestConfig
from curate.errors import StageFailed
from curate.pool import Pool
from curate.stages import ingest
from curate.stages.ingest.fetch import open_input
from curate.testing.watgen import synthetic_pages, write_wat


@pytest.fixture(scope="module")
def s3_bucket() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        # s3fs reads the endpoint from fsspec's config; a deployment sets it the same way (or in the env).
        mp.setitem(fsspec.config.conf, "s3", {"endpoint_url": endpoint})
        bucket = f"curate-{uuid.uuid4().hex[:8]}"
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir(bucket)
        yield bucket
    server.stop()


def test_pool_on_s3_writes_reads_and_marks(s3_bucket: str) -> None:
    pool = Pool(f"s3://{s3_bucket}/pool")
    assert not pool.is_local
    table = pa.table({"uid": ["a", "b"], "x": [1, 2]})
    pool.write_parquet("candidates/part-00000.parquet", table)
    pool.write_json("notes/n.json", {"k": 1})
    pool.write_json(layout.marker("ingest", "extract", "00000"), {"samples": 2})
    pool.write_json(layout.report("ingest"), {"stage": "ingest"})

    again = Pool(f"s3://{s3_bucket}/pool")  # a fresh handle, as a Ray worker would make
    assert again.read_parquet("candidates/part-00000.parquet").equals(table)
    assert again.read_json("notes/n.json") == {"k": 1}
    assert again.read_marker_dir(layout.markers_dir("ingest", "extract"))[0] == {"00000": {"samples": 2}}
    assert again.read_report("ingest") == {"stage": "ingest"}
    assert again.uri("candidates") == f"s3://{s3_bucket}/pool/candidates"
    assert again.listdir("candidates") == ["part-00000.parquet"]


def test_ingest_reads_s3_inputs_into_an_s3_pool(s3_bucket: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # In-process: the point here is the s3 I/O (Ray workers inherit the same environment on a cluster).
    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    local = tmp_path / "a.warc.wat.gz"
    write_wat(local, synthetic_pages(20, 4))
    fs = fsspec.filesystem("s3")
    for name in ("a", "b"):
        fs.put_file(str(local), f"{s3_bucket}/crawl/{name}.warc.wat.gz")
    with open_input(f"s3://{s3_bucket}/crawl/a.warc.wat.gz") as fh:
        assert fh.read() == local.read_bytes()

    pool = Pool(f"s3://{s3_bucket}/ingested")
    report = ingest.run(pool, IngestConfig(inputs=[f"s3://{s3_bucket}/crawl/*.wat.gz"]), quiet=True)
    assert report["shards_done"] == 2 and not report["shards_failed"]
    parts = pool.read_parquet_dir("candidates")
    assert parts.num_rows == report["totals"]["candidates"] > 0
    assert set(parts["source"].to_pylist()) == {f"s3://{s3_bucket}/crawl/{n}.warc.wat.gz" for n in "ab"}

    # A missing s3 object is a failed shard named in the report, not a crash.
    with pytest.raises(StageFailed) as failed:
        ingest.run(pool, IngestConfig(inputs=[f"s3://{s3_bucket}/crawl/*.wat.gz",
                                              f"s3://{s3_bucket}/crawl/missing.warc.wat.gz"]), quiet=True)
    assert list(failed.value.failed) == ["00002"]


@pytest.mark.fault("pool", "two runs of one stage on an s3:// pool; a stale lock there",
                   "the second is refused (conditional PUT); the stale one is taken over; released on exit")
def test_stage_lock_on_s3(s3_bucket: str) -> None:
    import os
    import time

    from curate.errors import PoolError
    from curate.poollock import StageLock

    pool = Pool(f"s3://{s3_bucket}/locked")
    rel = "_locks/download.json"
    first = StageLock(pool, "download", quiet=True)
    second = StageLock(Pool(pool.url), "download", quiet=True)
    with first:
        assert pool.read_json(rel)["token"] == first.info.token
        assert not second._create_exclusive()  # If-None-Match: * refuses the second writer
        with pytest.raises(PoolError, match=f"locked by pid {os.getpid()}"):
            second.acquire()
        assert pool.read_json(rel)["token"] == first.info.token
    assert not pool.exists(rel)

    pool.write_json(rel, {"token": "crashed", "host": "elsewhere", "pid": 1, "command": "curate download",
                          "since": time.time() - 7200, "heartbeat": time.time() - 3600})
    with second:
        assert pool.read_json(rel)["token"] == second.info.token
    assert not pool.exists(rel)


@pytest.mark.fault("download", "a download shard re-run over a finished one on an s3:// pool (hosts partly or wholly down)", "samples stream to a temporary object; the earlier tar stays whole under its name until the new one is complete; a worse result is discarded (kept-earlier), never half-copied")  # noqa: E501 - one row of docs/reliability.md
def test_download_shard_on_s3_streams_to_a_temporary(s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from PIL import Image

    from curate.config import DownloadConfig
    from curate.pool import TMP_MARK
    from curate.shards import ShardWriter, iter_shard_samples
    from curate.stages.download.shard import Segment, download_shard
    from curate.testing.http import Route, serve_routes

    def jpeg(width: int) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (width, 30), (200, 40, 40)).save(buf, "JPEG")
        return buf.getvalue()

    images = {f"/{i}.jpg": jpeg(40 + i) for i in range(4)}
    down: set[str] = set()

    def route(path: str) -> Route | None:
        if path in down:
            return Route(b"down", status=503, content_type="text/plain")
        return Route(images[path], content_type="image/jpeg") if path in images else None

    pool = Pool(f"s3://{s3_bucket}/dl")
    mid_write: list[bytes | None] = []
    real_add = ShardWriter.add

    def add(self: ShardWriter, row) -> None:  # type: ignore[no-untyped-def]
        real_add(self, row)
        # Half the shard written: what is under the final name now?
        if len(getattr(self, "uids", getattr(self, "rows", []))) == 2:
            pool.fs.invalidate_cache()
            mid_write.append(pool.read_bytes("shards/00000000.tar") if pool.exists("shards/00000000.tar") else None)

    monkeypatch.setattr(ShardWriter, "add", add)

    def leftovers() -> list[str]:
        pool.fs.invalidate_cache()
        return [p for p in pool.fs.find(pool.path("shards")) if TMP_MARK in p]

    with serve_routes(route) as server:
        pool.write_parquet("candidates/part-00000.parquet", pa.table({
            "uid": [f"{i:032x}" for i in range(4)], "url": [server.url(p) for p in images], "text": ["x"] * 4}))
        seg = [Segment("candidates/part-00000.parquet", 0, 4)]
        config = DownloadConfig(allow_addresses=["127.0.0.1"], retries=0, timeout=5.0)
        assert download_shard(pool, "00000000", seg, config)["successes"] == 4
        full = pool.read_bytes("shards/00000000.tar")
        assert mid_write == [None] and leftovers() == []

        down.update({"/0.jpg", "/1.jpg"})
        stats = download_shard(pool, "00000000", seg, config.model_copy(update={"overwrite_worse": True}))
        assert stats["successes"] == 2 and "kept_earlier" not in stats
        assert mid_write[-1] == full  # the earlier tar stayed whole while the new one was written
        half = pool.read_bytes("shards/00000000.tar")
        assert len(list(iter_shard_samples(pool, "00000000"))) == 2 and leftovers() == []

        down.update(images)
        stats = download_shard(pool, "00000000", seg, config)
        assert stats["kept_earlier"] == {"shards": 1, "successes_kept": 2, "successes_this_run": 0}
        assert pool.read_bytes("shards/00000000.tar") == half and leftovers() == []
