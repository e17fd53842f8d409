"""The runner's side of the stage contract: passes, the one resume rule, reports, executors."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from curate import layout, runner
from curate.errors import StageFailed
from curate.pool import Pool
from curate.runner import merge_stats
from curate.stage import Pass, Resources, Stage, StageContext


def _square_shard(pool: Pool, shard_id: str, payload: int, settings: dict) -> dict:
    if payload in settings.get("fail", ()):
        raise ValueError(f"bad payload {payload}")
    pool.write_json(f"out/{shard_id}.json", {"value": payload * payload * settings.get("scale", 1)})
    return {"samples": payload, "counts": {"ok": payload}}


def _flaky_shard(pool: Pool, shard_id: str, payload: int, settings: dict) -> dict:
    """Fails the first time it runs for a shard (the file remembers), then succeeds."""
    flag = f"attempts/{shard_id}"
    if not pool.exists(flag):
        pool.write_bytes(flag, b"1")
        if settings.get("kill"):
            os.kill(os.getpid(), signal.SIGKILL)  # a worker dying, not just raising
        raise RuntimeError("transient")
    return {"samples": 1}


def _values(pool: Pool, shard_id: str, payload: int, settings: dict) -> list[int]:
    return [payload] * payload


class Squares(Stage):
    """A stage written only against the contract: two passes, nothing in the runner knows it."""

    name = "squares"
    reads = ()
    writes = ()

    def __init__(self, shards: dict[str, int], settings: dict[str, Any], retries: int = 2,
                 inputs: dict[str, Any] | None = None) -> None:
        self.shards, self.settings, self.retries, self.inputs = shards, settings, retries, inputs or {}

    def run(self, ctx: StageContext) -> dict[str, Any]:
        gathered = ctx.gather(Pass("values", _values, self.shards))
        result = ctx.run_pass(Pass(
            "square", _square_shard, self.shards, self.settings,
            fingerprint={"scale": self.settings.get("scale", 1)},
            shard_inputs=lambda sid, _payload: self.inputs.get(sid),
            outputs=lambda sid, _p, _s: [f"out/{sid}.json"],
            resources=Resources(max_retries=self.retries)))
        return {"gathered": [len(v) for v in gathered], "ran": sorted(result.ran)}


SHARDS = {f"{i:08d}": i for i in range(1, 6)}


def test_merge_stats_sums_numbers_and_merges_dicts():
    merged = merge_stats([{"samples": 2, "counts": {"a": 1}, "_fingerprint": "x"},
                          {"samples": 3, "counts": {"a": 2, "b": 1}}])
    assert merged == {"samples": 5, "counts": {"a": 3, "b": 1}}


def test_stage_runs_skips_done_and_reports(tmp_path, ray_runtime):
    pool = Pool(str(tmp_path / "pool"))
    report = runner.run(Squares(SHARDS, {}), pool, None, quiet=True)
    assert report["ran"] == sorted(SHARDS) and report["gathered"] == [1, 2, 3, 4, 5]  # shard order
    assert pool.read_json("out/00000003.json") == {"value": 9}
    assert pool.exists(layout.marker("squares", "square", "00000003"))
    assert report["totals"]["samples"] == 15 and report["totals"]["counts"] == {"ok": 15}
    assert report["passes"]["square"]["shards_done"] == 5 and report["key"] == "squares"
    assert pool.read_json(layout.report("squares")) == report
    again = runner.run(Squares(SHARDS, {}), pool, None, quiet=True)
    assert again["ran"] == [] and again["shards_skipped_as_done"] == 5


def test_changed_fingerprint_redoes_finished_shards(tmp_path, local_executor, capsys):
    pool = Pool(str(tmp_path / "pool"))
    runner.run(Squares(SHARDS, {"scale": 1}), pool, None, quiet=True)
    changed = runner.run(Squares(SHARDS, {"scale": 2}), pool, None)
    assert changed["ran"] == sorted(SHARDS) and pool.read_json("out/00000003.json") == {"value": 18}
    assert "5 finished shard(s) were made from other inputs or config" in capsys.readouterr().err
    # One shard's own inputs changed: only that shard runs again.
    only = runner.run(Squares(SHARDS, {"scale": 2}, inputs={"00000002": "v2"}), pool, None, quiet=True)
    assert only["ran"] == ["00000002"]


@pytest.mark.fault("runner", "a finished shard's output file is deleted (a phantom marker)",
                   "the marker is dropped with one line naming the missing file; only that shard runs again")
def test_phantom_marker_redoes_its_shard(tmp_path, local_executor, capsys):
    pool = Pool(str(tmp_path / "pool"))
    runner.run(Squares(SHARDS, {}), pool, None, quiet=True)
    pool.remove("out/00000004.json")
    again = runner.run(Squares(SHARDS, {}), pool, None)
    assert again["ran"] == ["00000004"] and "out/00000004.json is missing" in capsys.readouterr().err


@pytest.mark.fault("runner", "a completion marker holds garbage", "the shard is redone with one line naming the marker")
def test_damaged_marker_redoes_its_shard(tmp_path, local_executor, capsys):
    pool = Pool(str(tmp_path / "pool"))
    runner.run(Squares(SHARDS, {}), pool, None, quiet=True)
    pool.write_bytes(layout.marker("squares", "square", "00000001"), b"\x00garbage")
    again = runner.run(Squares(SHARDS, {}), pool, None)
    assert again["ran"] == ["00000001"] and "redoing the shard" in capsys.readouterr().err


@pytest.mark.fault("runner", "a shard raises on every attempt", "named with its error in the summary and report, no marker written, exit non-zero; the next run redoes only that shard")  # noqa: E501 - one row of docs/reliability.md
def test_failed_shard_is_named_and_others_complete(tmp_path, ray_runtime):
    pool = Pool(str(tmp_path / "pool"))
    shards = {f"{i:08d}": i for i in range(1, 4)}
    with pytest.raises(StageFailed, match="00000002") as failure:
        runner.run(Squares(shards, {"fail": [2]}, retries=1), pool, None, quiet=True)
    assert "bad payload 2" in failure.value.failed["00000002"]
    report = pool.read_json(layout.report("squares"))
    assert "bad payload 2" in report["shards_failed"]["00000002"] and report["shards_done"] == 2
    assert not pool.exists(layout.marker("squares", "square", "00000002"))
    assert pool.exists(layout.marker("squares", "square", "00000001"))
    fixed = runner.run(Squares(shards, {}), pool, None, quiet=True)
    assert fixed["ran"] == ["00000002"] and not fixed["shards_failed"]


@pytest.mark.fault("runner", "a shard task raises once, or its worker process is SIGKILLed", "Ray retries the shard; the stage completes")  # noqa: E501 - one row of docs/reliability.md
@pytest.mark.parametrize("kill", [False, True])
def test_retries_recover_from_exceptions_and_killed_workers(tmp_path, ray_runtime, kill):
    pool = Pool(str(tmp_path / "pool"))

    class Flaky(Stage):
        name = "flaky"

        def run(self, ctx: StageContext) -> None:
            ctx.run_pass(Pass("only", _flaky_shard, {"00000000": 0}, {"kill": kill}))

    report = runner.run(Flaky(), pool, None, quiet=True)
    assert report["shards_done"] == 1 and not report["shards_failed"]


def test_local_executor_and_rerun(tmp_path, local_executor):
    pool = Pool(str(tmp_path / "pool"))
    runner.run(Squares({"00000000": 2}, {}), pool, None, quiet=True)
    assert pool.read_json("out/00000000.json") == {"value": 4}
    again = runner.run(Squares({"00000000": 2}, {}), pool, None, rerun=True, quiet=True)
    assert again["ran"] == ["00000000"]


def test_a_pass_may_not_run_twice(tmp_path, local_executor):
    class Twice(Stage):
        name = "twice"

        def run(self, ctx: StageContext) -> None:
            ctx.run_pass(Pass("p", _square_shard, {"a": 1}, {}))
            ctx.run_pass(Pass("p", _square_shard, {"a": 1}, {}))

    with pytest.raises(ValueError, match="ran twice"):
        runner.run(Twice(), Pool(str(tmp_path / "pool")), None, quiet=True)


def test_merged_error_counts_are_capped():
    shards = [{"errors": {f"message {s}-{i}": 1 for i in range(60)}} for s in range(5)]
    merged = merge_stats(shards)["errors"]
    assert len(merged) == 100 and sum(merged.values()) == 300 and merged["other"] == 201
