from __future__ import annotations

import os
import signal

import pytest

from curate.errors import StageFailed
from curate.pool import Pool
from curate.runner import merge_stats, run_stage


def _square_shard(pool: Pool, shard_id: str, payload: int, settings: dict) -> dict:
    if payload in settings.get("fail", ()):
        raise ValueError(f"bad payload {payload}")
    pool.write_json(f"out/{shard_id}.json", {"value": payload * payload})
    return {"samples": payload, "counts": {"ok": payload}}


def _flaky_shard(pool: Pool, shard_id: str, payload: int, settings: dict) -> dict:
    """Fails the first time it runs for a shard (the marker file remembers), then succeeds."""
    flag = f"attempts/{shard_id}"
    if not pool.exists(flag):
        pool.write_bytes(flag, b"1")
        if settings.get("kill"):
            os.kill(os.getpid(), signal.SIGKILL)  # a worker dying, not just raising
        raise RuntimeError("transient")
    return {"samples": 1}


def test_merge_stats_sums_numbers_and_merges_dicts():
    merged = merge_stats([{"samples": 2, "counts": {"a": 1}}, {"samples": 3, "counts": {"a": 2, "b": 1}}])
    assert merged == {"samples": 5, "counts": {"a": 3, "b": 1}}


def test_run_stage_runs_skips_done_and_reports(tmp_path, ray_runtime):
    pool = Pool(str(tmp_path / "pool"))
    shards = {f"{i:08d}": i for i in range(1, 6)}
    result = run_stage("square", pool, _square_shard, shards, {}, quiet=True)
    assert result.ok and sorted(result.ran) == sorted(shards)
    assert pool.read_json("out/00000003.json") == {"value": 9}
    report = pool.read_report("square")
    assert report["totals"]["samples"] == 15 and report["totals"]["counts"] == {"ok": 15}
    again = run_stage("square", pool, _square_shard, shards, {}, quiet=True)
    assert again.ran == [] and sorted(again.skipped) == sorted(shards)


@pytest.mark.fault("runner", "a shard raises on every attempt", "named with its error in the summary and report, no marker written, exit non-zero; the next run redoes only that shard")  # noqa: E501 - one row of docs/reliability.md
def test_failed_shard_is_named_and_others_complete(tmp_path, ray_runtime):
    pool = Pool(str(tmp_path / "pool"))
    shards = {f"{i:08d}": i for i in range(1, 4)}
    result = run_stage("square", pool, _square_shard, shards, {"fail": [2]}, max_retries=1, quiet=True)
    assert set(result.failed) == {"00000002"} and "bad payload 2" in result.failed["00000002"]
    assert not pool.is_done("square", "00000002") and pool.is_done("square", "00000001")
    with pytest.raises(StageFailed, match="00000002"):
        result.raise_for_failures()
    # The next run finishes only the missing shard.
    fixed = run_stage("square", pool, _square_shard, shards, {}, quiet=True)
    assert fixed.ran == ["00000002"] and fixed.ok


@pytest.mark.fault("runner", "a shard task raises once, or its worker process is SIGKILLed", "Ray retries the shard; the stage completes")  # noqa: E501 - one row of docs/reliability.md
@pytest.mark.parametrize("kill", [False, True])
def test_retries_recover_from_exceptions_and_killed_workers(tmp_path, ray_runtime, kill):
    pool = Pool(str(tmp_path / "pool"))
    result = run_stage("flaky", pool, _flaky_shard, {"00000000": 0}, {"kill": kill}, max_retries=2, quiet=True)
    assert result.ok, result.failed


def test_local_executor(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    pool = Pool(str(tmp_path / "pool"))
    result = run_stage("square", pool, _square_shard, {"00000000": 2}, {}, quiet=True)
    assert result.ok and pool.read_json("out/00000000.json") == {"value": 4}
