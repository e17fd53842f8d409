"""filter: apply a declarative YAML spec to a pool, writing subsets/<name>/.

The stage `Filter` (run target `filter/<subset>`), over the download shards:
1. cut-offs (`ctx.gather`, results back to the driver): for every top_fraction/bottom_fraction,
   gather its column (exact) or a fixed-size histogram (approximate) from every shard and compute
   the global threshold; only the columns the fractions rank (and, for `within: survivors`, the
   earlier conditions') are read; k-means points for a training image_clusters are gathered the
   same way;
2. apply (`ctx.run_pass`, pass "apply"): per shard, line up the needed score/shard columns by uid
   (no join when a score table's uid column equals the shard's, a hash join otherwise), evaluate
   all conditions vectorised, write the kept uids and per-condition funnel counts. The pass's
   fingerprint holds the spec, the cut-offs, the resources' digests and the dedup tables' content,
   so a change of any of them redoes every shard and nothing else does.
Then the driver merges the parts into uids.parquet, DataComp's uids.npy and funnel.json.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import layout, runner
from curate.config import FilterConfig
from curate.errors import ConfigError, PoolError
from curate.names import check_name
from curate.pool import Pool
from curate.population import population_ids
from curate.stage import Pass, Stage, StageContext, fingerprint_of
from curate.stages.filter import quantiles
from curate.stages.filter.check import check_against_pool, check_survivors_placement
from curate.stages.filter.columns import ColumnCatalog, load_shard_columns, read_catalog
from curate.stages.filter.evaluate import (
    EvalContext,
    Evaluator,
    band_rows,
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
from curate.stages.filter.spec import ClusterCondition, FilterSpec, SourceMap, iter_conditions, load_spec
from curate.uid import sorted_uids_and_npy, uids_to_npy_array

STAGE = "filter"
APPLY_PASS = "apply"

__all__ = ["APPLY_PASS", "STAGE", "Filter", "FilterSettings", "filter_shard", "prepare", "run"]


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
    spec, sources, catalog, _ = _prepare(pool, spec_path, name)
    return spec, sources, catalog


def _prepare(pool: Pool, spec_path: str | Path,
             name: str | None) -> tuple[FilterSpec, SourceMap, ColumnCatalog, dict[str, str]]:
    """`prepare`, and the embeddings tables image_clusters conditions read (listed once, here)."""
    spec, sources = load_spec(spec_path)
    if name:
        spec = spec.model_copy(update={"name": check_name(name, "filter: subset name")})
    check_survivors_placement(spec, sources)
    check_training_placement(spec, sources)
    catalog = read_catalog(pool)
    check_against_pool(spec, sources, catalog)
    return spec, sources, catalog, embedding_sources(spec, pool, sources)


def _read_duplicates(pool: Pool, methods: set[str]) -> dict[str, pa.Array]:
    out = {}
    for method in sorted(methods):
        table = pool.read_parquet(layout.dedup_table(method), columns=["uid", "is_duplicate"])
        out[method] = table.filter(pc.fill_null(table["is_duplicate"], False))["uid"].combine_chunks()
    return out


def _uids_digest(uids: pa.Array) -> str:
    """A digest of a uid set's content, whatever order its file holds it in."""
    ordered = pc.take(uids, pc.sort_indices(uids)) if len(uids) else uids
    h = hashlib.blake2b(digest_size=16)
    h.update(str(len(ordered)).encode())
    for buf in ordered.buffers()[1:]:
        if buf is not None:
            h.update(memoryview(buf))
    return h.hexdigest()


# ------------------------------------------------------------------------------- pass 1: cut-offs


def gather_shard(pool: Pool, shard_id: str, which: list[int], settings: FilterSettings) -> dict[int, np.ndarray]:
    """One shard's contribution to the cut-offs of fractions `which`: values, or histograms."""
    table, _ = load_shard_columns(pool, shard_id, fraction_columns(settings.spec, which), settings.sources)
    values = fraction_values(settings.spec, settings.ctx, table, which)
    if settings.approximate:
        return {k: quantiles.histogram(v) for k, v in values.items()}
    return values


def _gather(ctx: StageContext, name: str, fn: Any, shards: list[str], settings: FilterSettings, which: list[int],
            what: str) -> dict[int, list[np.ndarray]]:
    """fn(pool, shard, which, settings) for every shard; the parts of each key come back in shard order."""
    parts = ctx.gather(Pass(name, fn, {sid: which for sid in shards}, settings), what)
    return {k: [part[k] for part in parts] for k in which}


def gather_band_shard(pool: Pool, shard_id: str, bands: dict[int, quantiles.Band],
                      settings: FilterSettings) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """One shard's best rows inside each count cut's band (the tie pass of top_count/bottom_count)."""
    table, _ = load_shard_columns(pool, shard_id, fraction_columns(settings.spec, list(bands)), settings.sources)
    return band_rows(settings.spec, settings.ctx, table, bands)


def compute_cutoffs(ctx: StageContext, shards: list[str], settings: FilterSettings) -> dict[int, quantiles.Cutoff]:
    """Resolve every rank cut's cut-off; `within: survivors` ones wait for the cut-offs before them.
    A count cut whose count-th best value is not the last of the population takes one more pass, in
    which each shard returns its best rows at that value (or approximate bin) with their uids."""
    fractions = fraction_conditions(settings.spec)
    deps = fraction_dependencies(settings.spec)
    cutoffs = settings.ctx.cutoffs
    while len(cutoffs) < len(fractions):
        ready = [k for k in range(len(fractions)) if k not in cutoffs and deps[k] <= set(cutoffs)]
        parts = _gather(ctx, "cutoffs", gather_shard, shards, settings, ready, "cut-offs")
        bands: dict[int, quantiles.Band] = {}
        populations: dict[int, int] = {}
        for k in ready:
            cond = fractions[k]
            top = cond.op.startswith("top_")
            if settings.approximate:
                counts = np.sum(parts[k], axis=0) if parts[k] else np.zeros(quantiles.BINS + 1, np.int64)
                populations[k] = int(counts.sum())
                cut = (quantiles.approximate_band(counts, cond.value, top) if cond.is_count
                       else quantiles.approximate_cutoff(counts, cond.value, top))
            else:
                values = np.concatenate(parts[k]) if parts[k] else np.empty(0)
                populations[k] = len(values)
                cut = (quantiles.exact_band(values, cond.value, top) if cond.is_count
                       else quantiles.exact_cutoff(values, cond.value, top))
            if isinstance(cut, quantiles.Band):
                bands[k] = cut
            else:
                cutoffs[k] = cut
        if bands:
            got = ctx.gather(Pass("cutoff_ties", gather_band_shard, {sid: bands for sid in shards}, settings),
                             "count cut ties")
            for k, band in bands.items():
                cutoffs[k] = quantiles.count_cutoff(band, [part[k][0] for part in got], [part[k][1] for part in got],
                                                    populations[k], fractions[k].value)
    return cutoffs


# ------------------------------------------------------------------------------- pass 2: apply


def filter_shard(pool: Pool, shard_id: str, payload: Any, settings: FilterSettings) -> dict[str, Any]:
    """Evaluate the spec on one shard; write its kept uids; return funnel counts."""
    spec = settings.spec
    table, not_downloaded = load_shard_columns(pool, shard_id, needed_columns(spec), settings.sources)
    masks = Evaluator(spec, settings.ctx).top_masks(table)
    keep = combine(masks, table.num_rows)
    kept_uids = pa.table({"uid": table["uid"].filter(pa.array(keep))})
    pool.write_parquet(layout.subset_part(settings.subset, shard_id), kept_uids)
    kept = int(keep.sum())
    counts: dict[str, int] = {"kept": kept, "removed": table.num_rows - kept, "not downloaded": not_downloaded}
    counts.update(missing_counts(spec, table))
    return {"samples": table.num_rows, "counts": counts, "funnel": funnel_counts(masks, table.num_rows)}


def _cutoff_report(spec: FilterSpec, cutoffs: dict[int, quantiles.Cutoff], approximate: bool) -> list[dict[str, Any]]:
    out = []
    for k, cond in enumerate(fraction_conditions(spec)):
        cut = cutoffs[k]
        row = {
            "condition": cond.label(), "column": cond.subject, "op": cond.op,
            "count" if cond.is_count else "fraction": cond.value,
            "within": cond.within or "pool", "threshold": cut.threshold, "population": cut.population,
            "target": cut.target, "approximate": approximate, "rank_error_bound": cut.rank_error_bound,
        }
        if cond.is_count:
            row["tie_uid"] = cut.tie_uid  # rows at the threshold are kept when uid <= tie_uid (None: all)
        out.append(row)
    return out


def _subset_name(config: FilterConfig) -> str:
    if not config.spec:
        raise ConfigError("filter: no spec given (set filter.spec in the pipeline YAML or pass --spec)")
    return config.name or load_spec(config.spec)[0].name


class Filter(Stage):
    """Gathers (k-means points, cut-offs), then one pass, `apply`: each shard → subsets/<name>/parts/<shard>.parquet;
    the driver merges the parts into the subset."""

    name = STAGE
    config_class = FilterConfig
    # Rows come from shards/ or, on an imported pool, metadata/ (the population); the spec decides
    # which other tables (`prepare` checks its columns against the pool before any work).
    reads = ("population", "scores", "embeddings", "dedup")
    writes = ("subsets",)

    def key(self, config: FilterConfig) -> str:
        return layout.stage_key(self.name, _subset_name(config))

    def requires(self, config: FilterConfig) -> tuple[str, ...]:
        if not config.spec:
            return ("population",)
        spec, _ = load_spec(config.spec)
        needs = ["population"]
        if dedup_methods(spec):
            needs.append("dedup")
        if any(isinstance(c, ClusterCondition) for c in iter_conditions(spec.conditions)):
            needs.append("embeddings")
        return tuple(needs)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        config: FilterConfig = ctx.config
        pool = ctx.pool
        assert config.spec  # key() refused a config without one
        spec, _, catalog, embeddings = _prepare(pool, config.spec, config.name)
        shards = population_ids(pool)
        subset = spec.name
        sources = {**catalog.sources, **embeddings}
        settings = FilterSettings(spec=spec, subset=subset, sources=sources, approximate=config.approximate)
        settings.ctx.duplicates = _read_duplicates(pool, dedup_methods(spec))
        resources_report: list[dict[str, Any]] = []
        resource_files: dict[str, bytes] = {}
        if resource_conditions(spec):
            def gather(which: list[int]) -> dict[int, list[np.ndarray]]:
                return _gather(ctx, "kmeans_points", gather_embeddings_shard, shards, settings, which,
                               "k-means points")

            resources_report, resource_files = load_resources(
                spec, settings.ctx, gather,
                cached=lambda k, digest: _trained_centroids(pool, subset, k, digest, ctx.rerun))
        if fraction_conditions(spec):
            compute_cutoffs(ctx, shards, settings)
        cutoffs = _cutoff_report(spec, settings.ctx.cutoffs, config.approximate)

        # Everything a part depends on besides its shard: a change of any redoes every shard.
        fingerprint = {"spec": spec.fingerprint(), "cutoffs": cutoffs, "resources": resources_report,
                       "sources": sources,
                       "duplicates": {m: _uids_digest(a) for m, a in settings.ctx.duplicates.items()}}
        for rel, data in resource_files.items():
            pool.write_bytes(layout.subset_file(subset, rel), data)
        # Read back by `curate stats` (the spec), by the centroid cache (resources) and by
        # `curate download --subset` (the fingerprint); it decides nothing here.
        pool.write_json(layout.subset_spec(subset), {"fingerprint": fingerprint_of(fingerprint),
                                                     "spec_file": str(config.spec),
                                                     "spec": spec.model_dump(by_alias=True, exclude_none=True),
                                                     "resources": resources_report})
        result = ctx.run_pass(Pass(
            APPLY_PASS, filter_shard, {sid: sid for sid in shards}, settings, fingerprint=fingerprint,
            outputs=lambda sid, _payload, _stats: [layout.subset_part(subset, sid)],
        ))
        current = {f"{sid}.parquet" for sid in shards}
        for name in pool.listdir(layout.subset_parts(subset)):
            if name.endswith(".parquet") and name not in current:  # a shard no longer in the pool
                pool.remove(layout.subset_part(subset, name.removesuffix(".parquet")))

        uids, npy = _merge_parts(pool, subset, shards)
        pool.write_parquet(layout.subset_uids(subset), pa.table({"uid": uids}))
        pool.write_bytes(layout.subset_npy(subset), _npy_bytes(npy))
        funnel = build_funnel([c.label() for c in spec.conditions], result.totals, cutoffs)
        if resources_report:
            funnel["resources"] = resources_report
        funnel.update({"spec": subset, "description": spec.description, "spec_file": str(config.spec),
                       "approximate": config.approximate, "shards": len(shards)})
        if funnel["kept"] != len(uids):
            raise PoolError(f"{pool.uri(layout.subset_dir(subset))}: parts hold {len(uids)} uids but shard "
                            f"reports say {funnel['kept']}")
        pool.write_json(layout.subset_funnel(subset), funnel)
        if not ctx.quiet:
            print_funnel(subset, funnel)
        return funnel


def run(pool: Pool, config: FilterConfig, *, ray_address: str | None = None, rerun: bool = False,
        quiet: bool = False) -> dict[str, Any]:
    """Apply config.spec to the pool; returns reports/filter/<name>.json's content: the runner's
    fields and the funnel (also written to subsets/<name>/funnel.json)."""
    return runner.run(Filter(), pool, config, ray_address=ray_address, rerun=rerun, quiet=quiet)


def _trained_centroids(pool: Pool, subset: str, k: int, digest: str, rerun: bool) -> np.ndarray | None:
    """Centroids an earlier run of this subset trained on the same points with the same settings."""
    meta_rel, rel = layout.subset_spec(subset), layout.subset_file(subset, centroids_name(k))
    if rerun or not pool.exists(meta_rel) or not pool.exists(rel):
        return None
    previous = pool.read_json(meta_rel).get("resources") or []
    if k >= len(previous) or previous[k].get("kmeans_points_sha256") != digest:
        return None
    import io

    return np.load(io.BytesIO(pool.read_bytes(rel)), allow_pickle=False)


def _merge_parts(pool: Pool, subset: str, shards: list[str]) -> tuple[pa.Array, np.ndarray]:
    """All kept uids in string order, and DataComp's sorted uids.npy array of them."""
    tables = [pool.read_parquet(layout.subset_part(subset, sid)) for sid in shards]
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
