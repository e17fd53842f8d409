"""Dedup stage: exact, perceptual and semantic duplicates, and evaluation-set decontamination.

`run(pool, config)` runs every configured method in order; each writes dedup/<name>.parquet
(uid, group, is_duplicate + the method's score columns) and its statistics go to
reports/dedup.json. A method whose output exists from the same configuration is skipped.
"""

from __future__ import annotations

import json
import time
from typing import Any

from curate.config import DecontaminateDedup, DedupConfig, ExactDedup, PerceptualDedup, SemanticDedup
from curate.pool import Pool
from curate.poollock import locked
from curate.progress import console
from curate.stages.dedup.common import DEDUP_DIR, MethodResult, finish
from curate.stages.dedup.decontaminate import decontaminate
from curate.stages.dedup.exact import exact_dedup
from curate.stages.dedup.perceptual import perceptual_dedup
from curate.stages.dedup.semantic import cleanup, semantic_dedup

STAGE = "dedup"

__all__ = ["STAGE", "run", "run_method"]


def run_method(pool: Pool, method: Any, *, ray_address: str | None = None, rerun: bool = False,
               quiet: bool = False) -> MethodResult:
    if isinstance(method, ExactDedup):
        return exact_dedup(pool, method)
    if isinstance(method, PerceptualDedup):
        return perceptual_dedup(pool, method)
    if isinstance(method, SemanticDedup):
        return semantic_dedup(pool, method, ray_address=ray_address, rerun=rerun, quiet=quiet)
    if isinstance(method, DecontaminateDedup):
        return decontaminate(pool, method, ray_address=ray_address, rerun=rerun, quiet=quiet)
    raise TypeError(f"unknown dedup method {type(method).__name__}")


@locked("dedup")
def run(pool: Pool, config: DedupConfig, *, ray_address: str | None = None, rerun: bool = False,
        only: list[str] | None = None, quiet: bool = False) -> dict[str, Any]:
    """Run the configured methods (or those named in `only`); returns the report written to reports/dedup.json."""
    methods = [m for m in config.methods if not only or m.output_name in only]
    if only:
        unknown = sorted(set(only) - {m.output_name for m in config.methods})
        if unknown:
            from curate.errors import ConfigError

            raise ConfigError(f"dedup: no configured method named {unknown}; configured: "
                              f"{[m.output_name for m in config.methods]}")
    previous = pool.read_report(STAGE) or {}
    report: dict[str, Any] = {"stage": STAGE, "methods": dict(previous.get("methods", {}))}
    for method in methods:
        name = method.output_name
        fingerprint = method.model_dump(mode="json")
        marker = pool.done_shards(STAGE).get(name)
        if (not rerun and marker is not None and marker.get("config") == fingerprint
                and pool.exists(f"{DEDUP_DIR}/{name}.parquet")):
            if not quiet:
                console.print(f"[dedup] {name}: already done with this configuration; skipped")
            report["methods"][name] = marker
            continue
        started = time.time()
        if not quiet:
            console.print(f"[dedup] {name}: {method.method} …")
        result = run_method(pool, method, ray_address=ray_address, rerun=rerun, quiet=quiet)
        stats = finish(pool, name, result)
        stats.update(method=method.method, keep=method.keep, output=f"{DEDUP_DIR}/{name}.parquet",
                     seconds=round(time.time() - started, 3), config=fingerprint)
        if isinstance(method, SemanticDedup):
            cleanup(pool, method)
        pool.mark_done(STAGE, name, stats)
        report["methods"][name] = stats
        if not quiet:
            _print_summary(name, stats)
    pool.write_report(STAGE, report)
    return report


def _print_summary(name: str, stats: dict[str, Any]) -> None:
    counts = ", ".join(f"{k}={v:,}" for k, v in sorted(stats["counts"].items()))
    console.print(f"[dedup] {name}: {stats['samples']:,} samples, {stats['duplicate_groups']:,} duplicate groups, "
                  f"{stats['samples_removed']:,} removed ({100 * stats['removed_rate']:.2f}%); {counts}; "
                  f"{stats['seconds']:.1f}s")


def summary_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True)
