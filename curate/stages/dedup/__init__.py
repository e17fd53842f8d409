"""Dedup stage: exact, perceptual and semantic duplicates, and evaluation-set decontamination.

`run(pool, config)` runs every configured method in order; each writes dedup/<name>.parquet
(uid, group, is_duplicate + the method's score columns) and its statistics go to
reports/dedup.json under `methods`. Each method is one or more passes of the runner, named
`<name>/<pass>` (markers `_done/dedup/<name>/<pass>/`); its last pass, `<name>/groups`, holds
the method's statistics and the fingerprint of its config and inputs, so a method finished with
the same config and inputs is skipped and a changed one is redone, alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from curate import layout, runner
from curate.config import DecontaminateDedup, DedupConfig, ExactDedup, PerceptualDedup, SemanticDedup
from curate.errors import ConfigError, CurateError
from curate.pool import Pool
from curate.progress import console
from curate.stage import Stage, StageContext
from curate.stages.dedup.decontaminate import run_decontaminate
from curate.stages.dedup.exact import run_exact
from curate.stages.dedup.perceptual import run_perceptual
from curate.stages.dedup.semantic import run_semantic

STAGE = "dedup"

__all__ = ["STAGE", "Dedup", "run", "run_method"]

_METHODS: dict[type, Callable[[StageContext, Any], dict[str, Any]]] = {
    ExactDedup: run_exact, PerceptualDedup: run_perceptual, SemanticDedup: run_semantic,
    DecontaminateDedup: run_decontaminate,
}
_TABLES = {"exact": ("shards",), "perceptual": ("scores",), "semantic": ("embeddings",),
           "decontaminate": ("embeddings",)}


def run_method(ctx: StageContext, method: Any) -> dict[str, Any]:
    """Run (or skip, when finished with this config and these inputs) one method; returns its statistics."""
    for kind, fn in _METHODS.items():
        if isinstance(method, kind):
            return fn(ctx, method)
    raise TypeError(f"unknown dedup method {type(method).__name__}")


def _selected(config: DedupConfig, only: list[str] | None) -> list[Any]:
    if only:
        unknown = sorted(set(only) - {m.output_name for m in config.methods})
        if unknown:
            raise ConfigError(f"dedup: no configured method named {unknown}; configured: "
                              f"{[m.output_name for m in config.methods]}")
    return [m for m in config.methods if not only or m.output_name in only]


class Dedup(Stage):
    """Every configured method (or those `only` names), in order, each as its own passes."""

    name = STAGE
    config_class = DedupConfig
    reads = ("shards", "scores", "embeddings")
    writes = ("dedup",)

    def requires(self, config: DedupConfig) -> tuple[str, ...]:
        needed = {t for m in config.methods for t in _TABLES[m.method]}
        needed |= {"scores" for m in config.methods if m.keep == "highest_score"}
        return tuple(t for t in self.reads if t in needed)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        pool = ctx.pool
        methods = _selected(ctx.config, ctx.options.get("only"))
        if ctx.rerun or ctx.options.get("rerun_methods"):
            # Only the selected methods: `--rerun --only x` leaves the others' results and markers.
            for method in methods:
                pool.remove(layout.stage_markers(layout.stage_key(STAGE, method.output_name)), recursive=True)
                pool.remove(layout.dedup_work(method.output_name), recursive=True)
        report_methods = _previous_methods(pool)
        for method in methods:
            name = method.output_name
            if not ctx.quiet:
                console.print(f"[dedup] {name}: {method.method} …", markup=False)
            stats = run_method(ctx, method)
            report_methods[name] = stats
            if not ctx.quiet:
                _print_summary(name, stats)
        return {"methods": report_methods}


def _previous_methods(pool: Pool) -> dict[str, Any]:
    """Methods of earlier runs (other `--only` selections) stay listed in reports/dedup.json."""
    try:
        previous = pool.read_report(STAGE) or {}
    except CurateError:
        return {}  # a damaged report is rewritten, not a reason to fail
    methods = previous.get("methods") if isinstance(previous, dict) else None
    return dict(methods) if isinstance(methods, dict) else {}


def run(pool: Pool, config: DedupConfig, *, ray_address: str | None = None, rerun: bool = False,
        only: list[str] | None = None, quiet: bool = False) -> dict[str, Any]:
    """Run the configured methods (or those named in `only`); returns the report written to reports/dedup.json.

    `rerun` redoes the selected methods only (the runner's own --rerun would clear every method's markers)."""
    return runner.run(Dedup(), pool, config, ray_address=ray_address, quiet=quiet, only=only, rerun_methods=rerun)


def _print_summary(name: str, stats: dict[str, Any]) -> None:
    counts = ", ".join(f"{k}={v:,}" for k, v in sorted(stats["counts"].items()))
    console.print(f"[dedup] {name}: {stats['samples']:,} samples, {stats['duplicate_groups']:,} duplicate groups, "
                  f"{stats['samples_removed']:,} removed ({100 * stats['removed_rate']:.2f}%); {counts}; "
                  f"{stats['seconds']:.1f}s", markup=False)


def summary_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True)
