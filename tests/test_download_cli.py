"""`curate download` end to end on Ray: CLI flags, shards on disk, report, blocked by default."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image
from typer.testing import CliRunner

from curate import layout
from curate.cli import app
from curate.errors import ConfigError
from curate.pool import Pool
from curate.shards import iter_shard_samples, list_shards, read_shard_table
from curate.testing.http import Route, serve_routes
from curate.uid import make_uid


def _jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (900, 600), (i * 40 % 255, 90, 160)).save(buf, "JPEG")
    return buf.getvalue()


def _candidates(pool: Pool, urls: list[str]) -> list[str]:
    texts = [f"picture {i}" for i in range(len(urls))]
    uids = [make_uid(u, t) for u, t in zip(urls, texts, strict=True)]
    pool.write_parquet("candidates/part-00000.parquet", pa.table({"uid": uids, "url": urls, "text": texts}))
    return uids


@pytest.mark.ray
def test_cli_download_on_ray(tmp_path: Path, ray_runtime) -> None:
    routes = {f"/{i}.jpg": Route(_jpeg(i), content_type="image/jpeg") for i in range(5)}
    with serve_routes(routes) as server:
        pool = Pool(str(tmp_path / "pool"))
        uids = _candidates(pool, [server.url(p) for p in routes] + [server.url("/gone.jpg")])
        config = tmp_path / "pipeline.yaml"
        config.write_text(f"pool: {pool.url}\ndownload:\n  image_size: 300\n  timeout: 5\n")
        args = ["download", "--pool", pool.url, "--config", str(config), "--samples-per-shard", "4"]
        blocked = CliRunner().invoke(app, args)
        assert blocked.exit_code == 0, blocked.output
        assert pool.read_report("download")["totals"]["counts"] == {"blocked_address": 6}
        assert sum(server.hits.values()) == 0

        result = CliRunner().invoke(app, [*args, "--rerun", "--allow-address", "127.0.0.1"])
        assert result.exit_code == 0, result.output
    assert "success rate 83.3%" in result.output
    assert list_shards(pool) == ["00000000", "00000001"]
    report = pool.read_report("download")
    assert report["totals"]["counts"] == {"success": 5, "failed_to_download": 1}
    assert report["totals"]["errors"] == {"failed_to_download: http 404": 1}
    tables = [read_shard_table(pool, sid) for sid in list_shards(pool)]
    assert [u for t in tables for u in t.column("uid").to_pylist()] == uids
    samples = [s for sid in list_shards(pool) for s in iter_shard_samples(pool, sid)]
    assert [Image.open(io.BytesIO(s["image"])).size for s in samples] == [(300, 200)] * 5
    assert pool.read_json(layout.download_marker("00000000"))["counts"] == {"success": 4}


def test_cli_rejects_bad_allow_address(tmp_path: Path) -> None:
    pool = Pool(str(tmp_path / "pool"))
    _candidates(pool, ["http://example.com/a.jpg"])
    result = CliRunner().invoke(app, ["download", "--pool", pool.url, "--allow-address", "localhost"])
    assert isinstance(result.exception, ConfigError)
    assert "localhost" in str(result.exception)


@pytest.mark.fault("download", "a pool with no candidates", "one-line PoolError, exit 2")
def test_cli_without_candidates_is_a_pool_error(tmp_path: Path) -> None:
    from curate.errors import PoolError

    result = CliRunner().invoke(app, ["download", "--pool", str(tmp_path / "empty")])
    assert isinstance(result.exception, PoolError)
    assert "curate ingest" in str(result.exception)


@pytest.mark.fault("download", "`curate download` in-process (CURATE_EXECUTOR=local) against a server dripping headers for ever", "the command exits right after its summary: no fetch thread outlives its request deadline")  # noqa: E501 - one row of docs/reliability.md
def test_cli_exits_promptly_when_a_server_drips_for_ever(tmp_path: Path) -> None:
    import itertools
    import os
    import subprocess
    import sys

    def drip() -> itertools.chain[bytes]:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nX-Slow: "
        return itertools.chain([head], itertools.repeat(b"a"))

    routes = {"/fast.jpg": Route(_jpeg(1), content_type="image/jpeg"),
              "/drip.jpg": Route(raw=drip, raw_interval=0.05)}
    with serve_routes(routes) as server:
        pool = Pool(str(tmp_path / "pool"))
        _candidates(pool, [server.url("/fast.jpg"), server.url("/drip.jpg")])
        config = tmp_path / "pipeline.yaml"
        # The shard's deadline (2 s) comes before the request's: the fetch thread still reading the
        # drip must end with it, or the interpreter waits for that thread at exit for ever.
        config.write_text(f"pool: {pool.url}\ndownload:\n  timeout: 30\n  shard_timeout: 2\n  retries: 0\n")
        env = {**os.environ, "CURATE_EXECUTOR": "local"}
        done = subprocess.run([sys.executable, "-m", "curate", "download", "--pool", pool.url, "--config",
                               str(config), "--allow-address", "127.0.0.1"], capture_output=True, text=True,
                              env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "success rate 50.0%" in done.stdout + done.stderr
    assert pool.read_report("download")["totals"]["counts"] == {"success": 1, "timeout": 1}
