"""top_count / bottom_count: exactly the N best rows of the population, ties at the cut broken by uid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from curate.config import FilterConfig
from curate.errors import ConfigError
from curate.pool import Pool
from curate.stages.filter import quantiles, run
from curate.stages.filter.spec import load_spec
from curate.testing.pool import make_score_pool

DFN = "clip_dfn_similarity_score"


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """4 shards; the DFN score rounded to 2 decimals so every rank cut falls inside a group of ties
    that spans shards, plus a few NaN and null scores (they count in N and are never kept)."""
    root = str(tmp_path_factory.mktemp("topcount") / "pool")
    pool = Pool(root)
    shards = make_score_pool(pool, n_shards=4, rows_per_shard=300, seed=11)
    for i, sid in enumerate(shards):
        rel = f"scores/dfn/{sid}.parquet"
        table = pool.read_parquet(rel)
        values = np.round(table[DFN].to_numpy(), 2).astype(np.float32)
        values[i] = np.nan
        mask = np.zeros(len(values), bool)
        mask[i + 1] = True
        column = pa.array(values, pa.float32(), mask=mask)
        pool.write_parquet(rel, table.set_column(table.schema.get_field_index(DFN), DFN, column))
    return root


def _frame(pool: Pool) -> pd.DataFrame:
    shards = pool.read_parquet_dir("shards").to_pandas()
    df = shards[shards.status == "success"][["uid"]]
    for scorer in ("dfn", "language"):
        df = df.merge(pool.read_parquet_dir(f"scores/{scorer}").to_pandas(), on="uid", how="left")
    return df


def _best(df: pd.DataFrame, column: str | pd.Series, n: int, top: bool = True) -> set[str]:
    """The reference: sort by value (best first) then uid ascending, NaN dropped, first n."""
    score = df[column] if isinstance(column, str) else column
    ranked = df.assign(_s=score.astype("float64")).dropna(subset=["_s"])
    ranked = ranked.sort_values(["_s", "uid"], ascending=[not top, True], kind="mergesort")
    return set(ranked.uid.head(n))


def _spec(tmp_path: Path, *conditions: str, name: str = "topn") -> str:
    body = "".join(f"  - {c}\n" for c in conditions)
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nconditions:\n{body}")
    return str(path)


def _kept(pool: Pool, name: str) -> list[str]:
    return pool.read_parquet(f"subsets/{name}/uids.parquet")["uid"].to_pylist()


def _tied_at_cut(df: pd.DataFrame, n: int, top: bool = True) -> bool:
    values = np.sort(df[DFN].dropna().to_numpy())
    values = values[::-1] if top else values
    return bool(values[n - 1] == values[n])


@pytest.mark.parametrize("approximate", [False, True], ids=["exact", "approximate"])
@pytest.mark.parametrize(("op", "n"), [("top_count", 137), ("top_count", 500), ("bottom_count", 61)])
def test_count_keeps_exactly_n_with_ties_at_the_cut(pool_dir: str, tmp_path: Path, local_executor: None,
                                                    op: str, n: int, approximate: bool) -> None:
    pool = Pool(pool_dir)
    df = _frame(pool)
    top = op == "top_count"
    assert _tied_at_cut(df, n, top)  # the planted ties straddle the cut, so the uid rule decides
    name = f"{op}_{n}_{approximate}"
    funnel = run(pool, FilterConfig(spec=_spec(tmp_path, f"{{column: {DFN}, {op}: {n}}}", name=name),
                                    approximate=approximate), quiet=True)
    kept = _kept(pool, name)
    assert len(kept) == n == funnel["kept"]
    assert set(kept) == _best(df, DFN, n, top)
    cut = funnel["cutoffs"][0]
    assert cut["count"] == n and cut["population"] == len(df) and cut["rank_error_bound"] == 0
    assert cut["tie_uid"] is not None


def test_within_survivors_and_pool(pool_dir: str, tmp_path: Path, local_executor: None) -> None:
    pool = Pool(pool_dir)
    df = _frame(pool)
    en = df[df.lang == "en"]
    n = 200
    assert _tied_at_cut(en, n)
    run(pool, FilterConfig(spec=_spec(tmp_path, "{column: lang, eq: en}",
                                      f"{{column: {DFN}, top_count: {n}, within: survivors}}", name="surv")),
        quiet=True)
    kept = _kept(pool, "surv")
    assert len(kept) == n and set(kept) == _best(en, DFN, n)
    # The default population is the pool: the pool's best n, of which the English ones survive.
    run(pool, FilterConfig(spec=_spec(tmp_path, "{column: lang, eq: en}", f"{{column: {DFN}, top_count: {n}}}",
                                      name="whole")), quiet=True)
    assert set(_kept(pool, "whole")) == _best(df, DFN, n) & set(en.uid)
    assert len(_kept(pool, "whole")) < n


def test_count_larger_than_the_population_keeps_every_scored_row(pool_dir: str, tmp_path: Path,
                                                                   local_executor: None) -> None:
    pool = Pool(pool_dir)
    df = _frame(pool)
    en = df[df.lang == "en"]
    funnel = run(pool, FilterConfig(spec=_spec(tmp_path, "{column: lang, eq: en}",
                                               f"{{column: {DFN}, top_count: 100000, within: survivors}}",
                                               name="big")), quiet=True)
    assert set(_kept(pool, "big")) == set(en.uid[en[DFN].notna()])
    assert funnel["cutoffs"][0]["tie_uid"] is None


def test_cut_is_the_same_whatever_the_shard_layout() -> None:
    """The tie pass: splitting the same rows into other shards, in other orders, gives the same cut."""
    rng = np.random.default_rng(3)
    values = np.round(rng.normal(0.2, 0.05, 5000), 2)
    values[::97] = np.nan
    uids = np.array([f"{x:032x}" for x in rng.integers(0, 2**62, 5000)])
    count = 777
    results = set()
    for n_shards in (1, 3, 10):
        order = rng.permutation(len(values))
        parts = np.array_split(order, n_shards)
        for approximate in (False, True):
            if approximate:
                band = quantiles.approximate_band(np.sum([quantiles.histogram(values[p]) for p in parts], axis=0),
                                                  count, top=True)
            else:
                band = quantiles.exact_band(np.concatenate([values[p] for p in parts]), count, top=True)
            assert isinstance(band, quantiles.Band)
            rows = [quantiles.rank_band_rows(values[p][band.within(values[p])], uids[p][band.within(values[p])], band)
                    for p in parts]
            cut = quantiles.count_cutoff(band, [r[0] for r in rows], [r[1] for r in rows], len(values), count)
            results.add((cut.threshold, cut.tie_uid))
    assert len(results) == 1
    threshold, tie_uid = results.pop()
    kept = (values > threshold) | ((values == threshold) & (uids <= tie_uid))
    assert kept.sum() == count


@pytest.mark.ray
def test_ray_and_local_keep_the_same_rows(pool_dir: str, tmp_path: Path, ray_runtime: object,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pool = Pool(pool_dir)
    spec = _spec(tmp_path, "{column: lang, eq: en}", f"{{column: {DFN}, top_count: 150, within: survivors}}",
                 name="onray")
    run(pool, FilterConfig(spec=spec, name="onray"), quiet=True)
    on_ray = _kept(pool, "onray")
    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    run(pool, FilterConfig(spec=spec, name="onlocal"), quiet=True)
    assert len(on_ray) == 150 and on_ray == _kept(pool, "onlocal")


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("{column: a, top_count: 0}",
         ":3: conditions[0].top_count: Input should be greater than or equal to 1 (got 0)"),
        ("{column: a, bottom_count: -5}",
         ":3: conditions[0].bottom_count: Input should be greater than or equal to 1 (got -5)"),
        ("{column: a, top_count: 2.5}", ":3: conditions[0].top_count: Input should be a valid integer (got 2.5)"),
        ("{column: a, top_count: 5000.0}", ":3: conditions[0].top_count: Input should be a valid integer (got 5000.0)"),
        ("{column: a, top_count: '5000'}", ":3: conditions[0].top_count: Input should be a valid integer (got '5000')"),
        ("{column: a, top_count: 5, top_fraction: 0.1}",
         ":3: conditions[0]: expected exactly one operator of gt, ge, lt, le, eq, ne, between, in, not_in, "
         "top_fraction, bottom_fraction, top_count, bottom_count; got top_fraction, top_count"),
        ("{column: a, top_count: 5, within: everything}", ":3: conditions[0].within: Input should be 'pool' or"),
    ],
)
@pytest.mark.fault("filter", "a bad top_count/bottom_count (not a positive int, or with another operator)",
                   "one message naming file, line, key and what was expected")
def test_bad_count_is_one_line(tmp_path: Path, condition: str, expected: str) -> None:
    path = Path(_spec(tmp_path, condition))
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}{expected}")


def test_count_on_a_string_column_is_refused_against_the_pool(pool_dir: str, tmp_path: Path) -> None:
    from curate.stages.filter import prepare

    path = _spec(tmp_path, "{column: lang, top_count: 10}")
    with pytest.raises(ConfigError, match=r":3: conditions\[0\].top_count: top_count needs a numeric column"):
        prepare(Pool(pool_dir), path)


def test_uid_order_of_numpy_and_arrow_agree() -> None:
    """The apply mask compares uids as Arrow strings; numpy's str order (used for ranking) is the same."""
    uids = pa.array(["b", "a", "ab", "B", "é", "z"])
    assert pc.sort_indices(uids).to_pylist() == np.argsort(np.array(uids.to_pylist(), dtype=str)).tolist()


def test_score_ranks_by_a_weighted_sum(pool_dir: str, tmp_path: Path, local_executor: None) -> None:
    pool = Pool(pool_dir)
    df = _frame(pool)
    score = df[DFN].astype("float64") * 1.0 + df.lang_en_score.astype("float64") * 0.2
    funnel = run(pool, FilterConfig(spec=_spec(
        tmp_path, f"{{score: {{{DFN}: 1.0, lang_en_score: 0.2}}, top_count: 250}}", name="combo")), quiet=True)
    kept = _kept(pool, "combo")
    assert len(kept) == 250 and set(kept) == _best(df, score, 250)
    assert set(kept) != _best(df, DFN, 250)  # the second term changes the ranking
    assert funnel["cutoffs"][0]["column"] == f"1*{DFN} + 0.2*lang_en_score"
    assert funnel["conditions"][0]["condition"] == f"(1*{DFN} + 0.2*lang_en_score) top 250"
    # A plain comparison on a score, and a missing term (the planted NaN/null DFN rows) makes it missing.
    run(pool, FilterConfig(spec=_spec(tmp_path, f"{{score: {{{DFN}: 2, lang_en_score: -1}}, ge: 0}}",
                                      name="combo_ge")), quiet=True)
    expected = 2.0 * df[DFN].astype("float64") - df.lang_en_score.astype("float64") >= 0
    assert set(_kept(pool, "combo_ge")) == set(df.uid[expected])


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("{score: {a: 1, b: x}, top_count: 5}", ":3: conditions[0].score.b: expected a number (got 'x')"),
        ("{score: {a: .nan}, top_count: 5}", ":3: conditions[0].score: weight of 'a' must be a finite number"),
        ("{score: {a: 1}, eq: 3}", ":3: conditions[0]: a 'score' takes only the numeric operators gt, ge, lt, le, "
                                   "between, top_fraction, bottom_fraction, top_count, bottom_count; got eq"),
        ("{score: {a: 1}, column: a, top_count: 5}",
         ":3: conditions[0]: expected exactly one of 'column' or 'score'"),
    ],
)
@pytest.mark.fault("filter", "a malformed weighted `score` (non-number or non-finite weight, non-numeric operator)",
                   "one message naming file, line, key and what was expected")
def test_bad_score_is_one_line(tmp_path: Path, condition: str, expected: str) -> None:
    path = Path(_spec(tmp_path, condition))
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}{expected}")


def test_score_columns_are_checked_against_the_pool(pool_dir: str, tmp_path: Path) -> None:
    from curate.stages.filter import prepare

    path = _spec(tmp_path, f"{{score: {{{DFN}: 1, lang: 1, nope: 1}}, top_count: 10}}")
    with pytest.raises(ConfigError) as err:
        prepare(Pool(pool_dir), path)
    assert f"{path}:3: conditions[0].score: a score sums numeric columns; 'lang' is string" in str(err.value)
    assert f"{path}:3: conditions[0].score: unknown column 'nope'" in str(err.value)
