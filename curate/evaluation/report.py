"""results.json of `curate eval`, and its table on the terminal.

Per arm: each metric's value per seed, mean and sample std. Per curated arm and metric: the paired
difference to its random control of the same size and to the whole pool, with a bootstrap
interval over seeds and evaluation examples (curate.evaluation.compare), and a one-line verdict.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from curate.evaluation.arms import Arm, PoolSamples
from curate.evaluation.config import POOL_ARM, RANDOM_PREFIX, EvalConfig
from curate.evaluation.presets import Preset

METRIC_TITLES = {
    "zeroshot_top1": "zero-shot top-1", "zeroshot_top5": "zero-shot top-5",
    "image_to_text_r1": "image→text R@1", "image_to_text_r5": "image→text R@5",
    "text_to_image_r1": "text→image R@1", "text_to_image_r5": "text→image R@5",
}


def metric_title(key: str) -> str:
    evalset, _, metric = key.rpartition("/")
    return f"{evalset} {METRIC_TITLES.get(metric, metric)}"


def _arm_entries(arms: list[Arm]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for arm in arms:
        entry = out.setdefault(arm.name, {"kind": arm.kind, "source": arm.source, "size": arm.size,
                                          "missing_uids": arm.missing, "control_of": arm.control_of})
        if arm.seed is not None:
            entry["source"] = "uniform sample of the pool, drawn anew per seed"
    return out


def build_results(config: EvalConfig, preset: Preset, arms: list[Arm], runs: dict[tuple[str, int], dict[str, Any]],
                  hits: dict[tuple[str, int], dict[str, np.ndarray]], evalsets: list[Any],
                  contamination: list[dict[str, Any]], samples: PoolSamples, *, seconds: float) -> dict[str, Any]:
    from curate.evaluation.compare import mean_std, paired_bootstrap, verdict

    seeds = list(range(config.seeds))
    entries = _arm_entries(arms)
    metric_keys = sorted({k for r in runs.values() for k in r["metrics"]})
    for name, entry in entries.items():
        per_seed = [runs[(name, s)] for s in seeds]
        kept = ("metrics", "train_seconds", "final_loss", "samples_seen", "undecodable_images", "wall_seconds")
        entry["runs"] = {str(r["seed"]): {k: r.get(k) for k in kept} for r in per_seed}
        entry["metrics"] = {}
        for key in metric_keys:
            values = [r["metrics"][key] for r in per_seed]
            mean, std = mean_std(values)
            entry["metrics"][key] = {"mean": mean, "std": std, "values": values}
        entry["epochs"] = preset.samples_seen / entry["size"]
    comparisons = []
    stats = config.statistics
    for name, entry in entries.items():
        if entry["kind"] != "curated":
            continue
        controls = [(f"{RANDOM_PREFIX}{name}", "random")] if f"{RANDOM_PREFIX}{name}" in entries else []
        controls += [(POOL_ARM, "the pool")] if POOL_ARM in entries else []
        for control, what in controls:
            for key in metric_keys:
                arm_hits = np.stack([hits[(name, s)][key] for s in seeds]).astype(np.float64)
                control_hits = np.stack([hits[(control, s)][key] for s in seeds]).astype(np.float64)
                diff = paired_bootstrap(arm_hits, control_hits, reps=stats.bootstrap_reps, seed=stats.seed,
                                        level=stats.level)
                comparisons.append({
                    "arm": name, "against": control, "metric": key, "difference_pp": diff.mean,
                    "ci_low_pp": diff.low, "ci_high_pp": diff.high, "level": stats.level,
                    "significant": bool(diff.low > 0 or diff.high < 0),
                    "verdict": verdict(diff, what=what, metric=metric_title(key)),
                })
    return {
        "name": config.name, "pool": config.pool, "pool_samples": len(samples), "pool_counts": samples.counts,
        "preset": {"name": config.preset, **preset.model_dump()}, "steps": preset.samples_seen // preset.batch_size,
        "seeds": seeds, "statistics": stats.model_dump(),
        "evalsets": {es.name: {"path": str(es.path), "tasks": list(es.tasks), "images": len(es.images),
                               "classes": len(es.classnames or [])} for es in evalsets},
        "contamination": contamination, "arms": entries, "comparisons": comparisons,
        "headline": [c for c in comparisons if c["metric"].endswith(("zeroshot_top1", "zeroshot_top5"))],
        "seconds": seconds,
    }


def print_results(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    arms = results["arms"]
    keys = sorted({k for a in arms.values() for k in a["metrics"]})
    shown = [k for k in keys if k.endswith(("zeroshot_top1", "zeroshot_top5", "_r1"))] or keys
    table = Table(title=f"curate eval {results['name']}: {results['preset']['model']}, "
                        f"{results['preset']['samples_seen']:,} samples seen, seeds {results['seeds']}")
    table.add_column("arm")
    table.add_column("samples", justify="right")
    for key in shown:
        table.add_column(metric_title(key) + " %", justify="right")
    for name, arm in arms.items():
        table.add_row(name, f"{arm['size']:,}", *(f"{arm['metrics'][k]['mean']:.1f} ± {arm['metrics'][k]['std']:.1f}"
                                                    for k in shown))
    console.print(table)
    for c in results["headline"]:
        console.print(f"  {c['arm']} vs {c['against']}: {c['verdict']}")
    console.print(f"  results: {results['pool']}/evals/{results['name']}/results.json "
                  f"({results['seconds']:.0f}s)")
