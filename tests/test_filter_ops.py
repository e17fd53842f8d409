"""Filter evaluation: every operator, DataComp's fraction semantics, shard-wise == whole-table."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curate.stages.filter import quantiles
from curate.stages.filter.columns import derive
from curate.stages.filter.evaluate import (
    EvalContext,
    apply_to_table,
    fraction_conditions,
    fraction_values,
    funnel_counts,
)
from curate.stages.filter.spec import FilterSpec


def _spec(*conditions: dict) -> FilterSpec:
    return FilterSpec.model_validate({"name": "t", "conditions": list(conditions)})


def _cutoffs(spec: FilterSpec, tables: list[pa.Table]) -> EvalContext:
    """Resolve cut-offs the way the stage does: gather over all tables, then the global rule."""
    ctx = EvalContext()
    fractions = fraction_conditions(spec)
    for k, cond in enumerate(fractions):
        values = np.concatenate([fraction_values(spec, ctx, t, [k])[k] for t in tables])
        ctx.cutoffs[k] = quantiles.exact_cutoff(values, cond.value, cond.op == "top_fraction")
    return ctx


TABLE = pa.table({
    "uid": [f"{i:032x}" for i in range(6)],
    "score": pa.array([0.1, 0.5, None, 0.3, 0.9, 0.5], pa.float32()),
    "lang": ["en", "de", "en", None, "fr", "en"],
    "n": pa.array([1, 2, 3, 4, 5, 6], pa.int64()),
})


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"column": "score", "gt": 0.3}, [False, True, False, False, True, True]),
        ({"column": "score", "ge": 0.3}, [False, True, False, True, True, True]),
        ({"column": "score", "lt": 0.3}, [True, False, False, False, False, False]),
        ({"column": "score", "le": 0.5}, [True, True, False, True, False, True]),
        ({"column": "lang", "eq": "en"}, [True, False, True, False, False, True]),
        ({"column": "lang", "ne": "en"}, [False, True, False, False, True, False]),
        ({"column": "n", "eq": 3}, [False, False, True, False, False, False]),
        ({"column": "n", "between": [2, 4]}, [False, True, True, True, False, False]),
        ({"column": "lang", "in": ["de", "fr"]}, [False, True, False, False, True, False]),
        ({"column": "lang", "not_in": ["de", "fr"]}, [True, False, True, False, False, True]),
        ({"not": {"column": "score", "lt": 0.3}}, [False, True, True, True, True, True]),
        ({"any": [{"column": "lang", "eq": "fr"}, {"column": "n", "le": 1}]}, [True, False, False, False, True, False]),
        ({"all": [{"column": "lang", "eq": "en"}, {"column": "n", "ge": 3}]}, [False, False, True, False, False, True]),
        # DataComp counts the null in N (6 values): n = int(6 * 0.4) = 2, threshold = index 2 of the
        # descending sort [0.9, 0.5, 0.5, 0.3, 0.1, nan] = 0.5, so both 0.5s stay.
        ({"column": "score", "top_fraction": 0.4}, [False, True, False, False, True, True]),
        # n = int(6 * 0.5) = 3: index 3 = 0.3.
        ({"column": "score", "top_fraction": 0.5}, [False, True, False, True, True, True]),
        # Ascending [0.1, 0.3, 0.5, 0.5, 0.9, nan], index 2 = 0.5.
        ({"column": "score", "bottom_fraction": 0.4}, [True, True, False, True, False, True]),
        # n = 0: threshold = the maximum, which is still kept.
        ({"column": "score", "top_fraction": 0.1}, [False, False, False, False, True, False]),
        ({"column": "score", "top_fraction": 0.0}, [False, False, False, False, True, False]),
        # n = 5 reaches the NaN: `score >= nan` keeps nothing.
        ({"column": "score", "top_fraction": 0.9}, [False] * 6),
        # n = N: DataComp's index is out of range; curate keeps every row with a score.
        ({"column": "score", "top_fraction": 1.0}, [True, True, False, True, True, True]),
    ],
)
def test_each_operator(condition: dict, expected: list[bool]) -> None:
    spec = _spec(condition)
    assert apply_to_table(spec, _cutoffs(spec, [TABLE]), TABLE).tolist() == expected


def test_dedup_flag_removes_only_flagged_uids() -> None:
    spec = _spec({"not_duplicate": "exact"})
    ctx = EvalContext(duplicates={"exact": pa.array([TABLE["uid"][1].as_py(), "f" * 32])})
    assert apply_to_table(spec, ctx, TABLE).tolist() == [True, False, True, True, True, True]


def test_datacomp_fraction_semantics_with_ties() -> None:
    """DataComp: n = int(N f); threshold = -np.sort(-scores)[n] (the (n+1)-th highest); keep >= threshold."""
    rng = np.random.default_rng(3)
    scores = rng.choice(np.array([0.1, 0.2, 0.25, 0.3, 0.3, 0.3, 0.4], np.float32), size=1001)
    table = pa.table({"uid": [f"{i:032x}" for i in range(len(scores))], "s": scores})
    for fraction in (0.0, 0.05, 0.3, 0.5, 0.77):
        n = int(len(scores) * fraction)
        datacomp_threshold = -np.sort(-scores)[n]
        expected = scores >= datacomp_threshold
        spec = _spec({"column": "s", "top_fraction": fraction})
        keep = apply_to_table(spec, _cutoffs(spec, [table]), table)
        assert (keep == expected).all()
        assert keep.sum() >= n + 1  # ties at the threshold are all kept


def test_survivors_fraction_ranks_only_rows_passing_earlier_conditions() -> None:
    table = pa.table({"uid": [f"{i:032x}" for i in range(10)], "ok": [True] * 4 + [False] * 6,
                      "s": [float(i) for i in range(10)]})
    pool_wide = _spec({"column": "ok", "eq": True}, {"column": "s", "top_fraction": 0.5})
    survivors = _spec({"column": "ok", "eq": True}, {"column": "s", "top_fraction": 0.5, "within": "survivors"})
    # Whole pool: n = 5, threshold = 6th highest of 0..9 = 4, and no ok row reaches it.
    assert apply_to_table(pool_wide, _cutoffs(pool_wide, [table]), table).sum() == 0
    # Survivors 0..3: n = 2, threshold = 3rd highest = 1 -> rows 1, 2 and 3.
    keep = apply_to_table(survivors, _cutoffs(survivors, [table]), table)
    assert np.flatnonzero(keep).tolist() == [1, 2, 3]


def test_funnel_counts_alone_in_order_and_unique() -> None:
    masks = [np.array([True, False, False, True]), np.array([False, False, True, True])]
    funnel = funnel_counts(masks, 4)
    assert funnel["000"] == {"removed_alone": 2, "removed_in_order": 2, "removed_only_by_this": 1, "remaining": 2}
    assert funnel["001"] == {"removed_alone": 2, "removed_in_order": 1, "removed_only_by_this": 1, "remaining": 1}


def test_derived_values_follow_datacomp() -> None:
    table = pa.table({"original_width": pa.array([300, 100, 0, None], pa.int32()),
                      "original_height": pa.array([100, 400, 50, 20], pa.int32()),
                      "caption": ["a b  c", "", " x\ty\n", None]})
    assert derive("shorter_side", table).to_pylist() == [100, 100, 0, None]
    assert derive("side_ratio", table).to_pylist() == [3.0, 4.0, None, None]
    assert derive("caption_num_words", table).to_pylist() == [3, 0, 2, None]
    assert derive("caption_num_chars", table).to_pylist() == [6, 0, 5, None]


def test_approximate_cutoff_error_bound() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(0.25, 0.05, 200_000).astype(np.float32)
    parts = np.array_split(values, 7)
    counts = np.sum([quantiles.histogram(p) for p in parts], axis=0)
    for fraction, top in ((0.3, True), (0.15, True), (0.2, False)):
        exact = quantiles.exact_cutoff(values, fraction, top)
        approx = quantiles.approximate_cutoff(counts, fraction, top)
        assert abs(approx.threshold - exact.threshold) <= 2**-7 * abs(exact.threshold)
        kept_exact = (values >= exact.threshold).sum() if top else (values <= exact.threshold).sum()
        kept_approx = (values >= approx.threshold).sum() if top else (values <= approx.threshold).sum()
        assert kept_exact <= kept_approx <= kept_exact + approx.rank_error_bound
    # Negative values keep their order in the key space.
    neg = np.array([-3.0, -2.0, -1.0, 0.5], np.float32)
    assert quantiles.approximate_cutoff(quantiles.histogram(neg), 0.5, True).threshold <= -1.0


SPEC_FOR_PROPERTY = _spec(
    {"column": "a", "gt": 0.2},
    {"any": [{"column": "b", "in": [1, 2]}, {"column": "a", "top_fraction": 0.25}]},
    {"column": "a", "bottom_fraction": 0.9, "within": "survivors"},
    {"not": {"column": "b", "eq": 4}},
)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(st.one_of(st.none(), st.floats(0, 1, width=32)), st.integers(0, 5)),
                  min_size=1, max_size=60),
    cuts=st.lists(st.integers(0, 60), max_size=5),
)
def test_sharded_equals_concatenated(rows: list[tuple[float | None, int]], cuts: list[int]) -> None:
    table = pa.table({"uid": [f"{i:032x}" for i in range(len(rows))],
                      "a": pa.array([r[0] for r in rows], pa.float32()), "b": [r[1] for r in rows]})
    bounds = sorted({0, len(rows), *(c for c in cuts if c < len(rows))})
    shards = [table.slice(lo, hi - lo) for lo, hi in itertools.pairwise(bounds)]
    # The stage's order: the pool-wide fraction first, then the survivors one (needs the first's cut-off).
    ctx = EvalContext()
    fractions = fraction_conditions(SPEC_FOR_PROPERTY)
    for k, cond in enumerate(fractions):
        values = np.concatenate([fraction_values(SPEC_FOR_PROPERTY, ctx, s, [k])[k] for s in shards])
        ctx.cutoffs[k] = quantiles.exact_cutoff(values, cond.value, cond.op == "top_fraction")
    sharded = np.concatenate([apply_to_table(SPEC_FOR_PROPERTY, ctx, s) for s in shards])
    whole = apply_to_table(SPEC_FOR_PROPERTY, _cutoffs(SPEC_FOR_PROPERTY, [table]), table)
    assert sharded.tolist() == whole.tolist()
    assert sum(funnel_counts([m], len(sharded))["000"]["remaining"] for m in [sharded]) == whole.sum()
