"""The filter stage on a generated pool: shipped specs run, outputs match a pandas reference."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from curate import layout
from curate.cli import app
from curate.config import FilterConfig
from curate.pool import Pool
from curate.stages.filter import APPLY_PASS, Filter, run
from curate.testing.pool import make_score_pool
from curate.uid import npy_array_to_uids

FILTERS = Path(__file__).resolve().parent.parent / "filters"


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("filterpool") / "pool")
    make_score_pool(Pool(root), n_shards=3, rows_per_shard=400, seed=7)
    return root


def _frame(pool: Pool) -> pd.DataFrame:
    """The whole pool as one pandas frame, joined the obvious way (the reference implementation)."""
    shards = pool.read_parquet_dir("shards").to_pandas()
    df = shards[shards.status == "success"][["uid", "caption", "original_width", "original_height"]]
    for scorer in ("l14", "b32", "dfn", "language", "text_stats"):
        df = df.merge(pool.read_parquet_dir(f"scores/{scorer}").to_pandas(), on="uid", how="left")
    dups = pool.read_parquet("dedup/exact.parquet").to_pandas()
    return df.assign(is_dup=df.uid.isin(dups.uid[dups.is_duplicate]))


def _top(scores: pd.Series, fraction: float) -> float:
    # DataComp's get_threshold: the value at index n of the descending sort, i.e. the (n+1)-th highest.
    n = int(len(scores) * fraction)
    return -np.sort(-scores.to_numpy())[n]


def _reference(df: pd.DataFrame, name: str) -> set[str]:
    short = np.minimum(df.original_width, df.original_height)
    captions_and_images = ((df.caption_num_words > 2) & (df.caption_num_chars > 5) & (short >= 200)
                           & (np.maximum(df.original_width, df.original_height) / short <= 3))
    basic = (df.lang == "en") & captions_and_images
    lenient = (df.lang == "en") | ((df.lang_score < np.float32(0.35)) & (df.lang_en_score >= np.float32(0.03)))
    masks = {
        "no_filter": np.ones(len(df), bool),
        "datacomp_basic": basic,
        "english_lenient": lenient,
        "curate_basic": lenient & captions_and_images,
        "clip_b32_threshold": df.clip_b32_similarity_score >= np.float32(0.25),
        "clip_l14_top30": df.clip_l14_similarity_score >= _top(df.clip_l14_similarity_score, 0.3),
        "laion2b_fasttext": (df.lang == "en") & (df.clip_b32_similarity_score >= np.float32(0.28)),
        "dfn_top15": df.clip_dfn_similarity_score >= _top(df.clip_dfn_similarity_score, 0.15),
        "datacomp_basic_dedup_clip30": ~df.is_dup & basic
        & (df.clip_l14_similarity_score >= _top(df.clip_l14_similarity_score, 0.3)),
    }
    return set(df.uid[np.asarray(masks[name])])


# The text- and image-based specs read files beside them (synset list, WordNet, reference
# embeddings): tests/test_fidelity_datacomp_baselines.py runs them against DataComp's code.
WITH_FILES = {"datacomp_text_based", "datacomp_image_based", "datacomp_image_based_clip_l14"}


@pytest.mark.parametrize("spec_file", sorted(p for p in FILTERS.glob("*.yaml") if p.stem not in WITH_FILES),
                         ids=lambda p: p.stem)
def test_shipped_spec_matches_pandas_reference(pool_dir: str, spec_file: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    pool = Pool(pool_dir)
    funnel = run(pool, FilterConfig(spec=str(spec_file)), quiet=True)
    expected = _reference(_frame(pool), spec_file.stem)
    uids = pool.read_parquet(f"subsets/{spec_file.stem}/uids.parquet")["uid"].to_pylist()
    assert set(uids) == expected and len(uids) == len(expected)
    assert uids == sorted(uids)
    npy = np.load(pool.open(f"subsets/{spec_file.stem}/uids.npy"))
    assert npy.dtype == np.dtype("u8,u8") and sorted(npy_array_to_uids(npy)) == uids
    assert funnel["kept"] == len(expected)
    assert funnel["population"] + funnel["not_downloaded"] == 1200
    remaining = funnel["conditions"][-1]["remaining"] if funnel["conditions"] else funnel["population"]
    assert remaining == len(expected)


def test_funnel_of_the_dedup_basic_clip_spec(pool_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    pool = Pool(pool_dir)
    run(pool, FilterConfig(spec=str(FILTERS / "datacomp_basic_dedup_clip30.yaml")), quiet=True)
    funnel = pool.read_json("subsets/datacomp_basic_dedup_clip30/funnel.json")
    df = _frame(pool)
    rows = funnel["conditions"]
    assert [r["condition"] for r in rows][:2] == ["exact dedup", "English (fastText)"]
    assert rows[0]["removed_alone"] == int(df.is_dup.sum())
    assert rows[1]["removed_alone"] == int((df.lang != "en").sum())
    assert rows[1]["removed_in_order"] == int(((df.lang != "en") & ~df.is_dup).sum())
    cut = funnel["cutoffs"][0]
    assert cut["population"] == len(df) and cut["target"] == int(len(df) * 0.3)


def test_rerun_skips_done_shards_and_changed_spec_starts_over(pool_dir: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    pool = Pool(pool_dir)
    spec = tmp_path / "s.yaml"
    spec.write_text("name: resume\nconditions:\n  - {column: clip_b32_similarity_score, ge: 0.3}\n")
    first = run(pool, FilterConfig(spec=str(spec)), quiet=True)
    assert first["passes"][APPLY_PASS]["shards_run_now"] == 3
    again = run(pool, FilterConfig(spec=str(spec)), quiet=True)
    assert again["kept"] == first["kept"]
    assert again["passes"][APPLY_PASS]["shards_skipped_as_done"] == 3
    assert pool.read_report("filter/resume")["shards_run_now"] == 0
    assert sorted(pool.marker_ids(layout.markers_dir("filter/resume", APPLY_PASS))) == ["00000000", "00000001",
                                                                                       "00000002"]
    spec.write_text("name: resume\nconditions:\n  - {column: clip_b32_similarity_score, ge: 0.32}\n")
    second = run(pool, FilterConfig(spec=str(spec)), quiet=True)
    assert second["passes"][APPLY_PASS]["shards_run_now"] == 3
    assert pool.read_report("filter/resume")["shards_run_now"] == 3
    assert second["kept"] < first["kept"]


def _kept(pool: Pool, name: str) -> set[str]:
    return set(pool.read_parquet(layout.subset_uids(name))["uid"].to_pylist())


@pytest.mark.fault("filter", "a dedup table or a score that a cut-off ranks changed since the subset was built "
                   "(same spec)", "every shard of the apply pass is redone (its fingerprint changed); an unchanged "
                   "rerun skips every shard")
def test_changed_dedup_table_or_cutoff_redoes_every_shard(tmp_path: Path, local_executor: None) -> None:
    pool = Pool(str(tmp_path / "pool"))
    make_score_pool(pool, n_shards=3, rows_per_shard=80, seed=5)
    spec = tmp_path / "s.yaml"
    spec.write_text("name: fp\nconditions:\n  - {not_duplicate: exact}\n"
                    "  - {column: clip_l14_similarity_score, top_fraction: 0.5}\n")
    config = FilterConfig(spec=str(spec))
    first = run(pool, config, quiet=True)
    assert first["passes"][APPLY_PASS]["shards_run_now"] == 3
    unchanged = run(pool, config, quiet=True)
    assert unchanged["passes"][APPLY_PASS]["shards_skipped_as_done"] == 3
    assert unchanged["passes"][APPLY_PASS]["shards_run_now"] == 0 and unchanged["kept"] == first["kept"]

    # As many duplicates as before, other uids: a count would not tell the tables apart.
    dups = pool.read_parquet(layout.dedup_table("exact"))
    flags = dups["is_duplicate"].to_numpy(zero_copy_only=False)
    moved = np.roll(flags, 1)
    assert moved.sum() == flags.sum() and (moved != flags).any()
    pool.write_parquet(layout.dedup_table("exact"), dups.set_column(2, "is_duplicate", pa.array(moved)))
    redone = run(pool, config, quiet=True)
    assert redone["passes"][APPLY_PASS]["shards_run_now"] == 3
    assert redone["passes"][APPLY_PASS]["shards_skipped_as_done"] == 0
    # The same pool never filtered: what the redone subset must hold.
    shutil.copytree(tmp_path / "pool", tmp_path / "fresh", ignore=shutil.ignore_patterns("subsets", "filter"))
    fresh = Pool(str(tmp_path / "fresh"))
    run(fresh, config, quiet=True)
    assert _kept(pool, "fp") == _kept(fresh, "fp") != set()

    # One shard's scores change: the global cut-off moves, so every shard's part is stale.
    rel = "scores/l14/00000001.parquet"
    scores = pool.read_parquet(rel)
    column = scores.column_names.index("clip_l14_similarity_score")
    pool.write_parquet(rel, scores.set_column(column, "clip_l14_similarity_score",
                                              pc.add(scores["clip_l14_similarity_score"], 1.0)))
    moved_cut = run(pool, config, quiet=True)
    assert moved_cut["cutoffs"][0]["threshold"] != first["cutoffs"][0]["threshold"]
    assert moved_cut["passes"][APPLY_PASS]["shards_run_now"] == 3


def test_requires_what_the_spec_reads(tmp_path: Path) -> None:
    """`curate run` checks these before any work: dedup tables and embeddings only when the spec uses them."""
    stage = Filter()
    assert stage.requires(FilterConfig(spec=str(FILTERS / "clip_b32_threshold.yaml"))) == ("population",)
    assert stage.requires(FilterConfig(spec=str(FILTERS / "datacomp_basic_dedup_clip30.yaml"))) == ("population",
                                                                                                   "dedup")
    spec = tmp_path / "k.yaml"
    spec.write_text("name: k\nconditions:\n  - {not: {image_clusters: {embeddings: l14, reference: r.npy, "
                    "clusters: 4}}}\n")
    assert stage.requires(FilterConfig(spec=str(spec))) == ("population", "embeddings")
    assert stage.key(FilterConfig(spec=str(spec))) == "filter/k"
    assert stage.key(FilterConfig(spec=str(spec), name="other")) == "filter/other"


@pytest.mark.ray
def test_on_ray_exact_and_approximate(pool_dir: str, ray_runtime: object) -> None:
    pool = Pool(pool_dir)
    exact = run(pool, FilterConfig(spec=str(FILTERS / "clip_l14_top30.yaml"), name="l14_exact"), quiet=True)
    approx = run(pool, FilterConfig(spec=str(FILTERS / "clip_l14_top30.yaml"), name="l14_approx",
                                    approximate=True), quiet=True)
    assert exact["kept"] == len(_reference(_frame(pool), "clip_l14_top30"))
    bound = approx["cutoffs"][0]["rank_error_bound"]
    assert exact["kept"] <= approx["kept"] <= exact["kept"] + bound
    assert abs(approx["cutoffs"][0]["threshold"] - exact["cutoffs"][0]["threshold"]) <= 2**-7 * 0.3


def test_cli_filter_and_spec_validate(pool_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    runner = CliRunner()
    ok = runner.invoke(app, ["spec", "validate", str(FILTERS / "laion2b_fasttext.yaml"), "--pool", pool_dir])
    assert ok.exit_code == 0, ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nconditions:\n  - {column: nope, gt: 1}\n")
    from curate.errors import ConfigError

    result = runner.invoke(app, ["spec", "validate", str(bad), "--pool", pool_dir])
    assert isinstance(result.exception, ConfigError)
    assert f"{bad}:3: conditions[0].column: unknown column 'nope'" in str(result.exception)
    done = runner.invoke(app, ["filter", "--pool", pool_dir, "--spec", str(FILTERS / "laion2b_fasttext.yaml"),
                               "--name", "laion_cli"])
    assert done.exit_code == 0, done.output
    assert Pool(pool_dir).exists("subsets/laion_cli/uids.npy")
    for args in (["filter", "--help"], ["spec", "validate", "--help"]):
        assert runner.invoke(app, args).exit_code == 0
