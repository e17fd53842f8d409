"""Evaluate a spec on one table, vectorised with pyarrow.compute; per-condition funnel counts.

Semantics (docs/spec-reference.md):
- a comparison with a null (or NaN) value is false, so such rows are removed and counted as
  missing; `not` inverts the resolved true/false, so `not: {column: x, lt: 3}` keeps nulls;
- a fraction condition compares against its global Cutoff (quantiles.py), computed beforehand
  over the whole pool, or over the rows passing the earlier top-level conditions (`within: survivors`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.stages.filter.clusters import embedding_key
from curate.stages.filter.quantiles import Band, Cutoff, rank_band_rows
from curate.stages.filter.spec import (
    AllCondition,
    AnyCondition,
    ClusterCondition,
    ColumnCondition,
    DedupCondition,
    FilterSpec,
    NotCondition,
    SynsetCondition,
    iter_conditions,
)


@dataclass
class EvalContext:
    """What a shard needs besides its own rows: fraction cut-offs and duplicate uid sets."""

    cutoffs: dict[int, Cutoff] = field(default_factory=dict)  # fraction index (see fraction_conditions) -> cutoff
    duplicates: dict[str, pa.Array] = field(default_factory=dict)  # dedup method -> uids flagged duplicate
    # resource index (see resource_conditions) -> SynsetMatcher / ClusterSelection, loaded by the driver
    resources: dict[int, Any] = field(default_factory=dict)


def fraction_conditions(spec: FilterSpec) -> list[ColumnCondition]:
    """Fraction conditions in depth-first order; the position is the key of their cut-off."""
    return [c for c in iter_conditions(spec.conditions) if isinstance(c, ColumnCondition) and c.is_fraction]


def resource_conditions(spec: FilterSpec) -> list[SynsetCondition | ClusterCondition]:
    """Conditions that need files loaded by the driver, depth first; the position keys ctx.resources."""
    return [c for c in iter_conditions(spec.conditions) if isinstance(c, SynsetCondition | ClusterCondition)]


def condition_columns(conditions: list[Any]) -> set[str]:
    """Every table column the conditions (and their children) read."""
    out: set[str] = set()
    for cond in iter_conditions(conditions):
        if isinstance(cond, ColumnCondition):
            out.update(cond.columns)
        elif isinstance(cond, SynsetCondition):
            out.add("caption")
        elif isinstance(cond, ClusterCondition):
            out.add(embedding_key(cond.image_clusters.embeddings, cond.image_clusters.column))
    return out


def needed_columns(spec: FilterSpec) -> set[str]:
    return condition_columns(spec.conditions)


def fraction_columns(spec: FilterSpec, which: list[int]) -> set[str]:
    """The columns fraction conditions `which` need: their own, plus for `within: survivors` those of
    every earlier top-level condition (pass 1 reads only these, not everything the spec uses)."""
    fractions = fraction_conditions(spec)
    out: set[str] = set()
    for k in which:
        cond = fractions[k]
        out.update(cond.columns)
        if cond.within == "survivors":
            position = next(i for i, c in enumerate(spec.conditions) if c is cond)
            out.update(condition_columns(spec.conditions[:position]))
    return out


def dedup_methods(spec: FilterSpec) -> set[str]:
    return {c.not_duplicate for c in iter_conditions(spec.conditions) if isinstance(c, DedupCondition)}


def _as_bool(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(mask, False), dtype=bool)


def _scalar_for(value: Any, column: pa.ChunkedArray | pa.Array) -> pa.Scalar:
    # A float32 score is compared with the float32 nearest to the spec's number, as numpy does with
    # DataComp's pandas filters (0.3 must not exclude a stored 0.3f because 0.3f > 0.3 in float64).
    if pa.types.is_floating(column.type):
        return pa.scalar(float(value), column.type)
    if pa.types.is_integer(column.type) and isinstance(value, float):
        return pa.scalar(value, pa.float64())
    return pa.scalar(value)


def condition_values(cond: ColumnCondition, table: pa.Table) -> pa.ChunkedArray | pa.Array:
    """What a column condition compares: its column as stored, or its score, sum(weight * column) in
    float64, terms added in the spec's order (the same float result on every shard and executor); a
    null or NaN term makes the score null or NaN, i.e. missing."""
    if cond.column is not None:
        return table[cond.column]
    total: Any = None
    for name, weight in (cond.score or {}).items():
        term = pc.multiply(pc.cast(table[name], pa.float64()), pa.scalar(float(weight), pa.float64()))
        total = term if total is None else pc.add(total, term)
    return total


class Evaluator:
    """Masks for one table; fraction conditions look up their cut-off by identity."""

    def __init__(self, spec: FilterSpec, ctx: EvalContext) -> None:
        self.spec = spec
        self.ctx = ctx
        self._fraction_index = {id(c): i for i, c in enumerate(fraction_conditions(spec))}
        self._resource_index = {id(c): i for i, c in enumerate(resource_conditions(spec))}

    def mask(self, cond: Any, table: pa.Table) -> np.ndarray:
        if isinstance(cond, ColumnCondition):
            return self._column_mask(cond, table)
        if isinstance(cond, DedupCondition):
            dups = self.ctx.duplicates.get(cond.not_duplicate)
            if dups is None or len(dups) == 0:
                return np.ones(table.num_rows, dtype=bool)
            return ~_as_bool(pc.is_in(table["uid"], value_set=dups))
        if isinstance(cond, SynsetCondition):
            return self.ctx.resources[self._resource_index[id(cond)]].mask(table["caption"])
        if isinstance(cond, ClusterCondition):
            args = cond.image_clusters
            column = table[embedding_key(args.embeddings, args.column)]
            return self.ctx.resources[self._resource_index[id(cond)]].mask(column)
        if isinstance(cond, AllCondition):
            out = np.ones(table.num_rows, dtype=bool)
            for kid in cond.all:
                out &= self.mask(kid, table)
            return out
        if isinstance(cond, AnyCondition):
            out = np.zeros(table.num_rows, dtype=bool)
            for kid in cond.any:
                out |= self.mask(kid, table)
            return out
        if isinstance(cond, NotCondition):
            return ~self.mask(cond.not_, table)
        raise TypeError(f"unresolved condition {cond!r}")

    def _column_mask(self, cond: ColumnCondition, table: pa.Table) -> np.ndarray:
        col = condition_values(cond, table)
        op, value = cond.op, cond.value
        if op in ("gt", "ge", "lt", "le", "eq", "ne"):
            fn = {"gt": pc.greater, "ge": pc.greater_equal, "lt": pc.less, "le": pc.less_equal,
                  "eq": pc.equal, "ne": pc.not_equal}[op]
            return _as_bool(fn(col, _scalar_for(value, col)))
        if op == "between":
            low, high = value
            return _as_bool(pc.and_(pc.greater_equal(col, _scalar_for(low, col)),
                                    pc.less_equal(col, _scalar_for(high, col))))
        if op in ("in", "not_in"):
            found = pc.is_in(col, value_set=pa.array(list(value)).cast(col.type))
            found = _as_bool(found)
            present = _as_bool(pc.is_valid(col))
            return found if op == "in" else (~found & present)
        cutoff = self.ctx.cutoffs[self._fraction_index[id(cond)]]
        # The threshold is a value of the column (or a float32 bin edge), so it is exact in the column's type;
        # a NaN threshold keeps nothing, as `score >= nan` is false in numpy.
        threshold = _scalar_for(cutoff.threshold, col)
        top = op.startswith("top_")
        if cutoff.tie_uid is None:
            return _as_bool((pc.greater_equal if top else pc.less_equal)(col, threshold))
        # A count cut: strictly better rows, and the rows at the threshold up to the tie uid (string order).
        better = (pc.greater if top else pc.less)(col, threshold)
        tied = pc.and_(pc.equal(col, threshold),
                       pc.less_equal(table["uid"], pa.scalar(cutoff.tie_uid, table["uid"].type)))
        return _as_bool(better) | _as_bool(tied)

    def top_masks(self, table: pa.Table) -> list[np.ndarray]:
        return [self.mask(c, table) for c in self.spec.conditions]


def combine(masks: list[np.ndarray], n_rows: int) -> np.ndarray:
    keep = np.ones(n_rows, dtype=bool)
    for m in masks:
        keep &= m
    return keep


def funnel_counts(masks: list[np.ndarray], n_rows: int) -> dict[str, dict[str, int]]:
    """Per top-level condition: rows it fails, rows it removes in spec order, rows only it removes."""
    out: dict[str, dict[str, int]] = {}
    remaining = np.ones(n_rows, dtype=bool)
    fails_count = np.zeros(n_rows, dtype=np.int32)
    for m in masks:
        fails_count += ~m
    for i, m in enumerate(masks):
        fails = ~m
        out[f"{i:03d}"] = {
            "removed_alone": int(fails.sum()),
            "removed_in_order": int((remaining & fails).sum()),
            "removed_only_by_this": int((fails & (fails_count == 1)).sum()),
        }
        remaining &= m
        out[f"{i:03d}"]["remaining"] = int(remaining.sum())
    return out


def missing_counts(spec: FilterSpec, table: pa.Table) -> dict[str, int]:
    """Rows whose value is null/NaN per column the spec reads (they fail comparisons on it)."""
    out = {}
    for name in sorted(needed_columns(spec)):
        col = table[name]
        missing = col.null_count
        if pa.types.is_floating(col.type):
            missing += int(pc.sum(pc.is_nan(col)).as_py() or 0)
        if missing:
            out[f"missing value: {name}"] = int(missing)
    return out


def fraction_values(spec: FilterSpec, ctx: EvalContext, table: pa.Table, which: list[int]) -> dict[int, np.ndarray]:
    """The values fraction conditions `which` rank: their column, restricted for `within: survivors`
    to rows passing every earlier top-level condition (whose cut-offs must already be in ctx)."""
    fractions = fraction_conditions(spec)
    out: dict[int, np.ndarray] = {}
    for k in which:
        values, keep = _ranked(spec, ctx, table, fractions[k])
        # NaN and null stay: DataComp counts them in N (quantiles.py).
        out[k] = values if keep is None else values[keep]
    return out


def _ranked(spec: FilterSpec, ctx: EvalContext, table: pa.Table,
            cond: ColumnCondition) -> tuple[np.ndarray, np.ndarray | None]:
    """A rank cut's column as float64 (null -> NaN), and for `within: survivors` the mask of the rows
    passing every earlier top-level condition (None: every row is in the population)."""
    values = np.asarray(pc.cast(condition_values(cond, table), pa.float64()).fill_null(np.nan), dtype=np.float64)
    if cond.within != "survivors":
        return values, None
    position = next(i for i, c in enumerate(spec.conditions) if c is cond)
    evaluator = Evaluator(spec, ctx)
    return values, combine([evaluator.mask(c, table) for c in spec.conditions[:position]], table.num_rows)


def band_rows(spec: FilterSpec, ctx: EvalContext, table: pa.Table,
              bands: dict[int, Band]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """For count cuts: this table's population rows inside each cut's band, best first, at most `need`
    (values, uids); see quantiles.rank_band_rows. Only the band's uids are turned into Python strings."""
    fractions = fraction_conditions(spec)
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for k, band in bands.items():
        values, keep = _ranked(spec, ctx, table, fractions[k])
        inside = band.within(values) if keep is None else band.within(values) & keep
        rows = np.flatnonzero(inside)
        uids = np.asarray(table["uid"].take(pa.array(rows)).to_pylist(), dtype=str) if len(rows) else \
            np.empty(0, dtype=str)
        out[k] = rank_band_rows(values[rows], uids, band)
    return out


def fraction_dependencies(spec: FilterSpec) -> dict[int, set[int]]:
    """For each fraction: the fractions whose cut-offs must be known before its values are gathered."""
    fractions = fraction_conditions(spec)
    index = {id(c): i for i, c in enumerate(fractions)}
    deps: dict[int, set[int]] = {i: set() for i in range(len(fractions))}
    for position, cond in enumerate(spec.conditions):
        if isinstance(cond, ColumnCondition) and cond.within == "survivors":
            for earlier in spec.conditions[:position]:
                deps[index[id(cond)]].update(index[id(c)] for c in iter_conditions([earlier]) if id(c) in index)
    return deps


def apply_to_table(spec: FilterSpec, ctx: EvalContext, table: pa.Table) -> np.ndarray:
    """Keep-mask of a whole table (convenience for tests and small pools)."""
    return combine(Evaluator(spec, ctx).top_masks(table), table.num_rows)
