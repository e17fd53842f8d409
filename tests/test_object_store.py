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
