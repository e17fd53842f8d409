"""One writer per stage per pool: the lock refuses a second run, recovers a stale one, releases itself."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from curate import layout
from curate.cli import app
from curate.errors import PoolError
from curate.pool import Pool
from curate.uid import make_uid

LOCK = "_locks/download.json"


@pytest.fixture(autouse=True)
def _in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURATE_EXECUTOR", "local")


def _candidates(pool: Pool, rows: int = 4) -> None:
    # Loopback URLs without --allow-address: every sample is blocked before any request is sent.
    urls = [f"http://127.0.0.1:9/{i}.jpg" for i in range(rows)]
    texts = [f"picture {i}" for i in range(rows)]
    uids = [make_uid(u, t) for u, t in zip(urls, texts, strict=True)]
    pool.write_parquet("candidates/part-00000.parquet", pa.table({"uid": uids, "url": urls, "text": texts}))


def _write_lock(pool: Pool, *, host: str, pid: int, heartbeat: float, token: str = "someone-else") -> None:
    pool.write_json(LOCK, {"token": token, "host": host, "pid": pid, "command": "curate download",
                           "since": heartbeat - 5, "heartbeat": heartbeat})


@pytest.fixture
def live_process() -> Iterator[subprocess.Popen]:
    """A process that stays alive until the test closes its stdin: a stand-in for a running `curate`."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    yield proc
    proc.stdin.close()
    proc.wait(timeout=60)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=60)
    return proc.pid


DOWNLOAD = ["download", "--samples-per-shard", "4"]


@pytest.mark.fault("download", "a second `curate download` on a pool whose download another live run holds",
                   "refused before any work with one line naming the holder's pid, host and start; runs once "
                   "the holder is gone")
def test_second_run_is_refused_while_the_holder_lives(tmp_path: Path, live_process: subprocess.Popen) -> None:
    pool = Pool(str(tmp_path / "pool"))
    _candidates(pool)
    _write_lock(pool, host=socket.gethostname(), pid=live_process.pid, heartbeat=time.time())
    proc = subprocess.run([sys.executable, "-m", "curate", *DOWNLOAD, "--pool", pool.url], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "CURATE_EXECUTOR": "local"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert f"pid {live_process.pid} on host {socket.gethostname()}" in lines[0] and "since" in lines[0]
    assert not pool.exists("shards") and not pool.exists(layout.DOWNLOAD_MARKERS)

    live_process.stdin.close()  # the holder dies without releasing (a crash): its lock is now stale
    live_process.wait(timeout=60)
    result = CliRunner().invoke(app, [*DOWNLOAD, "--pool", pool.url])
    assert result.exit_code == 0, (result.exception, result.output)
    assert "taking over the lock" in result.output and f"process {live_process.pid}" in result.output
    assert pool.exists(layout.download_marker("00000000")) and not pool.exists(LOCK)


@pytest.mark.fault("download", "a lock held by a run on another host whose heartbeat is fresh",
                   "respected: one-line refusal naming that host")
def test_fresh_lock_of_another_host_is_respected(tmp_path: Path) -> None:
    pool = Pool(str(tmp_path / "pool"))
    _candidates(pool)
    _write_lock(pool, host="worker-7.example", pid=4242, heartbeat=time.time())
    result = CliRunner().invoke(app, [*DOWNLOAD, "--pool", pool.url])
    assert isinstance(result.exception, PoolError)
    message = str(result.exception)
    assert "\n" not in message and "pid 4242 on host worker-7.example" in message
    assert not pool.exists(layout.DOWNLOAD_MARKERS)


@pytest.mark.fault("download", "a stale lock: heartbeat older than the stale timeout, holder process gone "
                   "on this host, or a damaged lock object", "taken over with a one-line message; the run goes on")
@pytest.mark.parametrize("case", ["old heartbeat", "dead pid on this host", "damaged lock"])
def test_stale_lock_is_taken_over(case: str, tmp_path: Path) -> None:
    pool = Pool(str(tmp_path / "pool"))
    _candidates(pool)
    if case == "old heartbeat":
        _write_lock(pool, host="worker-7.example", pid=4242, heartbeat=time.time() - 3600)
    elif case == "dead pid on this host":
        _write_lock(pool, host=socket.gethostname(), pid=_dead_pid(), heartbeat=time.time())
    else:
        pool.write_bytes(LOCK, b"\x00\x01 not json")
    result = CliRunner().invoke(app, [*DOWNLOAD, "--pool", pool.url])
    assert result.exit_code == 0, (result.exception, result.output)
    assert "taking over the lock" in result.output
    assert pool.exists(layout.download_marker("00000000")) and not pool.exists(LOCK)


@pytest.mark.fault("pool", "a stage that returns normally or raises", "its lock is released either way")
def test_lock_is_released_on_return_and_on_exception(tmp_path: Path) -> None:
    from curate import runner
    from curate.stage import Stage, StageContext

    pool = Pool(str(tmp_path / "pool"))
    seen: list[dict] = []

    class Holder(Stage):
        """A stage whose only work is to look at the lock the runner holds for it."""

        name = "download"

        def run(self, ctx: StageContext) -> dict:
            seen.append(ctx.pool.read_json(LOCK))
            if ctx.config == "fail":
                raise RuntimeError("stage failed")
            return {"done": True}

    assert runner.run(Holder(), pool, None, quiet=True)["done"] is True
    assert seen[-1]["pid"] == os.getpid() and seen[-1]["host"] == socket.gethostname()
    assert not pool.exists(LOCK)
    with pytest.raises(RuntimeError, match="stage failed"):
        runner.run(Holder(), pool, "fail", quiet=True)
    assert not pool.exists(LOCK)
    assert seen[0]["token"] != seen[1]["token"]


@pytest.mark.fault("pool", "the lock is taken over while its run still works (it missed heartbeats)",
                   "the heartbeat notices; the run ends with a one-line error instead of success")
def test_heartbeat_refreshes_and_notices_a_takeover(tmp_path: Path) -> None:
    from curate.poollock import StageLock

    pool = Pool(str(tmp_path / "pool"))
    lock = StageLock(pool, "download", stale_after=60, heartbeat_every=3600)  # beats only when called here
    with pytest.raises(PoolError, match="taken over during this run") as info, lock:
        stored = pool.read_json(LOCK)
        pool.write_json(LOCK, {**stored, "heartbeat": stored["heartbeat"] - 50})
        lock.heartbeat()
        assert pool.read_json(LOCK)["heartbeat"] > time.time() - 30
        _write_lock(pool, host="worker-7.example", pid=4242, heartbeat=time.time())
        lock.heartbeat()
        assert lock.lost and "worker-7.example" in lock.lost
    assert "\n" not in str(info.value)
    assert json.loads(pool.read_bytes(LOCK))["token"] == "someone-else"  # the new holder's lock is left alone
