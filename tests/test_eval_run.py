"""`curate eval` end to end on a small pool of real (generated) images: arms, controls, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from curate import layout
from curate.demo.web import draw_scene
from curate.errors import ConfigError
from curate.evaluation.config import EvalConfig
from curate.evaluation.evalsets import EvalSample, write_evalset
from curate.evaluation.run import run_eval
from curate.pool import Pool
from curate.shards import SampleRow, ShardWriter
from curate.testing.synthetic import COLORS, SHAPES, ShapeSample, encode, make_samples, mismatched_caption
from curate.uid import make_uid

pytest.importorskip("open_clip")

CLASSES = [f"{c} {s}" for c in COLORS for s in SHAPES]
TEMPLATES = ["a photo of a {c}.", "a {c}."]


def _scenes(n: int, seed: int) -> list[ShapeSample]:
    """Shapes on cluttered backgrounds: plain-background shapes of one colour and kind are the same
    picture to a perceptual hash, which the disjointness check would rightly refuse."""
    rng = np.random.default_rng(seed + 1)
    return [ShapeSample(s.color, s.shape, s.caption, draw_scene(s.color, s.shape, 64, rng))
            for s in make_samples(n, seed=seed)]


def _write_pool(root: Path, n: int = 384, seed: int = 0) -> dict[str, Any]:
    """A pool where half the captions are mismatched: the `clean` subset keeps the matched half."""
    pool = Pool(str(root))
    rng = np.random.default_rng(seed)
    clean, everyone = [], []
    per_shard = n // 2
    for shard in range(2):
        sid = f"{shard:08d}"
        writer = ShardWriter(pool, sid)
        for i, sample in enumerate(_scenes(per_shard, seed=seed * 100 + shard)):
            matched = i % 2 == 0
            caption = sample.caption if matched else mismatched_caption(sample, rng)
            url = f"http://127.0.0.1/{shard}/{i}.jpg"
            uid = make_uid(url, caption)
            everyone.append(uid)
            if matched:
                clean.append(uid)
            writer.add(SampleRow(key=f"{shard:04d}{i:04d}", uid=uid, url=url, caption=caption, status="success",
                                 width=64, height=64, image=encode(sample.image)))
        writer.close({"successes": per_shard})
        pool.write_json(layout.download_marker(sid), {"samples": per_shard})
    pool.write_parquet(layout.subset_uids("clean"), pa.table({"uid": clean}))
    sample_rng = np.random.default_rng(99)
    pool.write_parquet(layout.subset_uids("lucky"),
                       pa.table({"uid": list(sample_rng.choice(everyone, size=len(clean), replace=False))}))
    pool.write_parquet(layout.subset_uids("few"), pa.table({"uid": clean[:5]}))
    return {"pool": pool, "clean": clean, "all": everyone}


def _write_evalset(root: Path, n: int = 96, seed: int = 500) -> Path:
    samples = []
    for i, s in enumerate(_scenes(n, seed=seed)):
        label = CLASSES.index(f"{s.color} {s.shape}")
        samples.append(EvalSample(key=f"e{i:05d}", image=encode(s.image, "PNG"), label=label, captions=[s.caption]))
    write_evalset(root, samples, CLASSES, TEMPLATES)
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("evalpool")
    out = _write_pool(root / "pool")
    out["evalset"] = _write_evalset(root / "shapes-eval")
    return out


def _config(world: dict[str, Any], name: str, subsets: list[str], **extra: Any) -> EvalConfig:
    data = {"name": name, "pool": world["pool"].url, "arms": [{"subset": s} for s in subsets],
            "evalsets": [str(world["evalset"])], "seeds": 2,
            "train": {"samples_seen": 512, "batch_size": 32, "warmup_steps": 2, "lr": 3e-3},
            "statistics": {"bootstrap_reps": 500}}
    data.update(extra)
    return EvalConfig.model_validate(data)


def test_eval_trains_every_arm_at_equal_compute_and_compares(world: dict[str, Any]) -> None:
    out = run_eval(_config(world, "main", ["clean"]), quiet=True)
    arms = out["arms"]
    assert set(arms) == {"clean", "random-clean", "pool"}
    assert arms["clean"]["size"] == arms["random-clean"]["size"] == len(world["clean"])
    assert arms["pool"]["size"] == len(world["all"])
    for arm in arms.values():  # equal compute: every run saw exactly the same number of samples
        assert [r["samples_seen"] for r in arm["runs"].values()] == [512, 512]
        assert set(arm["metrics"]) >= {"shapes-eval/zeroshot_top1", "shapes-eval/zeroshot_top5",
                                       "shapes-eval/image_to_text_r1", "shapes-eval/text_to_image_r1"}
    against = {(c["against"], c["metric"]) for c in out["comparisons"]}
    assert ("random-clean", "shapes-eval/zeroshot_top1") in against and ("pool", "shapes-eval/zeroshot_top5") in against
    for c in out["comparisons"]:
        assert c["ci_low_pp"] <= c["difference_pp"] <= c["ci_high_pp"]
        assert c["verdict"]
    saved = json.loads(Path(world["pool"].path(layout.eval_results("main"))).read_text())
    assert saved["comparisons"] == json.loads(json.dumps(out["comparisons"]))
    assert saved["contamination"][0]["exact_overlap"] == 0 and saved["contamination"][0]["phash_overlap"] == 0
    # A second run finds every run finished and trains nothing.
    trained: list[str] = []
    again = run_eval(_config(world, "main", ["clean"]), quiet=True,
                     on_train=lambda arm, seed: trained.append(arm.name))
    assert trained == []
    assert again["arms"]["clean"]["metrics"] == arms["clean"]["metrics"]
    assert not Path(world["pool"].path("evals/main/data")).exists()


def test_random_subset_shows_no_difference_to_random_control(world: dict[str, Any]) -> None:
    """The control is honest: an arm that is itself a uniform sample does not beat the random control."""
    out = run_eval(_config(world, "fp", ["lucky"], seeds=3, controls={"full_pool": False}), quiet=True)
    headline = [c for c in out["comparisons"] if c["against"] == "random-lucky"]
    assert headline and not any(c["significant"] for c in headline if "zeroshot" in c["metric"])


@pytest.mark.fault("eval", "killed during training", "reruns resume from the newest checkpoint; same final metrics")
def test_killed_eval_resumes_to_the_same_results(world: dict[str, Any]) -> None:
    whole = run_eval(_config(world, "whole", ["clean"], controls={"random_same_size": False, "full_pool": False},
                             seeds=1), quiet=True)
    cfg = _config(world, "split", ["clean"], controls={"random_same_size": False, "full_pool": False}, seeds=1)
    stopped = run_eval(cfg, quiet=True, stop_at_step=5)
    assert stopped["stopped"] and stopped["arm"] == "clean"
    assert not Path(world["pool"].path(layout.eval_results("split"))).exists()
    resumed = run_eval(cfg, quiet=True)
    assert resumed["arms"]["clean"]["metrics"] == whole["arms"]["clean"]["metrics"]
    assert resumed["arms"]["clean"]["runs"]["0"]["samples_seen"] == 512  # the whole run's, not the resumed part's


@pytest.mark.fault("eval", "evaluation set overlaps the pool", "error before any training, naming the images")
def test_overlapping_evalset_is_refused_before_training(world: dict[str, Any], tmp_path: Path) -> None:
    pool: Pool = world["pool"]
    from curate.shards import iter_shard_samples

    leaked = next(iter_shard_samples(pool, "00000000"))
    samples = [EvalSample(key="leak", image=leaked["image"], label=0, captions=["x"])]
    samples += [EvalSample(key=f"ok{i}", image=encode(s.image, "PNG"), label=1, captions=["y"])
                for i, s in enumerate(_scenes(4, seed=777))]
    write_evalset(tmp_path / "leaky", samples, CLASSES, TEMPLATES)
    cfg = _config(world, "leak", ["clean"])
    cfg = cfg.model_copy(update={"evalsets": [str(tmp_path / "leaky")]})
    with pytest.raises(ConfigError, match=r"overlaps the pool.*leak"):
        run_eval(cfg, quiet=True)
    assert not pool.exists("evals/leak/runs")


@pytest.mark.fault("eval", "subset smaller than one batch", "error before any training naming the arm")
def test_subset_too_small_for_the_budget_is_refused(world: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="few has 5"):
        run_eval(_config(world, "small", ["few"]), quiet=True)
    assert not world["pool"].exists("evals/small/runs")


@pytest.mark.fault("eval", "evaluation set without class names", "error before any training")
def test_missing_class_names_is_refused(world: dict[str, Any], tmp_path: Path) -> None:
    bad = _write_evalset(tmp_path / "noclasses", n=8)
    (bad / "classnames.txt").unlink()
    cfg = _config(world, "nonames", ["clean"]).model_copy(update={"evalsets": [str(bad)]})
    with pytest.raises(ConfigError, match="class names"):
        run_eval(cfg, quiet=True)
    assert not world["pool"].exists("evals/nonames/runs")


def test_html_report_gains_an_evaluation_section(world: dict[str, Any]) -> None:
    from curate.stats.collect import evals_info
    from curate.stats.html import _evaluation

    if not world["pool"].exists(layout.eval_results("main")):
        run_eval(_config(world, "main", ["clean"]), quiet=True)
    evals = evals_info(world["pool"])
    assert "main" in evals
    page = _evaluation(evals)
    assert page.count("<svg") == 2 * len(evals)  # zero-shot top-1 and top-5 of the one evaluation set, per eval
    assert "random-clean" in page and "verdict" in page


def test_eval_command_needs_pool_subset_and_evalset(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from curate.cli import app

    done = CliRunner().invoke(app, ["eval", "--pool", str(tmp_path)])
    assert done.exit_code != 0 and "give --subset" in str(done.exception)


@pytest.mark.fault("eval", "evaluation image in the pool under other bytes (CLIP check)",
                   "the decontaminate rule's CLIP cosine finds it; error before training")
def test_clip_contamination_check_finds_a_leak_the_byte_rules_miss(world: dict[str, Any], tmp_path: Path) -> None:
    """The `clip` rule: eval images embedded with the pool's model, searched against embeddings/<name>/.

    The model is a seeded random curate-tiny in the local-directory layout (as tests/test_dedup_decontaminate.py
    uses): untrained, it squeezes every cosine towards 1, so only an image that is in the pool, re-encoded,
    clears a 0.9999 threshold. Exact and pHash rules are switched off so that only the CLIP rule can see it.
    """
    import io

    import open_clip
    import torch
    from PIL import Image

    from curate.models.loading import load_clip
    from curate.models.save import save_clip_dir
    from curate.models.tiny import TINY_MODEL, register_tiny_configs
    from curate.shards import iter_shard_samples
    from curate.stages.dedup.embeddings import embedding_array

    register_tiny_configs()
    torch.manual_seed(0)
    model_dir = save_clip_dir(open_clip.create_model(TINY_MODEL), open_clip.get_model_config(TINY_MODEL),
                              tmp_path / "tiny")
    clip = load_clip(str(model_dir))
    pool: Pool = world["pool"]
    for sid in ("00000000", "00000001"):
        samples = list(iter_shard_samples(pool, sid))
        pixels = torch.stack([clip.preprocess(Image.open(io.BytesIO(s["image"])).convert("RGB")) for s in samples])
        table = pa.table({"uid": [s["uid"] for s in samples],
                          "image_embedding": embedding_array(clip.encode_images(pixels).numpy())})
        pool.write_parquet(f"{layout.embeddings_dir('tiny')}/{sid}.parquet", table)
    leaked = next(iter_shard_samples(pool, "00000001"))
    reencoded = encode(Image.open(io.BytesIO(leaked["image"])).convert("RGB"), "PNG")
    write_evalset(tmp_path / "sneaky", [EvalSample(key="sneaky", image=reencoded, label=0, captions=["x"])],
                  CLASSES, TEMPLATES)
    cfg = _config(world, "sneaky", ["clean"]).model_copy(update={"evalsets": [str(tmp_path / "sneaky")]})
    cfg.contamination = cfg.contamination.model_validate({
        "exact": False, "phash_max_distance": None,
        "clip": {"model": str(model_dir), "embeddings": "tiny", "threshold": 0.9999}})
    with pytest.raises(ConfigError, match=r"sneaky.*CLIP cosine"):
        run_eval(cfg, quiet=True)
    assert not pool.exists("evals/sneaky/runs")
