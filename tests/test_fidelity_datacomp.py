"""Parity with DataComp's baseline code (mlfoundations/datacomp, baselines/apply_filter.py).

The `datacomp_*` functions below transcribe DataComp's rules line for line (numpy/pandas, one
caption at a time where DataComp goes one at a time), and curate's filter stage runs on generated
pools with the edges planted: non-ASCII whitespace in captions, a score exactly at the (n+1)-th
value, ties, NaN and null scores. Kept uid sets must be equal and uids.npy byte-identical to what
DataComp's apply_filter saves (`uids.sort(); np.save(path, uids)` of a "u8,u8" array).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from curate.config import FilterConfig
from curate.pool import Pool
from curate.scorers.base import CAPTION
from curate.scorers.language import LanguageConfig, LanguageScorer, bundled_model_path
from curate.scorers.text_stats import TextStatsConfig, TextStatsScorer
from curate.shards import SHARD_DIR
from curate.stages.filter import run
from curate.testing.pool import make_score_pool

FILTERS = Path(__file__).resolve().parent.parent / "filters"
KEY = "clip_l14_similarity_score"

# Characters Python's str.split() treats as whitespace but fastText (ASCII whitespace only) does not.
UNICODE_SPACES = ["\u00a0", "\u2009", "\u2028", "\u3000", "\u0085", "\u001c", "\u202f", "\u1680"]


# ----------------------------------------------------------------- DataComp's rules, transcribed


def datacomp_get_threshold(values: np.ndarray, fraction: float) -> Any:
    """apply_filter.get_threshold."""
    n = int(len(values) * fraction)
    return -np.sort(-values)[n]


def datacomp_uid_array(uids: Any) -> np.ndarray:
    """load_uids_with_clip_score_helper's uid conversion."""
    return np.array([(int(uid[:16], 16), int(uid[16:32], 16)) for uid in uids], np.dtype("u8,u8"))


def datacomp_saved_bytes(uids: np.ndarray) -> bytes:
    """apply_filter.apply_filter's ending: sort, np.save."""
    uids.sort()
    buf = io.BytesIO()
    np.save(buf, uids)
    return buf.getvalue()


def datacomp_fasttext_language(text: str, model: Any) -> str:
    """apply_filter.get_fasttext_language."""
    text = text.replace("\n", " ")
    return model.predict(text)[0][0].split("__label__")[1]


def datacomp_basic_filter(df: pd.DataFrame, model: Any) -> np.ndarray:
    """apply_filter.load_uids_with_basic_filter_helper."""
    fasttext_lang_pred = df.text.apply(lambda x: datacomp_fasttext_language(x, model))
    caption_num_words = df.text.apply(lambda x: len(x.split()))
    caption_num_chars = df.text.apply(lambda x: len(x))
    uid_int = df.uid.apply(int, base=16)
    uid_upper_uint64 = (uid_int // 2**64).astype("uint64")
    uid_lower_uint64 = (uid_int % 2**64).astype("uint64")
    inds_array = np.array(list(zip(uid_upper_uint64, uid_lower_uint64, strict=True)), "u8,u8")
    english_mask = fasttext_lang_pred == "en"
    caption_mask = (caption_num_words > 2) & (caption_num_chars > 5)
    min_image_dim = np.minimum(df.original_width, df.original_height)
    max_image_dim = np.maximum(df.original_width, df.original_height)
    aspect_ratio = max_image_dim / min_image_dim
    image_mask = (min_image_dim >= 200) & (aspect_ratio <= 3.0)
    return inds_array[english_mask & caption_mask & image_mask]


# ----------------------------------------------------------------- generated pools


def _plant_scores(pool: Pool, rng: np.random.Generator, fraction: float) -> None:
    """Rewrite the L/14 scores so that rank n (0-based) holds a tie of 3 at a value below the n-th
    highest, the rest of the ranking is full of ties, and ~4% of the rows are NaN or null."""
    shards = sorted(p.stem for p in Path(pool.uri("scores/l14")).glob("*.parquet"))
    tables = {sid: pool.read_parquet(f"scores/l14/{sid}.parquet") for sid in shards}
    sizes = [t.num_rows for t in tables.values()]
    total = sum(sizes)
    n = int(total * fraction)
    missing = total // 25
    high = rng.choice(np.linspace(0.35, 0.45, 40, dtype=np.float32), size=n)
    at_rank = np.full(3, np.float32(0.3))
    low = rng.choice(np.linspace(0.1, 0.29, 60, dtype=np.float32), size=total - n - 3 - missing)
    values = np.concatenate([high, at_rank, low, np.full(missing, np.nan, np.float32)])
    order = rng.permutation(total)
    values = values[order]
    is_null = np.isnan(values) & (rng.random(total) < 0.5)  # half of the missing as null, half as NaN
    start = 0
    for sid, size in zip(shards, sizes, strict=True):
        part = slice(start, start + size)
        start += size
        col = pa.array(values[part], pa.float32(), mask=is_null[part])
        table = tables[sid]
        pool.write_parquet(f"scores/l14/{sid}.parquet", table.set_column(1, KEY, col))


def _frame(pool: Pool) -> pd.DataFrame:
    shards = pool.read_parquet_dir(SHARD_DIR).to_pandas()
    df = shards[shards.status == "success"][["uid", "caption", "original_width", "original_height"]]
    return df.merge(pool.read_parquet_dir("scores/l14").to_pandas(), on="uid", how="left")


@pytest.fixture(scope="module")
def planted_pool(tmp_path_factory: pytest.TempPathFactory) -> Pool:
    pool = Pool(str(tmp_path_factory.mktemp("fidelity") / "pool"))
    make_score_pool(pool, n_shards=4, rows_per_shard=6000, seed=11, scorers=("l14",), dedup=False)
    _plant_scores(pool, np.random.default_rng(5), 0.3)
    return pool


def test_top30_equals_datacomp_get_threshold(planted_pool: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    funnel = run(planted_pool, FilterConfig(spec=str(FILTERS / "clip_l14_top30.yaml")), quiet=True)
    df = _frame(planted_pool)
    assert df[KEY].isna().sum() > 0 and len(df) > 20_000
    threshold = datacomp_get_threshold(df[KEY].values, 0.3)
    assert threshold == np.float32(0.3)  # the planted tie at rank n
    expected = datacomp_uid_array(df[df[KEY] >= threshold]["uid"].values)
    assert len(expected) == int(len(df) * 0.3) + 3
    saved = planted_pool.read_bytes("subsets/clip_l14_top30/uids.npy")
    assert saved == datacomp_saved_bytes(expected)
    cut = funnel["cutoffs"][0]
    assert cut["population"] == len(df) and cut["target"] == int(len(df) * 0.3)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.5, 0.9, 0.97])
def test_fraction_edges_equal_datacomp(planted_pool: Pool, tmp_path: Path, fraction: float,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """0.0 keeps the maximum's ties; at 0.97 rank n falls among the NaNs and nothing is kept."""
    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    spec = tmp_path / "f.yaml"
    spec.write_text(f"name: f{int(fraction * 100)}\nconditions:\n  - {{column: {KEY}, top_fraction: {fraction}}}\n")
    for approximate in (False, True):
        name = f"f{int(fraction * 100)}{'a' if approximate else 'e'}"
        funnel = run(planted_pool, FilterConfig(spec=str(spec), name=name, approximate=approximate), quiet=True)
        df = _frame(planted_pool)
        threshold = datacomp_get_threshold(df[KEY].values, fraction)
        expected = datacomp_uid_array(df[df[KEY] >= threshold]["uid"].values)
        if fraction == 0.97:
            assert np.isnan(threshold) and len(expected) == 0
        if fraction == 0.0:
            assert len(expected) >= 1
        saved = planted_pool.read_bytes(f"subsets/{name}/uids.npy")
        if approximate:
            # A superset within the reported bound; equal here, as the planted values are far apart.
            assert funnel["kept"] - len(expected) <= funnel["cutoffs"][0]["rank_error_bound"]
        assert saved == datacomp_saved_bytes(expected)


def _caption(rng: np.random.Generator, words: list[str]) -> str:
    parts = list(rng.choice(words, size=int(rng.integers(1, 9))))
    out = parts[0]
    for word in parts[1:]:
        out += str(rng.choice([" ", " ", "\n", *UNICODE_SPACES])) + word
    if rng.random() < 0.1:
        out = str(rng.choice(UNICODE_SPACES)) + out + "\n"
    return out


@pytest.fixture(scope="module")
def caption_pool(tmp_path_factory: pytest.TempPathFactory) -> Pool:
    """A pool whose captions carry non-ASCII whitespace, scored by the real language/text_stats scorers."""
    pool = Pool(str(tmp_path_factory.mktemp("captions") / "pool"))
    shards = make_score_pool(pool, n_shards=2, rows_per_shard=6000, seed=3, scorers=(), dedup=False)
    rng = np.random.default_rng(9)
    words = ["a", "photo", "of", "the", "white", "church", "red", "car", "on", "road", "dog", "beach", "Haus",
             "der", "une", "maison", "blanche", "casa", "blanca", "mountain", "sunset", "城市", "夜景"]
    language = LanguageScorer(LanguageConfig())
    text_stats = TextStatsScorer(TextStatsConfig())
    for sid in shards:
        shard = pool.read_parquet(f"{SHARD_DIR}/{sid}.parquet")
        captions = pa.array([_caption(rng, words) for _ in range(shard.num_rows)], pa.string())
        shard = shard.set_column(shard.schema.get_field_index("caption"), "caption", captions)
        pool.write_parquet(f"{SHARD_DIR}/{sid}.parquet", shard)
        ok = shard.filter(pa.compute.equal(shard["status"], "success"))
        batch = {CAPTION: np.array(ok["caption"].to_pylist(), dtype=object)}
        lang, stats = language(batch), text_stats(batch)
        pool.write_parquet(f"scores/language/{sid}.parquet", pa.table({"uid": ok["uid"], **lang}))
        pool.write_parquet(f"scores/text_stats/{sid}.parquet", pa.table({"uid": ok["uid"], **stats}))
    return pool


def test_basic_filter_equals_datacomp_helper(caption_pool: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    import fasttext

    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    run(caption_pool, FilterConfig(spec=str(FILTERS / "datacomp_basic.yaml")), quiet=True)
    shards = caption_pool.read_parquet_dir(SHARD_DIR).to_pandas()
    df = shards[shards.status == "success"].rename(columns={"caption": "text"})
    model = fasttext.load_model(str(bundled_model_path()))
    expected = datacomp_basic_filter(df, model)
    assert 1000 < len(expected) < len(df)
    assert caption_pool.read_bytes("subsets/datacomp_basic/uids.npy") == datacomp_saved_bytes(expected)


def test_language_input_is_datacomps(caption_pool: Pool) -> None:
    """The exact issue case, and every caption of the pool: curate's label == DataComp's."""
    import fasttext

    model = fasttext.load_model(str(bundled_model_path()))
    scorer = LanguageScorer(LanguageConfig())
    church = "a\u00a0photo\u00a0of\u00a0a\u00a0white\u00a0church"
    got = scorer({CAPTION: np.array([church, " ".join(church.split())], dtype=object)})["lang"].tolist()
    assert got == [datacomp_fasttext_language(church, model), "en"]
    assert got[0] != "en"  # lid.176 on the uncollapsed caption: why collapsing changed the label
    captions = caption_pool.read_parquet_dir(SHARD_DIR)["caption"].to_pylist()
    got = scorer({CAPTION: np.array(captions, dtype=object)})["lang"].tolist()
    assert got == [datacomp_fasttext_language(c, model) for c in captions]
