"""DFN training and evaluation on generated shapes: separation, exact resume, Ray Train, scoring a pool."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from typer.testing import CliRunner

from curate import layout
from curate.cli import app
from curate.dfn import train_dfn
from curate.dfn.config import DFNTrainConfig, PoolSubsetSource, ScalingSettings
from curate.dfn.data import load_pairs, read_webdataset
from curate.dfn.evaluate import auc, evaluate_filter
from curate.errors import ConfigError
from curate.pool import Pool
from curate.shards import SampleRow, ShardWriter, list_shards
from curate.testing.synthetic import encode, make_samples, mismatched_caption
from curate.testing.synthetic_set import write_parquet, write_webdataset
from curate.uid import make_uid

runner = CliRunner()


def _config(train_dir: Path, out: Path, **train: Any) -> DFNTrainConfig:
    settings = {"steps": 12, "batch_size": 32, "lr": 1e-3, "warmup_steps": 2, "loader_workers": 0,
                "weight_decay": 0.1, "log_every": 4, "cpu_threads": 1, **train}
    return DFNTrainConfig.model_validate({
        "data": {"kind": "webdataset", "urls": [str(train_dir)]},
        "model": {"name": "curate-tiny", "from_scratch": True},
        "train": settings, "checkpoint": {"every_steps": 4, "keep_last": 2}, "output_dir": str(out)})


@pytest.fixture(scope="module")
def hq_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dfn_data")
    write_webdataset(root / "train", 512, seed=1, per_shard=256)
    write_webdataset(root / "heldout", 256, seed=2)
    write_webdataset(root / "small", 160, seed=3)
    return {"train": root / "train", "heldout": root / "heldout", "small": root / "small", "root": root}


@pytest.fixture(scope="module")
def trained_dfn(hq_sets: dict[str, Path]) -> dict[str, Any]:
    """A tiny CLIP trained from scratch on clean pairs (50 steps of 32: 15-50 s on 2 busy cores)."""
    cfg = _config(hq_sets["train"], hq_sets["root"] / "run", steps=50, batch_size=32, lr=2e-3, warmup_steps=5,
                  log_every=25)
    return train_dfn(cfg)


def test_trained_dfn_separates_heldout_clean_from_corrupted(trained_dfn: dict[str, Any],
                                                            hq_sets: dict[str, Path]) -> None:
    assert trained_dfn["finished"] and trained_dfn["step"] == 50
    assert trained_dfn["losses"][-1] < trained_dfn["losses"][0] - 1.0
    heldout = read_webdataset([str(hq_sets["heldout"])], label_field="class")
    report = evaluate_filter(trained_dfn["model_dir"], heldout, seed=0)
    assert report["pairs"] == 256
    assert report["auc"]["shuffled"] >= 0.9, report["auc"]
    assert report["auc"]["other_class"] >= 0.9, report["auc"]
    dist = report["distributions"]
    assert dist["matched"]["mean"] > dist["other_class"]["mean"] + 0.2


def test_untrained_model_does_not_separate(hq_sets: dict[str, Path], tmp_path: Path) -> None:
    """The AUC bar is meaningful: the same architecture untrained scores near chance."""
    import open_clip

    from curate.dfn.model import _named_model_cfg
    from curate.models.save import save_clip_dir
    from curate.models.tiny import register_tiny_configs

    register_tiny_configs()
    torch.manual_seed(0)
    save_clip_dir(open_clip.create_model("curate-tiny"), _named_model_cfg("curate-tiny"), tmp_path / "untrained")
    report = evaluate_filter(str(tmp_path / "untrained"), read_webdataset([str(hq_sets["heldout"])], "class"))
    assert report["auc"]["other_class"] < 0.8


def test_checkpoint_loads_in_scorer_and_scores_a_small_pool(trained_dfn: dict[str, Any], tmp_path: Path) -> None:
    from curate.models.loading import load_clip

    loaded = load_clip(trained_dfn["model_dir"])
    assert loaded.embed_dim == 64 and loaded.image_size == 64
    pool = Pool(str(tmp_path / "pool"))
    rng = np.random.default_rng(7)
    truth: dict[str, bool] = {}
    for shard in range(2):
        writer = ShardWriter(pool, f"{shard:08d}")
        for i, sample in enumerate(make_samples(40, seed=10 + shard)):
            matched = i % 2 == 0
            caption = sample.caption if matched else mismatched_caption(sample, rng)
            url = f"http://127.0.0.1/{shard}/{i}.jpg"
            uid = make_uid(url, caption)
            truth[uid] = matched
            writer.add(SampleRow(key=f"{shard:04d}{i:04d}", uid=uid, url=url, caption=caption, status="success",
                                 width=64, height=64, image=encode(sample.image)))
        writer.close({"successes": 40})
        pool.write_json(layout.download_marker(f"{shard:08d}"), {"samples": 40})
    # Score the pool the way the score stage does: a clip scorer named dfn loading the model by path.
    from curate.config import ScoreConfig
    from curate.scorers.base import build_scorers
    from curate.stages.score.read import decode_shard

    config = ScoreConfig.model_validate(
        {"scorers": [{"type": "clip", "name": "dfn", "model": trained_dfn["model_dir"], "num_gpus": 0}]})
    (scorer,) = build_scorers(config.scorers)
    uids, parts = [], []
    for shard_id in list_shards(pool):
        for batch in decode_shard(pool, shard_id, scorer.views(), config.max_image_pixels, rows_per_batch=64):
            uids += batch["uid"].tolist()
            parts.append(scorer(batch)["clip_dfn_similarity_score"])
    scores = np.concatenate(parts)
    is_matched = np.array([truth[u] for u in uids])
    assert len(uids) == 80 and np.isfinite(scores).all()
    assert auc(scores[is_matched], scores[~is_matched]) >= 0.9


def test_resumed_run_ends_where_uninterrupted_run_ends(hq_sets: dict[str, Path], tmp_path: Path) -> None:
    whole = train_dfn(_config(hq_sets["small"], tmp_path / "whole"))
    first = train_dfn(_config(hq_sets["small"], tmp_path / "split"), stop_at_step=6)
    assert first["step"] == 6 and not first["finished"] and "model_dir" not in first
    assert sorted(p.name for p in (tmp_path / "split" / "checkpoints").iterdir()) == [
        "step-00000004.safetensors", "step-00000006.safetensors"]
    logged: list[str] = []
    from curate.dfn.train import run_training

    resumed = run_training(_config(hq_sets["small"], tmp_path / "split"), log=logged.append)
    assert any("resuming from step 6" in line for line in logged)
    assert resumed["step"] == whole["step"] == 12
    assert len(resumed["losses"]) == 12
    np.testing.assert_allclose(resumed["losses"], whole["losses"], rtol=1e-4, atol=1e-5)
    from safetensors.torch import load_file

    a = load_file(tmp_path / "whole" / "model" / "open_clip_model.safetensors")
    b = load_file(tmp_path / "split" / "model" / "open_clip_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    summary = json.loads((tmp_path / "split" / "train_summary.json").read_text())
    assert summary["step"] == 12 and len(summary["loss_curve"]) == 12


@pytest.mark.fault("dfn", "resume with changed batch size", "ConfigError naming the checkpoint")
def test_resume_with_different_settings_is_refused(hq_sets: dict[str, Path], tmp_path: Path) -> None:
    train_dfn(_config(hq_sets["small"], tmp_path / "run", steps=4))
    with pytest.raises(ConfigError, match="different data, model or train settings"):
        train_dfn(_config(hq_sets["small"], tmp_path / "run", steps=4, batch_size=16))


class _WritesMarker:
    """Unpickling this runs os.system-like code: it writes the file `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        import pathlib

        return (pathlib.Path.write_text, (pathlib.Path(str(self.path)), "pwned"))  # type: ignore[return-value]


@pytest.mark.fault("dfn", "a planted pickle as checkpoints/step-*.pt (code run on unpickling)",
                   "refused unopened, one-line ConfigError; nothing is unpickled")
def test_planted_pickle_checkpoint_is_refused_not_unpickled(hq_sets: dict[str, Path], tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    ckpt_dir = tmp_path / "run" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    # It even carries the fingerprint a real resume would expect: the refusal must not depend on it.
    import pickle

    from curate.dfn.checkpoint import fingerprint
    cfg = _config(hq_sets["small"], tmp_path / "run", steps=4)
    fp = fingerprint(cfg, len(load_pairs(cfg.data)))
    for name in ("step-00000004.pt", "step-00000004.safetensors"):
        (ckpt_dir / name).write_bytes(pickle.dumps({"fingerprint": fp, "payload": _WritesMarker(marker)}))
        with pytest.raises(ConfigError) as info:
            train_dfn(cfg)
        assert not marker.exists()
        assert name in str(info.value) and "\n" not in str(info.value)
        (ckpt_dir / name).unlink()


@pytest.mark.fault("dfn", "a foreign safetensors file as checkpoints/step-*.safetensors",
                   "refused from its header before any tensor is read")
def test_foreign_safetensors_checkpoint_is_refused(hq_sets: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.torch import save_file

    ckpt_dir = tmp_path / "run" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, ckpt_dir / "step-00000004.safetensors", metadata={"format": "pt"})
    with pytest.raises(ConfigError, match="not a curate train-dfn checkpoint"):
        train_dfn(_config(hq_sets["small"], tmp_path / "run", steps=4))


@pytest.mark.ray
def test_ray_train_one_cpu_worker(ray_runtime: Any, hq_sets: dict[str, Path], tmp_path: Path) -> None:
    cfg = _config(hq_sets["small"], tmp_path / "ray", steps=2).model_copy(
        update={"scaling": ScalingSettings(backend="ray", num_workers=1, use_gpu=False)})
    stopped = train_dfn(cfg, stop_at_step=1)
    assert stopped["step"] == 1 and not stopped["finished"]
    summary = train_dfn(cfg)
    assert summary["step"] == 2 and summary["world_size"] == 1 and len(summary["losses"]) == 2
    from curate.models.loading import load_clip

    assert load_clip(str(tmp_path / "ray" / "model")).embed_dim == 64


def test_parquet_source_counts_unusable_rows(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = write_parquet(tmp_path / "hq.parquet", 20, seed=4)
    table = pq.read_table(path)
    caption = table["caption"].to_pylist()
    caption[3] = None
    image = table["jpg"].to_pylist()
    image[5] = None
    table = table.set_column(1, "caption", pa.array(caption)).set_column(3, "jpg", pa.array(image, pa.binary()))
    pq.write_table(table, path)
    from curate.dfn.config import ParquetSource

    pairs = load_pairs(ParquetSource(paths=[str(path)], label_field="class"))
    assert len(pairs) == 18
    assert pairs.counts == {"loaded": 18, "missing_caption": 1, "missing_image": 1}
    assert pairs.table["label"].null_count == 0


def test_pool_subset_source_reads_subset_and_counts_missing(tmp_path: Path) -> None:
    pool = Pool(str(tmp_path / "pool"))
    writer = ShardWriter(pool, "00000000")
    uids = []
    for i, s in enumerate(make_samples(10, seed=5)):
        uid = make_uid(f"http://x/{i}", s.caption)
        uids.append(uid)
        writer.add(SampleRow(key=f"{i:04d}", uid=uid, url=f"http://x/{i}", caption=s.caption, status="success",
                             image=encode(s.image), extra={"class": f"{s.color} {s.shape}"}))
    writer.close({})
    pool.write_json(layout.download_marker("00000000"), {})
    pool.write_parquet("subsets/hq/uids.parquet", pa.table({"uid": [*uids[:4], "f" * 32]}))
    pairs = load_pairs(PoolSubsetSource(pool=pool.url, subset="hq", label_field="class"))
    assert sorted(pairs.table["uid"].to_pylist()) == sorted(uids[:4])
    assert pairs.counts == {"loaded": 4, "not_in_shards": 1}
    with pytest.raises(Exception, match="curate filter"):
        load_pairs(PoolSubsetSource(pool=pool.url, subset="nope"))


def test_batch_order_is_a_function_of_step_and_splits_over_workers() -> None:
    from curate.dfn.loader import StepBatchSampler

    whole = list(StepBatchSampler(100, 20, seed=3, start_step=0, end_step=12))
    tail = list(StepBatchSampler(100, 20, seed=3, start_step=7, end_step=12))
    assert tail == whole[7:]
    assert sorted(i for batch in whole[:5] for i in batch) == list(range(100))  # one epoch covers every pair once
    halves = [list(StepBatchSampler(100, 20, 3, 0, 12, rank=r, world_size=2)) for r in (0, 1)]
    assert [a + b for a, b in zip(*halves, strict=True)] == whole


@pytest.mark.fault("dfn", "bad key / conflicting starts in train-dfn YAML", "file:line error, exit 2")
def test_config_errors_name_file_and_line(tmp_path: Path) -> None:
    from curate.dfn.config import load_dfn_config

    bad = tmp_path / "dfn.yaml"
    bad.write_text("data: {kind: webdataset, urls: [x]}\nmodel:\n  name: curate-tiny\n  from_scratch: true\n"
                   "  pretrained: foo\ntrain:\n  steps: 10\n  bach_size: 3\noutput_dir: out\n")
    with pytest.raises(ConfigError) as err:
        load_dfn_config(bad)
    text = str(err.value)
    assert "dfn.yaml:8: train.bach_size: unknown key" in text
    assert "dfn.yaml:2: model" in text and "only one of" in text


def test_eval_dfn_cli_prints_table_and_writes_json(trained_dfn: dict[str, Any], hq_sets: dict[str, Path],
                                                   tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    result = runner.invoke(app, ["eval-dfn", "--model", trained_dfn["model_dir"], "--data", str(hq_sets["heldout"]),
                                 "--label-field", "class", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "other_class" in result.output and "AUC" in result.output
    report = json.loads(out.read_text())
    assert set(report["auc"]) == {"shuffled", "other_class", "all_corrupted"}
    assert report["counts"]["loaded"] == 256


def test_train_dfn_cli_stops_and_resumes(hq_sets: dict[str, Path], tmp_path: Path) -> None:
    yaml = tmp_path / "dfn.yaml"
    yaml.write_text(f"data: {{kind: webdataset, urls: ['{hq_sets['small']}']}}\n"
                    "model: {name: curate-tiny, from_scratch: true}\n"
                    "train: {steps: 4, batch_size: 32, loader_workers: 0, cpu_threads: 1}\n"
                    "checkpoint: {every_steps: 2}\n"
                    f"output_dir: {tmp_path / 'out'}\n")
    first = runner.invoke(app, ["train-dfn", "--config", str(yaml), "--stop-at-step", "2"])
    assert first.exit_code == 0, first.output
    assert "run the same command to resume" in first.output
    second = runner.invoke(app, ["train-dfn", "--config", str(yaml)])
    assert second.exit_code == 0, second.output
    assert "resuming from step 2" in second.output and "step 4/4" in second.output
    assert (tmp_path / "out" / "model" / "open_clip_config.json").exists()


def test_bf16_on_cpu_is_refused() -> None:
    from curate.dfn.train import _use_bf16

    assert _use_bf16("auto", torch.device("cpu")) is False
    assert _use_bf16("auto", torch.device("cuda")) is True
    with pytest.raises(ConfigError, match="bf16 needs a GPU"):
        _use_bf16("bf16", torch.device("cpu"))


def test_shipped_dfn_yamls_validate() -> None:
    from curate.config import load_pipeline
    from curate.dfn.config import load_dfn_config

    root = Path(__file__).resolve().parent.parent
    example = load_dfn_config(root / "curate" / "dfn" / "example_train.yaml")
    pipeline = load_pipeline(root / "pipelines" / "dfn.yaml")
    clip = pipeline.score.scorers[0]
    assert clip.type == "clip" and clip.name == "dfn"
    assert clip.model == str(Path(example.output_dir) / "model")
    assert pipeline.filter.spec == "filters/dfn_top15.yaml"


@pytest.mark.fault("dfn", "undecodable images in the training set", "skipped in their batch, counted")
def test_undecodable_images_are_counted_not_fatal(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = write_parquet(tmp_path / "hq.parquet", 20, seed=6)
    table = pq.read_table(path)
    images = table["jpg"].to_pylist()
    for i in range(0, 20, 4):
        images[i] = b"not an image"
    pq.write_table(table.set_column(3, "jpg", pa.array(images, pa.binary())), path)
    cfg = DFNTrainConfig.model_validate({
        "data": {"kind": "parquet", "paths": [str(path)]}, "model": {"name": "curate-tiny", "from_scratch": True},
        "train": {"steps": 1, "batch_size": 16, "loader_workers": 0, "cpu_threads": 1},
        "output_dir": str(tmp_path / "out")})
    summary = train_dfn(cfg)
    assert summary["step"] == 1
    assert summary["counts"]["undecodable_image"] >= 1  # 16 of 20 drawn, 5 bad: at least one in the batch
    assert summary["counts"]["samples"] == 16 - summary["counts"]["undecodable_image"]


@pytest.mark.fault("dfn", "training set smaller than one batch", "ConfigError with the counts")
def test_too_few_pairs_is_a_clear_error(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "hq.parquet", 8, seed=6)
    cfg = DFNTrainConfig.model_validate({
        "data": {"kind": "parquet", "paths": [str(path)]}, "model": {"name": "curate-tiny", "from_scratch": True},
        "train": {"steps": 1, "batch_size": 16}, "output_dir": str(tmp_path / "out")})
    with pytest.raises(ConfigError, match="8 usable pairs are fewer than one batch of 16"):
        train_dfn(cfg)
