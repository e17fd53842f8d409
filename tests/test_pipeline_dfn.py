"""pipelines/dfn.yaml's shape through `curate run`: train a DFN, score the pool with it, keep the top 15%."""

from __future__ import annotations

import yaml

from curate.config import load_pipeline
from curate.pipeline import run_pipeline
from curate.pool import Pool
from curate.testing.synthetic_set import write_webdataset
from tests.clip_fixtures import write_synthetic_shards


def test_train_dfn_then_score_then_top15(tmp_path, ray_runtime):
    pool_dir = tmp_path / "pool"
    samples = write_synthetic_shards(pool_dir, n_shards=2, per_shard=40, seed=5)
    write_webdataset(tmp_path / "hq", 256, seed=7)
    (tmp_path / "train.yaml").write_text(yaml.safe_dump({
        "data": {"kind": "webdataset", "urls": [str(tmp_path / "hq")]},
        "model": {"name": "curate-tiny", "from_scratch": True},
        "train": {"steps": 12, "batch_size": 32, "lr": 2e-3, "loader_workers": 0, "cpu_threads": 1},
        "checkpoint": {"every_steps": 6},
        "output_dir": str(tmp_path / "dfn"),
    }))
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump({
        "name": "dfn", "pool": str(pool_dir),
        "train_dfn": {"config": str(tmp_path / "train.yaml")},
        "score": {"scorers": [{"type": "clip", "name": "dfn", "model": str(tmp_path / "dfn" / "model")}]},
        "filter": {"spec": "filters/dfn_top15.yaml"},
    }))
    cfg = load_pipeline(tmp_path / "pipeline.yaml")
    reports = run_pipeline(cfg)
    assert reports["train_dfn"]["step"] == 12 and not reports["train_dfn"]["skipped_as_done"]
    pool = Pool(str(pool_dir))
    kept = pool.read_parquet("subsets/dfn_top15/uids.parquet").num_rows
    assert int(len(samples) * 0.15) <= kept < len(samples) // 2  # DataComp's rule keeps ties at the cut
    again = run_pipeline(cfg)
    assert again["train_dfn"]["skipped_as_done"]
