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
from curate.names import check_name
from curate.pool import Pool
from curate.poollock import locked
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
    resource_conditions,
)
from curate.stages.filter.funnel import build_funnel, print_funnel
from curate.stages.filter.resources import (
    centroids_name,
    check_training_placement,
    embedding_sources,
    gather_embeddings_shard,
    load_resources,
)
from curate.stages.filter.spec import FilterSpec, SourceMap, load_spec
from curate.uid import sorted_uids_and_npy, uids_to_npy_array

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
        spec = spec.model_copy(update={"name": check_name(name, "filter: subset name")})
    check_survivors_placement(spec, sources)
    check_training_placement(spec, sources)
    catalog = read_catalog(pool)
    check_against_pool(spec, sources, catalog)
    embedding_sources(spec, pool, sources)
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
                ray_address: str | None, quiet: bool, fn: Any = gather_shard,
                what: str = "cut-offs") -> dict[int, list[np.ndarray]]:
    """Run fn (gather_shard) on every shard (Ray tasks, or in-process with CURATE_EXECUTOR=local);
    the parts of each key come back in shard order."""
    by_shard: dict[int, dict[int, np.ndarray]] = {}
    started = time.time()

    def collect(position: int, result: dict[int, np.ndarray]) -> None:
        by_shard[position] = result
        done = len(by_shard)
        if not quiet and (done == len(shards) or done % max(1, len(shards) // 10) == 0):
            console.print(f"[filter] {what}: {done}/{len(shards)} shards read ({time.time() - started:.1f}s)",
                          markup=False)

    if os.environ.get("CURATE_EXECUTOR") == "local":
        for i, sid in enumerate(shards):
            collect(i, fn(pool, sid, settings, which))
    else:
        import ray

        from curate.runtime import ensure_ray

        ensure_ray(ray_address)
        remote = ray.remote(fn).options(num_cpus=1, max_retries=2, retry_exceptions=True)
        settings_ref = ray.put(settings)
        pending = {remote.remote(pool, sid, settings_ref, which): i for i, sid in enumerate(shards)}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            collect(pending.pop(ready[0]), ray.get(ready[0]))
    # Shard order, not completion order: k-means training depends on the order of its points.
    return {k: [by_shard[i][k] for i in range(len(shards))] for k in which}


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
                counts = np.sum(parts[k], axis=0) if parts[k] else np.zeros(quantiles.BINS + 1, np.int64)
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


@locked("filter")
def run(pool: Pool, config: FilterConfig, *, ray_address: str | None = None, rerun: bool = False,
        quiet: bool = False) -> dict[str, Any]:
    """Apply config.spec to the pool; returns the funnel (also written to subsets/<name>/funnel.json)."""
    if not config.spec:
        raise ConfigError("filter: no spec given (set filter.spec in the pipeline YAML or pass --spec)")
    spec, source_map, catalog = prepare(pool, config.spec, config.name)
    shards = population_ids(pool)
    subset = spec.name
    sources = {**catalog.sources, **embedding_sources(spec, pool, source_map)}
    settings = FilterSettings(spec=spec, subset=subset, sources=sources, approximate=config.approximate)
    settings.ctx.duplicates = _read_duplicates(pool, dedup_methods(spec))
    resources_report: list[dict[str, Any]] = []
    resource_files: dict[str, bytes] = {}
    meta_rel = f"subsets/{subset}/spec.json"
    if resource_conditions(spec):
        def gather(which: list[int]) -> dict[int, list[np.ndarray]]:
            return _gather_all(pool, shards, settings, which, ray_address, quiet, fn=gather_embeddings_shard,
                               what="k-means points")

        resources_report, resource_files = load_resources(
            spec, settings.ctx, gather, cached=lambda k, digest: _trained_centroids(pool, subset, k, digest, rerun))
    if fraction_conditions(spec):
        compute_cutoffs(pool, shards, settings, ray_address, quiet)
    cutoffs = _cutoff_report(spec, settings.ctx.cutoffs, config.approximate)

    # A changed spec, cut-off or dedup table must not resume from parts of an earlier run.
    stage = f"filter/{subset}"
    fingerprint = _fingerprint(spec, [*cutoffs, *resources_report], settings.ctx.duplicates)
    previous = pool.read_json(meta_rel).get("fingerprint") if pool.exists(meta_rel) else None
    if rerun or previous != fingerprint:
        pool.clear_stage(stage)
        pool.remove(f"subsets/{subset}", recursive=True)
    for rel, data in resource_files.items():
        pool.write_bytes(f"subsets/{subset}/{rel}", data)
    pool.write_json(meta_rel, {"fingerprint": fingerprint, "spec_file": str(config.spec),
                               "spec": spec.model_dump(by_alias=True, exclude_none=True),
                               "resources": resources_report})

    result = run_stage(stage, pool, filter_shard, {sid: sid for sid in shards}, settings,
                       ray_address=ray_address, quiet=quiet,
                       outputs=lambda sid, _payload, _stats: [_part_rel(subset, sid)])
    result.raise_for_failures()

    uids, npy = _merge_parts(pool, subset, shards)
    pool.write_parquet(f"subsets/{subset}/uids.parquet", pa.table({"uid": uids}))
    buf = _npy_bytes(npy)
    pool.write_bytes(f"subsets/{subset}/uids.npy", buf)
    funnel = build_funnel([c.label() for c in spec.conditions], result.report["totals"], cutoffs)
    if resources_report:
        funnel["resources"] = resources_report
    funnel.update({"spec": subset, "description": spec.description, "spec_file": str(config.spec),
                   "approximate": config.approximate, "shards": len(shards)})
    if funnel["kept"] != len(uids):
        raise PoolError(f"subsets/{subset}: parts hold {len(uids)} uids but shard reports say {funnel['kept']}")
    pool.write_json(f"subsets/{subset}/funnel.json", funnel)
    if not quiet:
        print_funnel(subset, funnel)
    return funnel


def _trained_centroids(pool: Pool, subset: str, k: int, digest: str, rerun: bool) -> np.ndarray | None:
    """Centroids an earlier run of this subset trained on the same points with the same settings."""
    meta_rel, rel = f"subsets/{subset}/spec.json", f"subsets/{subset}/{centroids_name(k)}"
    if rerun or not pool.exists(meta_rel) or not pool.exists(rel):
        return None
    previous = pool.read_json(meta_rel).get("resources") or []
    if k >= len(previous) or previous[k].get("kmeans_points_sha256") != digest:
        return None
    import io

    return np.load(io.BytesIO(pool.read_bytes(rel)), allow_pickle=False)


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
