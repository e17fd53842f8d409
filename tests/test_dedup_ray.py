"""Dedup on Ray and through the CLI: same result as in-process, whatever the number of workers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from curate.config import DedupConfig
from curate.stages.dedup import run
from tests.test_dedup_pool import build_pool

SEMANTIC = {"method": "semantic", "embeddings": "proj", "eps": 0.1, "n_clusters": 6}


@pytest.mark.ray
def test_semantic_on_ray_equals_in_process(tmp_path, ray_runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    on_ray = build_pool(str(tmp_path / "a"), n_originals=40, n_duplicated=10, n_shards=4)
    local = build_pool(str(tmp_path / "b"), n_originals=40, n_duplicated=10, n_shards=2, order_seed=3)
    run(on_ray.pool, DedupConfig(methods=[{**SEMANTIC, "cluster_tasks": 4}]), quiet=True)
    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    run(local.pool, DedupConfig(methods=[{**SEMANTIC, "cluster_tasks": 1}]), quiet=True)
    a = on_ray.pool.read_parquet("dedup/semantic.parquet").select(["uid", "group", "is_duplicate"])
    b = local.pool.read_parquet("dedup/semantic.parquet").select(["uid", "group", "is_duplicate"])
    assert a.equals(b)
    assert sum(a["is_duplicate"].to_pylist()) == 40  # 10 originals x 4 copies


def test_cli_runs_configured_methods(tmp_path: Path) -> None:
    planted = build_pool(str(tmp_path / "pool"), n_originals=12, n_duplicated=3, n_shards=2)
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(f"pool: {tmp_path / 'pool'}\ndedup:\n  methods:\n    - method: exact\n"
                   f"    - method: perceptual\n      max_distance: 10\n")
    cmd = [sys.executable, "-c", "from curate.cli import main; main()", "dedup", "--pool", planted.pool.url,
           "--config", str(cfg), "--json"]
    env = {"CURATE_EXECUTOR": "local", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout[done.stdout.index("{"):])
    assert report["methods"]["exact"]["samples_removed"] == 3
    assert report["methods"]["perceptual"]["samples_removed"] == 12

    bad = tmp_path / "bad.yaml"
    bad.write_text(f"pool: {tmp_path / 'pool'}\ndedup:\n  methods:\n    - method: perceptual\n      max_distanse: 3\n")
    done = subprocess.run([*cmd[:6], "--config", str(bad)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert "bad.yaml:5" in done.stderr and "max_distanse" in done.stderr
