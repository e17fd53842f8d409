"""filter: apply a declarative YAML spec to a pool, writing subsets/<name>/.

Two passes over the download shards, both Ray tasks:
1. cut-offs: for every top_fraction/bottom_fraction, gather its column (exact) or a fixed-size
   histogram (approximate) from every shard and compute the global threshold; only the columns
   the fractions rank (and, for `within: survivors`, the earlier conditions') are read;
2. apply: per shard, line up the needed score/shard columns by uid (no join when a score table's
   uid column equals the shard's, a hash join otherwise), evaluate all conditions vectorised,
   write the kept uids and per-condition funnel counts.
Then the driver merges the parts into uids.parquet, DataComp's uids.npy and funnel.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.errors import ConfigError, PoolError
from curate.pool import Pool
from curate.population import population_ids
from curate.progress import console
from curate.runner import run_stage
from curate.stages.filter import quantiles
from curate.stages.filter.check import check_against_pool, check_survivors_placement
from curate.stages.filter.columns import ColumnCatalog, load_shard_columns, read_catalog
from curate.stages.filter.evaluate import (
    EvalContext,
    Evaluator,
    combine,
    dedup_methods,
    fraction_columns,
    fraction_conditions,
    fraction_dependencies,
    fraction_values,
    funnel_counts,
    missing_counts,
    needed_columns,
)
from curate.stages.filter.funnel import build_funnel, print_funnel
from curate.stages.filter.spec import FilterSpec, SourceMap, load_spec
from curate.stages.filter.uidkeys import sorted_uids_and_npy
from curate.uid import uids_to_npy_array

if TYPE_CHECKING:  # shard tasks unpickle this package; curate.config would cost each Ray worker seconds of imports
    from curate.config import FilterConfig

__all__ = ["FilterSettings", "filter_shard", "prepare", "run"]


@dataclass
class FilterSettings:
    """Everything a shard task needs; pickled once and shared by all tasks."""

    spec: FilterSpec
    subset: str
    sources: dict[str, str]
    ctx: EvalContext = field(default_factory=EvalContext)
    approximate: bool = False


def prepare(pool: Pool, spec_path: str | Path, name: str | None = None) -> tuple[FilterSpec, SourceMap, ColumnCatalog]:
    """Load, validate and check a spec against the pool, reading only schemas."""
    spec, sources = load_spec(spec_path)
    if name:
        spec = spec.model_copy(update={"name": name})
    check_survivors_placement(spec, sources)
    catalog = read_catalog(pool)
    check_against_pool(spec, sources, catalog)
    return spec, sources, catalog


def _read_duplicates(pool: Pool, methods: set[str]) -> dict[str, pa.Array]:
    out = {}
    for method in sorted(methods):
        table = pool.read_parquet(f"dedup/{method}.parquet", columns=["uid", "is_duplicate"])
        out[method] = table.filter(pc.fill_null(table["is_duplicate"], False))["uid"].combine_chunks()
    return out


# ------------------------------------------------------------------------------- pass 1: cut-offs


def gather_shard(pool: Pool, shard_id: str, settings: FilterSettings, which: list[int]) -> dict[int, np.ndarray]:
    """One shard's contribution to the cut-offs of fractions `which`: values, or histograms."""
    table, _ = load_shard_columns(pool, shard_id, fraction_columns(settings.spec, which), settings.sources)
    values = fraction_values(settings.spec, settings.ctx, table, which)
    if settings.approximate:
        return {k: quantiles.histogram(v) for k, v in values.items()}
    return values


def _gather_all(pool: Pool, shards: list[str], settings: FilterSettings, which: list[int],
                ray_address: str | None, quiet: bool) -> dict[int, list[np.ndarray]]:
    """Run gather_shard on every shard (Ray tasks, or in-process with CURATE_EXECUTOR=local)."""
    parts: dict[int, list[np.ndarray]] = {k: [] for k in which}
    started, done = time.time(), 0

    def collect(result: dict[int, np.ndarray]) -> None:
        nonlocal done
        for k, arr in result.items():
            parts[k].append(arr)
        done += 1
        if not quiet and (done == len(shards) or done % max(1, len(shards) // 10) == 0):
            console.print(f"[filter] cut-offs: {done}/{len(shards)} shards read ({time.time() - started:.1f}s)",
                          markup=False)

    if os.environ.get("CURATE_EXECUTOR") == "local":
        for sid in shards:
            collect(gather_shard(pool, sid, settings, which))
        return parts
    import ray

    from curate.runtime import ensure_ray

    ensure_ray(ray_address)
    remote = ray.remote(gather_shard).options(num_cpus=1, max_retries=2, retry_exceptions=True)
    settings_ref = ray.put(settings)
    pending = [remote.remote(pool, sid, settings_ref, which) for sid in shards]
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        collect(ray.get(ready[0]))
    return parts


def compute_cutoffs(pool: Pool, shards: list[str], settings: FilterSettings, ray_address: str | None = None,
                    quiet: bool = False) -> dict[int, quantiles.Cutoff]:
    """Resolve every fraction's cut-off; `within: survivors` ones wait for the cut-offs before them."""
    fractions = fraction_conditions(settings.spec)
    deps = fraction_dependencies(settings.spec)
    cutoffs = settings.ctx.cutoffs
    while len(cutoffs) < len(fractions):
        ready = [k for k in range(len(fractions)) if k not in cutoffs and deps[k] <= set(cutoffs)]
        parts = _gather_all(pool, shards, settings, ready, ray_address, quiet)
        for k in ready:
            cond = fractions[k]
            top = cond.op == "top_fraction"
            if settings.approximate:
                counts = np.sum(parts[k], axis=0) if parts[k] else np.zeros(quantiles.BINS, np.int64)
                cutoffs[k] = quantiles.approximate_cutoff(counts, cond.value, top)
            else:
                values = np.concatenate(parts[k]) if parts[k] else np.empty(0)
                cutoffs[k] = quantiles.exact_cutoff(values, cond.value, top)
    return cutoffs


# ------------------------------------------------------------------------------- pass 2: apply


def _part_rel(subset: str, shard_id: str) -> str:
    return f"subsets/{subset}/parts/{shard_id}.parquet"


def filter_shard(pool: Pool, shard_id: str, payload: Any, settings: FilterSettings) -> dict[str, Any]:
    """Evaluate the spec on one shard; write its kept uids; return funnel counts."""
    spec = settings.spec
    table, not_downloaded = load_shard_columns(pool, shard_id, needed_columns(spec), settings.sources)
    masks = Evaluator(spec, settings.ctx).top_masks(table)
    keep = combine(masks, table.num_rows)
    pool.write_parquet(_part_rel(settings.subset, shard_id), pa.table({"uid": table["uid"].filter(pa.array(keep))}))
    kept = int(keep.sum())
    counts: dict[str, int] = {"kept": kept, "removed": table.num_rows - kept, "not downloaded": not_downloaded}
    counts.update(missing_counts(spec, table))
    return {"samples": table.num_rows, "counts": counts, "funnel": funnel_counts(masks, table.num_rows)}


def _cutoff_report(spec: FilterSpec, cutoffs: dict[int, quantiles.Cutoff], approximate: bool) -> list[dict[str, Any]]:
    out = []
    for k, cond in enumerate(fraction_conditions(spec)):
        cut = cutoffs[k]
        out.append({
            "condition": cond.label(), "column": cond.column, "op": cond.op, "fraction": cond.value,
            "within": cond.within or "pool", "threshold": cut.threshold, "population": cut.population,
            "target": cut.target, "approximate": approximate, "rank_error_bound": cut.rank_error_bound,
        })
    return out


def _fingerprint(spec: FilterSpec, cutoffs: list[dict[str, Any]], dups: dict[str, pa.Array]) -> str:
    blob = json.dumps({"spec": spec.fingerprint(), "cutoffs": cutoffs,
                       "dups": {m: len(a) for m, a in dups.items()}}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run(pool: Pool, config: FilterConfig, *, ray_address: str | None = None, rerun: bool = False,
        quiet: bool = False) -> dict[str, Any]:
    """Apply config.spec to the pool; returns the funnel (also written to subsets/<name>/funnel.json)."""
    if not config.spec:
        raise ConfigError("filter: no spec given (set filter.spec in the pipeline YAML or pass --spec)")
    spec, _, catalog = prepare(pool, config.spec, config.name)
    shards = population_ids(pool)
    subset = spec.name
    settings = FilterSettings(spec=spec, subset=subset, sources=catalog.sources, approximate=config.approximate)
    settings.ctx.duplicates = _read_duplicates(pool, dedup_methods(spec))
    if fraction_conditions(spec):
        compute_cutoffs(pool, shards, settings, ray_address, quiet)
    cutoffs = _cutoff_report(spec, settings.ctx.cutoffs, config.approximate)

    # A changed spec, cut-off or dedup table must not resume from parts of an earlier run.
    stage = f"filter/{subset}"
    fingerprint = _fingerprint(spec, cutoffs, settings.ctx.duplicates)
    meta_rel = f"subsets/{subset}/spec.json"
    previous = pool.read_json(meta_rel).get("fingerprint") if pool.exists(meta_rel) else None
    if rerun or previous != fingerprint:
        pool.clear_stage(stage)
        pool.remove(f"subsets/{subset}", recursive=True)
    pool.write_json(meta_rel, {"fingerprint": fingerprint, "spec_file": str(config.spec),
                               "spec": spec.model_dump(by_alias=True, exclude_none=True)})

    result = run_stage(stage, pool, filter_shard, {sid: sid for sid in shards}, settings,
                       ray_address=ray_address, quiet=quiet)
    result.raise_for_failures()

    uids, npy = _merge_parts(pool, subset, shards)
    pool.write_parquet(f"subsets/{subset}/uids.parquet", pa.table({"uid": uids}))
    buf = _npy_bytes(npy)
    pool.write_bytes(f"subsets/{subset}/uids.npy", buf)
    funnel = build_funnel([c.label() for c in spec.conditions], result.report["totals"], cutoffs)
    funnel.update({"spec": subset, "description": spec.description, "spec_file": str(config.spec),
                   "approximate": config.approximate, "shards": len(shards)})
    if funnel["kept"] != len(uids):
        raise PoolError(f"subsets/{subset}: parts hold {len(uids)} uids but shard reports say {funnel['kept']}")
    pool.write_json(f"subsets/{subset}/funnel.json", funnel)
    if not quiet:
        print_funnel(subset, funnel)
    return funnel


def _merge_parts(pool: Pool, subset: str, shards: list[str]) -> tuple[pa.Array, np.ndarray]:
    """All kept uids in string order, and DataComp's sorted uids.npy array of them."""
    tables = [pool.read_parquet(_part_rel(subset, sid)) for sid in shards]
    if not tables:
        return pa.array([], pa.string()), uids_to_npy_array([])
    uids = pa.concat_tables(tables)["uid"].combine_chunks()
    fast = sorted_uids_and_npy(uids)
    if fast is not None:
        return fast
    uids = pc.take(uids, pc.sort_indices(uids))
    return uids, uids_to_npy_array(uids)


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()
