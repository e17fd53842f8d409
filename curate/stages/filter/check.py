"""Check a validated spec against the columns a pool actually has (schemas only, no data)."""

from __future__ import annotations

import pyarrow as pa

from curate.errors import ConfigError
from curate.stages.filter.columns import ColumnCatalog
from curate.stages.filter.spec import (
    COMPARE_OPS,
    ColumnCondition,
    DedupCondition,
    FilterSpec,
    SourceMap,
    SynsetCondition,
    iter_conditions,
)

NUMERIC_OPS = ("gt", "ge", "lt", "le", "between", "top_fraction", "bottom_fraction", "top_count", "bottom_count")


def _kind(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    return str(t)


def _value_kind(v: object) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    return "string"


def check_against_pool(spec: FilterSpec, sources: SourceMap, catalog: ColumnCatalog) -> None:
    """Raise ConfigError listing every unknown column, unknown dedup method or type mismatch."""
    errors: list[str] = []
    available = ", ".join(catalog.names()) or "(none)"
    for cond in iter_conditions(spec.conditions):
        if isinstance(cond, DedupCondition):
            if cond.not_duplicate not in catalog.dedup_methods:
                have = ", ".join(catalog.dedup_methods) or "(none: run curate dedup first)"
                errors.append(f"{sources.where(cond, 'not_duplicate')}: no dedup table dedup/"
                              f"{cond.not_duplicate}.parquet in the pool; methods that exist: {have}")
            continue
        if isinstance(cond, SynsetCondition) and "caption" not in catalog.sources:
            errors.append(f"{sources.where(cond, 'caption_synsets')}: the pool's shards have no caption column")
        if not isinstance(cond, ColumnCondition):
            continue
        if cond.score is not None:  # the spec grammar allowed only numeric operators on a score
            for name in cond.score:
                if name not in catalog.sources:
                    errors.append(f"{sources.where(cond, 'score')}: unknown column {name!r}; "
                                  f"columns that exist: {available}")
                elif _kind(catalog.types[name]) != "number":
                    errors.append(f"{sources.where(cond, 'score')}: a score sums numeric columns; "
                                  f"{name!r} is {catalog.types[name]}")
            continue
        if cond.column not in catalog.sources:
            errors.append(f"{sources.where(cond, 'column')}: unknown column {cond.column!r}; "
                          f"columns that exist: {available}")
            continue
        kind = _kind(catalog.types[cond.column])
        op = cond.op
        if op in NUMERIC_OPS and kind != "number":
            errors.append(f"{sources.where(cond, op)}: {op} needs a numeric column; "
                          f"{cond.column!r} is {catalog.types[cond.column]}")
        elif op in (*COMPARE_OPS, "in", "not_in") and op not in NUMERIC_OPS:
            values = cond.value if op in ("in", "not_in") else [cond.value]
            bad = [v for v in values if _value_kind(v) != kind]
            if bad:
                errors.append(f"{sources.where(cond, op)}: expected {kind} value(s) for column {cond.column!r} "
                              f"({catalog.types[cond.column]}), got {bad[0]!r}")
    if errors:
        raise ConfigError("\n".join(errors))


def check_survivors_placement(spec: FilterSpec, sources: SourceMap) -> None:
    """`within: survivors` is defined only for top-level conditions (an include may nest one)."""
    top = {id(c) for c in spec.conditions}
    for cond in iter_conditions(spec.conditions):
        if isinstance(cond, ColumnCondition) and cond.within == "survivors" and id(cond) not in top:
            raise ConfigError(f"{sources.where(cond, 'within')}: 'within: survivors' is allowed only on a "
                              "top-level condition of the spec being applied (it is nested here through include)")
