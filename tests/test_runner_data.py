"""The runner's BatchPass executor (curate/runner_data.py) on a toy pass: a reader task and an actor step.

Shard "NN" has NN rows; the reader yields them in batches of 2, the actor doubles `x`, and `finish`
writes out/<shard>.parquet in row order. The same pass runs in-process (CURATE_EXECUTOR=local)
and on Ray Data and must give the same files, markers and report.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from pydantic import BaseModel

from curate import layout, runner
from curate.errors import PoolError, StageFailed
from curate.pool import Pool
from curate.stage import ActorStep, BatchPass, Stage, StageContext, TaskStep

SHARDS = ["00", "03", "05", "bad", "gone"]


def read_rows(batch: dict[str, np.ndarray], *, per_batch: int) -> Any:
    for sid in batch["shard"].tolist():
        if sid == "bad":  # the reader reports a shard it cannot read through the error column
            yield {"shard": np.array([sid], object), "i": np.array([-1]), "x": np.array([0.0]),
                   "err": np.array([f"cannot read shard {sid}"], object)}
            continue
        n = int(sid)
        for start in range(0, n, per_batch):
            i = np.arange(start, min(n, start + per_batch))
            yield {"shard": np.array([sid] * len(i), object), "i": i, "x": i.astype(float),
                   "err": np.array([""] * len(i), object)}


class Scale:
    constructed = 0
    largest_batch = 0

    def __init__(self, factor: float) -> None:
        Scale.constructed += 1
        self.factor = factor

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        Scale.largest_batch = max(Scale.largest_batch, len(batch["x"]))
        batch["y"] = batch["x"] * self.factor
        batch["pid"] = np.full(len(batch["x"]), os.getpid())
        return batch


class ToyConfig(BaseModel):
    factor: float = 2.0
    fail_finish: str = ""
    gate_shut: bool = False


def _expected(pool: Pool, sid: str) -> int:
    if sid == "gone":
        raise PoolError(f"{pool.uri('in/gone')} is missing")
    return 1 if sid == "bad" else int(sid)


class Toy(Stage):
    name = "toy"
    config_class = ToyConfig

    def run(self, ctx: StageContext) -> dict[str, Any]:
        config: ToyConfig = ctx.config

        def finish(pool: Pool, sid: str, rows: dict[str, np.ndarray]) -> dict[str, Any]:
            assert not pool.exists(layout.marker("toy", "scale", sid))  # the marker comes after the outputs
            if sid == config.fail_finish:
                raise OSError(f"disk full writing {sid}")
            order = np.argsort(rows["i"]) if rows else []
            table = pa.table({k: rows[k][order] for k in ("i", "y")} if rows else
                             {"i": pa.array([], pa.int64()), "y": pa.array([], pa.float64())})
            pool.write_parquet(f"out/{sid}.parquet", table)
            pids = sorted({int(p) for p in rows.get("pid", [])})
            return {"samples": table.num_rows, "counts": {"rows": table.num_rows}, "pids": pids}

        def ready() -> None:
            if config.gate_shut:
                raise PoolError("the model is not there")

        result = ctx.run_pass(BatchPass(
            "scale", dict.fromkeys(SHARDS),
            [TaskStep(read_rows, {"per_batch": 2}), ActorStep(Scale, (config.factor,), batch_size=2, num_cpus=0.5)],
            _expected, finish, fingerprint={"factor": config.factor},
            outputs=lambda sid, _payload, _stats: [f"out/{sid}.parquet"], error_column="err", ready=ready),
            check=False)
        ctx.fail_if_failed({"timings": result.timings})
        return {"timings": result.timings}


def _run(pool: Pool, **config: Any) -> dict[str, Any]:
    with pytest.raises(StageFailed) as info:
        runner.run(Toy(), pool, ToyConfig(**config), quiet=True)
    assert set(info.value.failed) >= {"bad", "gone"}
    report = pool.read_json(layout.report("toy"))
    return report


def _outputs(pool: Pool) -> dict[str, list[tuple[int, float]]]:
    return {sid: list(zip(*(pool.read_parquet(f"out/{sid}.parquet")[c].to_pylist() for c in ("i", "y")), strict=True))
            for sid in ("00", "03", "05")}


@pytest.mark.fault("runner", "a BatchPass shard whose reader reports an error row, or whose expected row count "
                   "cannot be read", "that shard is named failed with its error; the others are written and marked")
def test_batch_pass_in_process(tmp_path, local_executor) -> None:
    Scale.constructed = Scale.largest_batch = 0
    pool = Pool(str(tmp_path / "pool"))
    report = _run(pool)
    assert _outputs(pool) == {"00": [], "03": [(0, 0.0), (1, 2.0), (2, 4.0)],
                              "05": [(i, 2.0 * i) for i in range(5)]}
    assert Scale.constructed == 1 and Scale.largest_batch == 2
    p = report["passes"]["scale"]
    assert p["shards_done"] == 3 and p["shards_run_now"] == 3 and p["totals"]["counts"] == {"rows": 8}
    assert p["shards_failed"]["bad"] == "cannot read shard bad"
    assert "in/gone is missing" in p["shards_failed"]["gone"]
    assert report["timings"]["until_first_result_s"] >= 0 and "ray_start_s" not in report["timings"]
    marker = pool.read_json(layout.marker("toy", "scale", "05"))
    assert marker["samples"] == 5 and marker["pids"] == [os.getpid()]  # ran in this process
    assert not pool.exists(layout.marker("toy", "scale", "bad"))

    # Unchanged: finished shards are skipped. A changed fingerprint redoes them.
    again = _run(pool)["passes"]["scale"]
    assert again["shards_run_now"] == 0 and again["shards_skipped_as_done"] == 3
    changed = _run(pool, factor=3.0)["passes"]["scale"]
    assert changed["shards_run_now"] == 3 and _outputs(pool)["03"] == [(0, 0.0), (1, 3.0), (2, 6.0)]


def test_batch_pass_finish_failure_leaves_no_marker(tmp_path, local_executor) -> None:
    pool = Pool(str(tmp_path / "pool"))
    report = _run(pool, fail_finish="03")
    assert "disk full writing 03" in report["passes"]["scale"]["shards_failed"]["03"]
    assert not pool.exists(layout.marker("toy", "scale", "03")) and pool.exists(layout.marker("toy", "scale", "05"))
    assert _run(pool)["passes"]["scale"]["shards_run_now"] == 1  # only the shard that failed


def test_batch_pass_shut_gate_stops_it_before_any_output(tmp_path, local_executor) -> None:
    pool = Pool(str(tmp_path / "pool"))
    with pytest.raises(PoolError, match="the model is not there"):
        runner.run(Toy(), pool, ToyConfig(gate_shut=True), quiet=True)
    assert not pool.exists("out") and not pool.exists(layout.markers_dir("toy", "scale"))


@pytest.mark.ray
def test_batch_pass_on_ray_data_matches_in_process(tmp_path, ray_runtime, monkeypatch) -> None:
    monkeypatch.delenv("CURATE_EXECUTOR", raising=False)
    pool = Pool(str(tmp_path / "ray"))
    report = _run(pool)
    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    local = Pool(str(tmp_path / "local"))
    _run(local)
    assert _outputs(pool) == _outputs(local)
    p = report["passes"]["scale"]
    assert p["shards_done"] == 3 and p["totals"]["counts"] == {"rows": 8}
    assert p["shards_failed"]["bad"] == "cannot read shard bad" and "in/gone is missing" in p["shards_failed"]["gone"]
    assert {"ray_start_s", "until_first_result_s", "streaming_s"} <= set(report["timings"])
    assert os.getpid() not in pool.read_json(layout.marker("toy", "scale", "05"))["pids"]  # an actor scaled it
