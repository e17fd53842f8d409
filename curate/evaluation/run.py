"""`curate eval`: train one proxy model per arm and seed at equal compute, evaluate, compare.

    read the pool's downloaded samples → resolve the arms (curated, random-same-size, pool)
    → check every input before any training (evaluation sets, disjointness, arm sizes)
    → for each seed, for each arm: write the arm's samples, train (resumable), evaluate
    → per arm mean ± std, per curated arm the paired difference to its controls → results.json

Every finished run leaves `runs/<arm>/seed-<s>/metrics.json` carrying the fingerprint of what it
depends on (preset, seed, the arm's uids, the evaluation sets); a rerun skips those and resumes an
unfinished run from its newest checkpoint, so a killed evaluation loses at most a checkpoint
interval of one run.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np

from curate import layout
from curate.errors import ConfigError
from curate.evaluation.arms import (
    Arm,
    PoolSamples,
    arm_digest,
    arm_table,
    curated_arm,
    pool_arm,
    random_control,
    read_pool_samples,
)
from curate.evaluation.config import EvalConfig
from curate.evaluation.contamination import check_disjoint, pool_hashes
from curate.evaluation.presets import Preset
from curate.pool import Pool
from curate.progress import console

# Metrics whose per-example hits are kept: zero-shot accuracy and retrieval recall.
COMPARED = ("zeroshot_top1", "zeroshot_top5", "image_to_text_r1", "image_to_text_r5",
            "text_to_image_r1", "text_to_image_r5")
HEADLINE = ("zeroshot_top1", "zeroshot_top5")


def _say(message: str, quiet: bool) -> None:
    if not quiet:
        console.print(f"[eval] {message}")


def plan_arms(config: EvalConfig, pool: Pool, samples: PoolSamples, preset: Preset) -> list[Arm]:
    """Every (arm, seed-specific control) of the evaluation, checked for size before any training."""
    curated = [curated_arm(pool, samples, spec) for spec in config.arms]
    names = [a.name for a in curated]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"eval: two arms are both named {dupes[0]!r}; give each a `name:`")
    arms: list[Arm] = list(curated)
    if config.controls.random_same_size:
        for arm in curated:
            arms += [random_control(arm, len(samples), seed, config.statistics.seed) for seed in range(config.seeds)]
    if config.controls.full_pool:
        arms.append(pool_arm(samples))
    small = [a for a in arms if a.size < preset.batch_size]
    if small:
        listed = ", ".join(f"{a.name} has {a.size}" for a in small if a.seed in (None, 0))
        raise ConfigError(f"eval: arms smaller than one batch of {preset.batch_size} cannot be trained at equal "
                          f"compute ({listed} samples); lower train.batch_size or use a larger subset")
    return arms


def _fingerprint(preset: Preset, seed: int, digest: str, evalsets: dict[str, Any]) -> str:
    blob = json.dumps({"preset": preset.model_dump(), "seed": seed, "arm": digest, "evalsets": evalsets},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def evaluate_model(model_dir: str, evalsets: list[Any], device: str) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Every metric of one trained model on every evaluation set, and the per-example hits behind them."""
    from curate.evaluation.metrics import retrieval, zeroshot
    from curate.models.loading import load_clip

    clip = load_clip(model_dir, device=device)
    values: dict[str, float] = {}
    hits: dict[str, np.ndarray] = {}
    for es in evalsets:
        if "zeroshot" in es.tasks:
            zs = zeroshot(clip, es)
            for k, arr in (("zeroshot_top1", zs.correct_top1), ("zeroshot_top5", zs.correct_top5)):
                values[f"{es.name}/{k}"] = float(np.mean(arr)) * 100
                hits[f"{es.name}/{k}"] = np.asarray(arr, bool)
        if "retrieval" in es.tasks:
            rt = retrieval(clip, es)
            for k, arr in (("image_to_text_r1", rt.i2t_hit1), ("image_to_text_r5", rt.i2t_hit5),
                           ("text_to_image_r1", rt.t2i_hit1), ("text_to_image_r5", rt.t2i_hit5)):
                values[f"{es.name}/{k}"] = float(np.mean(arr)) * 100
                hits[f"{es.name}/{k}"] = np.asarray(arr, bool)
    return values, hits


def _write_npz(pool: Pool, rel: str, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k.replace("/", "|"): v for k, v in arrays.items()})
    pool.write_bytes(rel, buf.getvalue())


def _read_npz(pool: Pool, rel: str) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(pool.read_bytes(rel))) as data:
        return {k.replace("|", "/"): data[k] for k in data.files}


def run_one(config: EvalConfig, pool: Pool, samples: PoolSamples, arm: Arm, seed: int, preset: Preset,
            evalsets: list[Any], identities: dict[str, Any], device: str, *, quiet: bool,
            stop_at_step: int | None, on_train: Callable[[Arm, int], None] | None = None) -> dict[str, Any] | None:
    """Train and evaluate one (arm, seed); None when stopped early (stop_at_step, for resume tests)."""
    from curate.evaluation.train import train_config, train_run

    digest = arm_digest(samples, arm)
    fp = _fingerprint(preset, seed, digest, identities)
    metrics_rel = layout.eval_run_metrics(config.name, arm.name, seed)
    if pool.exists(metrics_rel):
        done = pool.read_json(metrics_rel)
        if done.get("fingerprint") == fp and pool.exists(layout.eval_run_hits(config.name, arm.name, seed)):
            return done
    data_rel = layout.eval_arm_data(config.name, f"{arm.data_name()}-{digest}")
    if not pool.exists(data_rel):
        pool.write_parquet(data_rel, arm_table(samples, arm), compression="none")
    run_dir = pool.path(layout.eval_run_dir(config.name, arm.name, seed))
    cfg = train_config(preset, pool.path(data_rel), run_dir, seed, config.scaling)
    started = time.perf_counter()
    if on_train is not None:
        on_train(arm, seed)
    summary = train_run(cfg, stop_at_step=stop_at_step)
    if not summary.get("model_dir"):
        return None
    values, hits = evaluate_model(summary["model_dir"], evalsets, device)
    _write_npz(pool, layout.eval_run_hits(config.name, arm.name, seed), hits)
    result = {
        "fingerprint": fp, "arm": arm.name, "seed": seed, "samples": arm.size, "digest": digest,
        "metrics": values, "train_seconds": summary.get("seconds"), "final_loss": summary.get("final_loss"),
        # From the step reached: a resumed run's own counts cover only the steps since its resume.
        "samples_seen": int(summary["step"]) * cfg.train.batch_size,
        "undecodable_images": summary.get("counts", {}).get("undecodable_image", 0),
        "wall_seconds": time.perf_counter() - started,
        "model_dir": summary["model_dir"],
    }
    pool.write_json(metrics_rel, result)
    # Optimizer state is only for resuming; the model stays for whoever wants to look at it.
    shutil.rmtree(f"{run_dir}/checkpoints", ignore_errors=True)
    return result


def run_eval(config: EvalConfig, *, quiet: bool = False, stop_at_step: int | None = None,
             on_train: Callable[[Arm, int], None] | None = None) -> dict[str, Any]:
    """The whole evaluation; returns (and writes) results.json's content. `on_train(arm, seed)` is
    called before each run that trains (a hook for tests and progress)."""
    from curate.dfn import require_models
    from curate.evaluation.evalsets import evalset_identity, load_evalset
    from curate.evaluation.report import build_results, print_results

    require_models("curate eval")
    started = time.perf_counter()
    pool = Pool(config.pool)
    if not pool.is_local:
        raise ConfigError(f"eval: {pool.url}: training writes checkpoints beside the pool, so the pool must be a "
                          "local (or mounted) directory")
    try:
        preset = config.resolved_preset()
    except ValueError as exc:
        raise ConfigError(f"eval: {exc}") from exc
    evalsets = [load_evalset(path) for path in config.evalsets]
    names = [es.name for es in evalsets]
    if len(set(names)) != len(names):
        raise ConfigError(f"eval: two evaluation sets are named {names}; their folders need distinct names")
    identities = {es.name: evalset_identity(es.path) for es in evalsets}
    _say(f"{len(evalsets)} evaluation set(s): " + ", ".join(
        f"{es.name} ({len(es.images)} images; {' + '.join(es.tasks)})" for es in evalsets), quiet)
    samples = read_pool_samples(pool)
    arms = plan_arms(config, pool, samples, preset)
    hashes = pool_hashes(samples, config.contamination)
    contamination = [check_disjoint(pool, hashes, es, config.contamination) for es in evalsets]
    _say(f"evaluation sets are disjoint from the pool's {len(samples):,} samples "
         f"(exact and pHash ≤ {config.contamination.phash_max_distance})", quiet)
    steps = preset.samples_seen // preset.batch_size
    # As for training (curate.evaluation.train): the preset's choice unless scaling.use_gpu is given.
    use_gpu = config.scaling.use_gpu if "use_gpu" in config.scaling.model_fields_set else preset.use_gpu
    device = config.device or ("cuda" if use_gpu else "cpu")
    runs = [(arm, seed) for seed in range(config.seeds) for arm in arms if arm.seed in (None, seed)]
    _say(f"{len(runs)} training runs: {preset.model} from scratch, {steps} steps of {preset.batch_size} "
         f"({preset.samples_seen:,} samples seen each), seeds 0-{config.seeds - 1}", quiet)
    results: dict[tuple[str, int], dict[str, Any]] = {}
    for i, (arm, seed) in enumerate(runs, 1):
        epochs = preset.samples_seen / arm.size
        _say(f"run {i}/{len(runs)}: {arm.name} seed {seed}: {arm.size:,} samples ({epochs:.1f} epochs)", quiet)
        done = run_one(config, pool, samples, arm, seed, preset, evalsets, identities, device, quiet=quiet,
                       stop_at_step=stop_at_step, on_train=on_train)
        if done is None:
            _say(f"stopped at step {stop_at_step} of {arm.name} seed {seed}; run again to resume", quiet)
            return {"stopped": True, "arm": arm.name, "seed": seed}
        results[(arm.name, seed)] = done
    hits = {key: _read_npz(pool, layout.eval_run_hits(config.name, *key)) for key in results}
    out = build_results(config, preset, arms, results, hits, evalsets, contamination, samples,
                        seconds=time.perf_counter() - started)
    out["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    pool.write_json(layout.eval_results(config.name), out)
    shutil.rmtree(pool.path(layout.eval_dir(config.name), "data"), ignore_errors=True)
    if not quiet:
        print_results(out)
    return out
