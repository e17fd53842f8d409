"""Compute the pool statistics (reports/stats.json): every section says whether its tables exist."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import layout
from curate.config import StatsConfig
from curate.pool import Pool
from curate.stats.tables import PoolTables, parquet_rows, read_json_or_none

# Hashes and keys are numbers but their histogram means nothing.
NOT_HISTOGRAMMED = {"phash", "uid", "key"}
SIZE_COLUMNS = ("width", "height", "original_width", "original_height", "aspect_ratio")


def absent(reason: str) -> dict[str, Any]:
    return {"present": False, "absent_reason": reason}


def histogram(values: pa.ChunkedArray | pa.Array, bins: int) -> dict[str, Any]:
    """Counts over `bins` equal-width bins of the finite values; nulls and NaN counted apart."""
    arr = values.to_numpy(zero_copy_only=False) if hasattr(values, "to_numpy") else np.asarray(values)
    arr = np.asarray(arr, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    out: dict[str, Any] = {"n": int(arr.size), "missing": int(arr.size - finite.size)}
    if finite.size == 0:
        return {**out, "counts": [], "edges": []}
    lo, hi = float(finite.min()), float(finite.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(finite, bins=bins, range=(lo, hi))
    q = np.quantile(finite, [0.01, 0.1, 0.5, 0.9, 0.99])
    return {**out, "counts": counts.tolist(), "edges": [float(e) for e in edges], "min": float(finite.min()),
            "max": float(finite.max()), "mean": float(finite.mean()),
            "quantiles": {k: float(v) for k, v in zip(("p01", "p10", "p50", "p90", "p99"), q, strict=True)}}


def value_counts(values: pa.ChunkedArray | pa.Array, top: int | None = None) -> dict[str, int]:
    vc = pc.value_counts(values).to_pylist()
    pairs = sorted(((str(d["values"]), int(d["counts"])) for d in vc), key=lambda kv: (-kv[1], kv[0]))
    if top is not None and len(pairs) > top:
        rest = sum(n for _, n in pairs[top:])
        pairs = [*pairs[:top], ("(other)", rest)]
    return dict(pairs)


def funnel_section(pool: Pool, tables: PoolTables, subsets: dict[str, Any], balanced: dict[str, Any],
                   exports: dict[str, Any]) -> dict[str, Any]:
    stages: list[dict[str, Any]] = []
    candidates = parquet_rows(pool, "candidates")
    stages.append({"stage": "candidates", "rows": candidates, "present": candidates is not None})
    if tables.shards:
        n_rows = tables.shard_rows.num_rows
        n_ok = int(pc.sum(pc.equal(tables.shard_rows["status"], "success")).as_py() or 0)
        stages.append({"stage": "download", "rows": n_ok, "attempted": n_rows, "present": True})
    else:
        stages.append({"stage": "download", "rows": None, "present": False})
    scored = {s: parquet_rows(pool, f"scores/{s}") for s in pool.listdir("scores")}
    stages.append({"stage": "score", "rows": max((v or 0) for v in scored.values()) if scored else None,
                   "per_scorer": scored, "present": bool(scored)})
    dedup = {}
    for name in pool.listdir("dedup"):
        if name.endswith(".parquet"):
            t = pool.read_parquet(f"dedup/{name}", columns=["is_duplicate"])
            dedup[name[: -len(".parquet")]] = {"rows": t.num_rows,
                                               "duplicates": int(pc.sum(t["is_duplicate"]).as_py() or 0)}
    stages.append({"stage": "dedup", "per_method": dedup, "present": bool(dedup),
                   "rows": None})
    stages.append({"stage": "filter", "present": bool(subsets),
                   "per_subset": {k: v["kept"] for k, v in subsets.items()}})
    stages.append({"stage": "balance", "present": bool(balanced),
                   "per_set": {k: v["kept"] for k, v in balanced.items()}})
    stages.append({"stage": "export", "present": bool(exports),
                   "per_export": {k: v.get("samples_written") for k, v in exports.items()}})
    return {"present": True, "stages": stages}


def download_section(pool: Pool, tables: PoolTables, cfg: StatsConfig) -> dict[str, Any]:
    if not tables.shards:
        return absent("no finished download shards (shards/ with _done/download/fetch markers)")
    rows = tables.shard_rows
    status = value_counts(rows["status"])
    failed = rows.filter(pc.not_equal(rows["status"], "success"))
    errors = value_counts(pc.fill_null(failed["error_message"], "(none)"), cfg.top_errors) if failed.num_rows else {}
    total = rows.num_rows
    return {"present": True, "shards": len(tables.shards), "attempted": total, "status": status,
            "success_rate": status.get("success", 0) / total if total else math.nan,
            "top_errors": errors, "report": read_json_or_none(pool, "reports/download.json")}


def scores_section(tables: PoolTables, cfg: StatsConfig) -> dict[str, Any]:
    if not tables.scorers:
        return absent("no score tables (scores/<scorer>/<shard>.parquet)")
    hists: dict[str, Any] = {}
    for scorer, cols in tables.scorers.items():
        for col in cols:
            if col in NOT_HISTOGRAMMED or col in SIZE_COLUMNS or col not in tables.samples.column_names:
                continue
            typ = tables.samples.schema.field(col).type
            if pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ):
                values = pc.cast(tables.samples[col], pa.float64())
                hists[col] = {"scorer": scorer, **histogram(values, cfg.histogram_bins)}
    return {"present": True, "scorers": tables.scorers, "rows": tables.samples.num_rows,
            "sampled": tables.sampled, "histograms": hists}


def language_section(tables: PoolTables) -> dict[str, Any]:
    if "lang" not in tables.samples.column_names:
        return absent("no 'lang' column (add a language scorer)")
    return {"present": True, "counts": value_counts(pc.fill_null(tables.samples["lang"], "(none)"), 25)}


def caption_section(tables: PoolTables, cfg: StatsConfig) -> dict[str, Any]:
    s = tables.samples
    if "caption_num_words" in s.column_names:
        words, chars, source = s["caption_num_words"], s["caption_num_chars"], "text_stats scores"
    elif "caption" in s.column_names:
        captions = pc.fill_null(s["caption"], "")
        chars = pc.utf8_length(captions)
        words = pc.list_value_length(pc.split_pattern_regex(pc.utf8_trim_whitespace(captions), r"\s+"))
        source = "download shard captions"
    else:
        return absent("no captions (no download shards)")
    return {"present": True, "source": source, "words": histogram(pc.cast(words, pa.float64()), cfg.histogram_bins),
            "chars": histogram(pc.cast(chars, pa.float64()), cfg.histogram_bins)}


def image_size_section(tables: PoolTables, cfg: StatsConfig) -> dict[str, Any]:
    s = tables.samples
    cols = [c for c in ("original_width", "original_height", "width", "height") if c in s.column_names]
    if not cols:
        return absent("no image sizes (no download shards)")
    out: dict[str, Any] = {"present": True}
    for c in cols:
        out[c] = histogram(pc.cast(s[c], pa.float64()), cfg.histogram_bins)
    if "original_width" in cols and "original_height" in cols:
        w = pc.cast(s["original_width"], pa.float64())
        h = pc.cast(s["original_height"], pa.float64())
        out["aspect_ratio"] = histogram(pc.divide(w, pc.if_else(pc.equal(h, 0), None, h)), cfg.histogram_bins)
    return out


def dedup_section(pool: Pool) -> dict[str, Any]:
    methods = [n[: -len(".parquet")] for n in pool.listdir("dedup") if n.endswith(".parquet")]
    if not methods:
        return absent("no dedup tables (dedup/<method>.parquet)")
    out: dict[str, Any] = {"present": True, "methods": {}}
    for m in methods:
        t = pool.read_parquet(f"dedup/{m}.parquet", columns=["group", "is_duplicate"])
        sizes = pc.value_counts(t["group"]).field("counts")
        dist = value_counts(sizes)
        out["methods"][m] = {"rows": t.num_rows, "duplicates": int(pc.sum(t["is_duplicate"]).as_py() or 0),
                             "groups": len(sizes), "largest_group": int(pc.max(sizes).as_py() or 0),
                             "group_size_counts": dict(sorted(dist.items(), key=lambda kv: int(kv[0])))}
    return out


def subsets_info(pool: Pool) -> dict[str, Any]:
    out = {}
    for name in pool.listdir("subsets"):
        kept = parquet_rows_file(pool, f"subsets/{name}/uids.parquet")
        if kept is None:
            continue
        out[name] = {"kept": kept, "funnel": read_json_or_none(pool, f"subsets/{name}/funnel.json"),
                     "spec": (read_json_or_none(pool, f"subsets/{name}/spec.json") or {}).get("spec")}
    return out


def balanced_info(pool: Pool) -> dict[str, Any]:
    out = {}
    for name in pool.listdir("balanced"):
        kept = parquet_rows_file(pool, f"balanced/{name}/uids.parquet")
        entry = None
        if pool.exists(f"balanced/{name}/entry_counts.parquet"):
            entry = entry_curves(pool.read_parquet(f"balanced/{name}/entry_counts.parquet"))
        out[name] = {"kept": kept, "entry_counts": entry,
                     "report": read_json_or_none(pool, f"balanced/{name}/report.json")}
    return out


def entry_curves(table: pa.Table) -> dict[str, Any]:
    """Every numeric column of entry_counts, sorted descending: the head/tail curve before and after."""
    curves = {}
    for f in table.schema:
        if pa.types.is_integer(f.type) or pa.types.is_floating(f.type):
            values = np.sort(table[f.name].to_numpy(zero_copy_only=False).astype(np.float64))[::-1]
            curves[f.name] = values.tolist()
    return {"entries": table.num_rows, "curves": curves}


def exports_info(pool: Pool) -> dict[str, Any]:
    out = {}
    for name in pool.listdir("exports"):
        report = read_json_or_none(pool, f"exports/{name}/report.json")
        if report is not None:
            out[name] = report
    return out


def evals_info(pool: Pool) -> dict[str, Any]:
    """results.json of every finished `curate eval` of this pool (runs' model paths left out)."""
    out = {}
    for name in pool.listdir(layout.EVALS):
        results = read_json_or_none(pool, layout.eval_results(name))
        if results is not None:
            out[name] = results
    return out


def parquet_rows_file(pool: Pool, rel: str) -> int | None:
    if not pool.exists(rel):
        return None
    return pool.parquet_metadata(rel).num_rows
