"""Image grids around each threshold of an applied filter spec: samples just kept and just cut."""

from __future__ import annotations

import base64
import io
from collections import defaultdict
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from curate.pool import Pool
from curate.shards import iter_shard_samples
from curate.stats.tables import PoolTables

# ge/gt keep what is above the cut; le/lt keep what is below it.
KEEPS_ABOVE = {"ge": True, "gt": True, "le": False, "lt": False, "top_fraction": True, "bottom_fraction": False}


def threshold_conditions(spec: dict[str, Any] | None, funnel: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Numeric cuts of a spec: thresholds, `between` bounds, and resolved top/bottom_fraction cut-offs."""
    cuts: list[dict[str, Any]] = []
    resolved = {(c.get("column"), c.get("op"), c.get("fraction")): c.get("threshold")
                for c in (funnel or {}).get("cutoffs") or []}

    def visit(cond: Any) -> None:
        if not isinstance(cond, dict):
            return
        for key in ("all", "any"):
            for sub in cond.get(key) or []:
                visit(sub)
        if "column" not in cond:
            return
        col = cond["column"]
        for op in ("ge", "gt", "le", "lt"):
            if isinstance(cond.get(op), int | float) and not isinstance(cond.get(op), bool):
                cuts.append({"column": col, "op": op, "threshold": float(cond[op])})
        if isinstance(cond.get("between"), list | tuple) and len(cond["between"]) == 2:
            low, high = cond["between"]
            cuts.extend([{"column": col, "op": "ge", "threshold": float(low)},
                         {"column": col, "op": "le", "threshold": float(high)}])
        for op in ("top_fraction", "bottom_fraction"):
            if cond.get(op) is not None:
                threshold = resolved.get((col, op, cond[op]))
                if threshold is not None and np.isfinite(threshold):
                    cuts.append({"column": col, "op": op, "threshold": float(threshold), "fraction": cond[op]})

    for cond in (spec or {}).get("conditions") or []:
        visit(cond)
    return cuts


def near_cut(tables: PoolTables, cut: dict[str, Any], n: int) -> dict[str, list[dict[str, Any]]] | None:
    """The n samples closest to the cut on the kept side and on the removed side."""
    s = tables.samples
    col = cut["column"]
    if col not in s.column_names or tables.sample_shard is None:
        return None
    values = pc.cast(s[col], pa.float64())
    t = cut["threshold"]
    op = cut["op"]
    kept = {"ge": pc.greater_equal, "gt": pc.greater, "le": pc.less_equal, "lt": pc.less,
            "top_fraction": pc.greater_equal, "bottom_fraction": pc.less_equal}[op](values, t)
    kept = pc.fill_null(kept, False)
    dist = pc.abs(pc.subtract(values, t)).to_numpy(zero_copy_only=False)
    dist = np.where(np.isnan(dist), np.inf, dist)
    kept_np = kept.to_numpy(zero_copy_only=False)
    out: dict[str, list[dict[str, Any]]] = {}
    for side, mask in (("kept", kept_np), ("removed", ~kept_np & np.isfinite(dist))):
        idx = np.flatnonzero(mask)
        idx = idx[np.argsort(dist[idx], kind="stable")[:n]]
        rows = s.select([c for c in ("uid", "caption", col) if c in s.column_names]).take(pa.array(idx)).to_pylist()
        shards = tables.sample_shard.take(pa.array(idx)).to_pylist()
        out[side] = [{"uid": r["uid"], "caption": r.get("caption") or "", "score": r[col], "shard": sh}
                     for r, sh in zip(rows, shards, strict=True)]
    return out


def thumbnail_data_uri(image: bytes, size: int) -> str:
    img = Image.open(io.BytesIO(image)).convert("RGB")
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def attach_thumbnails(pool: Pool, grids: list[dict[str, Any]], size: int) -> int:
    """Add `thumb` (a data: URI) to every grid sample; reads only the shards they live in."""
    wanted: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for grid in grids:
        for side in ("kept", "removed"):
            for item in grid.get(side, []):
                wanted[item["shard"]].append(item)
    found = 0
    for shard, items in wanted.items():
        by_uid: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for item in items:
            by_uid[item["uid"]].append(item)
        for sample in iter_shard_samples(pool, shard):
            hits = by_uid.pop(sample.get("uid"), None)
            if hits:
                uri = thumbnail_data_uri(sample["image"], size)
                for item in hits:
                    item["thumb"] = uri
                    found += 1
            if not by_uid:
                break
    return found
