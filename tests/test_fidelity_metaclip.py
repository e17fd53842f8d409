"""Parity with MetaCLIP's code (facebookresearch/MetaCLIP).

The `metaclip_*` / `metaclip2_*` functions transcribe the peer's rules:
- metaclip/substr_matching.py (MetaCLIP): `spacing`, entries as f" {entry} ", pyahocorasick
  `add_word(key, (idx, key))` and `iter`, matched ids as a set;
- metaclip/curation/substr_matching.py (MetaCLIP 2): `txt.strip()`, `spacing`, `is_cjk_or_similar`,
  `get_spaced_metadata`;
- metaclip/curation/curate.py (MetaCLIP 2): `p_to_t`, `t_to_p`, `count_to_prob`, and the sample's
  probability `1 - prod(1 - entry_probs[matched])`.
curate runs on generated captions with the edges planted (full-width punctuation, kana and mixed
script, entries carrying punctuation, whitespace runs and non-ASCII spaces, duplicate entries) and
must give the same matches, counts, t and per-sample keep probabilities.
"""

from __future__ import annotations

import string
from pathlib import Path

import ahocorasick
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curate.config import BalanceConfig
from curate.stages import balance
from curate.stages.balance.matching import build_matcher
from curate.stages.balance.metadata import ALL_LANGUAGES
from curate.stages.balance.sampling import p_to_t, t_to_p
from tests.test_balance_stage import build_pool

# ------------------------------------------------------------------ MetaCLIP's rules, transcribed

ADDITIONAL_PUNCTUATION = ["，", "。", "、", "；", "：", "？", "！", "“", "”", "‘", "’", "（", "）", "【", "】",
                          "《", "》", "〈", "〉", "「", "」", "『", "』", "～", "—"]


def metaclip_spacing(text: str) -> str:
    puncts_to_wrap = [",", ".", ";", ":", "?", "!", "`"]
    chars_to_space = ["\t", "\n", "\r"]
    spaced_text = f" {text} "
    for punct_to_wrap in puncts_to_wrap:
        spaced_text = spaced_text.replace(punct_to_wrap, f" {punct_to_wrap} ")
    for char_to_space in chars_to_space:
        spaced_text = spaced_text.replace(char_to_space, " ")
    return spaced_text


def metaclip2_is_cjk_or_similar(char: str) -> bool:
    code_point = ord(char)
    if (0x4E00 <= code_point <= 0x9FFF or 0x3400 <= code_point <= 0x4DBF or 0x20000 <= code_point <= 0x2A6DF
            or 0x2A700 <= code_point <= 0x2B73F or 0x2B740 <= code_point <= 0x2B81F
            or 0x2B820 <= code_point <= 0x2CEAF or 0x2CEB0 <= code_point <= 0x2EBEF
            or 0xF900 <= code_point <= 0xFAFF or 0x2E80 <= code_point <= 0x2EFF
            or 0x2F00 <= code_point <= 0x2FDF or 0x2FF0 <= code_point <= 0x2FFF):
        return True
    if (0x0E00 <= code_point <= 0x0E7F or 0x0E80 <= code_point <= 0x0EFF or 0x1000 <= code_point <= 0x109F
            or 0x1780 <= code_point <= 0x17FF or 0x0F00 <= code_point <= 0x0FFF):
        return True
    return char in string.punctuation or char in ADDITIONAL_PUNCTUATION


def metaclip2_spaced_metadata(metadata: list[str]) -> list[tuple[int, str]]:
    spaced_metadata = []
    for idx, entry in enumerate(metadata):
        spaced_entry = entry
        if not metaclip2_is_cjk_or_similar(spaced_entry[0]):
            spaced_entry = f" {spaced_entry}"
        if not metaclip2_is_cjk_or_similar(spaced_entry[-1]):
            spaced_entry = f"{spaced_entry} "
        spaced_metadata.append((idx, spaced_entry))
    return spaced_metadata


def reference_automaton(spaced_metadata: list[tuple[int, str]]) -> ahocorasick.Automaton:
    automaton = ahocorasick.Automaton()
    for idx, key in spaced_metadata:
        automaton.add_word(key, (idx, key))
    automaton.make_automaton()
    return automaton


def reference_matches(captions: list[str], metadata: list[str], version: int) -> list[list[int]]:
    if version == 1:
        automaton = reference_automaton([(i, f" {e} ") for i, e in enumerate(metadata)])
    else:
        automaton = reference_automaton(metaclip2_spaced_metadata(metadata))
    out = []
    for text in captions:
        if version == 2:
            text = text.strip()
        ids = {entry_id for _, (entry_id, _) in automaton.iter(metaclip_spacing(text))}
        out.append(sorted(ids))
    return out


def metaclip2_p_to_t(entry_counts: np.ndarray, p: float) -> int:
    counts = np.sort(entry_counts)
    cumsum_counts = np.cumsum(counts)
    portion = cumsum_counts / counts.sum()
    p_idx = (np.abs(portion - p)).argmin()
    return counts[p_idx]


def metaclip2_t_to_p(entry_counts: np.ndarray, t: int) -> float:
    return float(entry_counts[entry_counts < t].sum() / entry_counts.sum())


def metaclip2_count_to_prob(entry_count: np.ndarray, t: int) -> np.ndarray:
    p_entry_counts = np.array(entry_count)
    p_entry_counts[p_entry_counts < t] = t
    return t / p_entry_counts


# ------------------------------------------------------------------ generated captions and metadata

WORDS = ["dog", "hot", "hot dog", "St.", "Louis", "St. Louis", "C++", "Yahoo!", "ねこ", "かわいい", "東京タワー",
         "城市", "夜景", "猫", "ไทย", "a", "b", "a b", "(b)", "—", "x,y", "U.S."]
SEPARATORS = [" ", " ", " ", "  ", "\t", "\n", "\r", "\u00a0", "\u3000", "", "，", "。", "；", "：", "？", "！",
              ", ", ". ", "!", "?", ":", ";", "`", "-", "'"]
caption_strategy = st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(SEPARATORS)), max_size=8).map(
    lambda parts: "".join(w + s for w, s in parts))
# Entries: vocabulary words with punctuation, full-width marks, kana, mixed script, and repeats.
entry_strategy = st.lists(st.sampled_from([*WORDS, "dog", "ねこ", "hot  dog", "夜景。", "，猫"]),
                          min_size=1, max_size=14)


def _pairs_to_lists(rows: np.ndarray, entries: np.ndarray, n: int) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(n)]
    for r, e in zip(rows.tolist(), entries.tolist(), strict=True):
        out[r].append(e)
    return out


@pytest.mark.parametrize(("rule", "version"), [("metaclip", 1), ("metaclip2", 2)])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(captions=st.lists(caption_strategy, min_size=1, max_size=10), metadata=entry_strategy)
def test_matching_equals_metaclip(rule: str, version: int, captions: list[str], metadata: list[str]) -> None:
    matcher, _ = build_matcher({ALL_LANGUAGES: metadata}, rule=rule)  # type: ignore[arg-type]
    got = _pairs_to_lists(*matcher.match(pa.array(captions, pa.string())), len(captions))
    assert got == reference_matches(captions, metadata, version)


def test_documented_examples() -> None:
    """The examples docs/balance.md gives for each rule's differences."""
    def match(rule: str, caption: str, entries: list[str]) -> list[int]:
        matcher, _ = build_matcher({ALL_LANGUAGES: entries}, rule=rule)  # type: ignore[arg-type]
        return _pairs_to_lists(*matcher.match(pa.array([caption])), 1)[0]

    assert match("metaclip", "a hot  dog", ["hot dog"]) == []
    assert match("normalized", "a hot  dog", ["hot dog"]) == [0]
    assert match("metaclip", "a\u00a0dog", ["dog"]) == []
    assert match("metaclip", "St. Louis", ["St. Louis"]) == []
    assert match("normalized", "St. Louis", ["St. Louis"]) == [0]
    assert match("metaclip", "猫，狗", ["猫"]) == []  # full-width comma not spaced, 猫 not padded-matched
    assert match("metaclip2", "猫，狗", ["猫"]) == [0]  # CJK entry: no padding
    assert match("metaclip2", "かわいいねこ", ["ねこ"]) == []  # kana are padded in MetaCLIP 2
    assert match("normalized", "かわいいねこ", ["ねこ"]) == []  # a spaced language by default ("*")
    assert match("metaclip2", "東京タワー です", ["東京タワー"]) == [0]  # left unpadded, right padded
    assert match("metaclip2", "\u3000dog", ["dog"]) == [0] and match("metaclip", "\u3000dog", ["dog"]) == []
    assert match("metaclip2", "夜晚的城市景色", ["城市"]) == [0]
    assert match("metaclip2", "かわいい ねこ", ["ねこ"]) == [0]
    assert match("metaclip2", "C++11 code", ["C++"]) == [0] and match("metaclip", "C++11 code", ["C++"]) == []
    assert match("normalized", "猫，狗", ["猫"]) == [0]
    assert match("metaclip", "a dog", ["dog", "dog"]) == [1]  # the later duplicate takes the pattern
    assert match("normalized", "a dog", ["dog", "dog"]) == [0, 1]


def test_p_to_t_equals_metaclip2_on_generated_counts() -> None:
    rng = np.random.default_rng(0)
    for trial in range(40):
        counts = rng.zipf(1.3 + trial * 0.02, size=int(rng.integers(50, 50_000))).clip(max=10**6)
        counts[rng.random(counts.size) < 0.1] = 0  # never-matched entries
        for p in (0.001, 0.01, 0.06, 0.1, 0.3, 0.5, 0.9, 0.999):
            t = metaclip2_p_to_t(counts.astype(np.uint64), p)
            assert p_to_t(p, counts) == int(t)
            assert t_to_p(int(t), counts) == metaclip2_t_to_p(counts.astype(np.uint64), int(t))


def _write_entries(folder: Path, name: str, entries: list[str]) -> None:
    (folder / f"{name}.txt").write_text("\n".join(entries) + "\n")


def _captions(rng: np.random.Generator, n: int, words: list[str]) -> list[str]:
    weights = 1.0 / np.arange(1, len(words) + 1) ** 1.1
    weights /= weights.sum()
    out = []
    for _ in range(n):
        k = int(rng.integers(1, 6))
        picked = rng.choice(len(words), size=k, p=weights)
        seps = rng.choice(SEPARATORS, size=k)
        out.append("".join(words[i] + s for i, s in zip(picked.tolist(), seps.tolist(), strict=True)))
    return out


@pytest.mark.parametrize("per_language", [False, True])
def test_stage_equals_metaclip_pipeline(tmp_path: Path, per_language: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Default rule, counts, t (from a tail fraction), entry and per-sample probabilities of a balance
    run equal MetaCLIP's on 24k generated captions; the inverted index is the written output."""
    monkeypatch.setenv("CURATE_EXECUTOR", "local")
    rng = np.random.default_rng(1 + per_language)
    vocab = [f"w{i}" for i in range(300)] + WORDS
    captions = _captions(rng, 24_000, vocab)
    entries = [*vocab, "w1", "w2 w3", "w5.", "hot  dog", "，猫", "w0"]  # duplicates and unmatchable forms
    folder = tmp_path / "meta"
    folder.mkdir()
    if per_language:
        langs = rng.choice(["en", "fr", "yue", "", "xx"], size=len(captions)).tolist()
        _write_entries(folder, "en", entries)
        _write_entries(folder, "fr", entries[::-1])
        _write_entries(folder, "other", entries[:50])
        metadata = str(folder)
        routes = {"en": "en", "fr": "fr", "yue": "other", "": "other", "xx": "other"}
        tables = {"en": entries, "fr": entries[::-1], "other": entries[:50]}
        cfg = BalanceConfig(metadata=metadata, tail_fraction=0.1, language_map={"xx": "N/A"})
    else:
        langs = None
        _write_entries(folder, "all", entries)
        metadata = str(folder / "all.txt")
        routes = {}
        tables = {ALL_LANGUAGES: entries}
        cfg = BalanceConfig(metadata=metadata, tail_fraction=0.1)
    pool = build_pool(tmp_path / "pool", captions, 3, langs=langs)
    report = balance.run(pool, cfg, quiet=True)
    assert report["rule"] == ("metaclip2" if per_language else "metaclip")

    version = 2 if per_language else 1
    samples = pool.read_parquet_dir("balanced/balanced/samples").to_pandas().set_index("uid")
    shards = pool.read_parquet_dir("shards").to_pandas()
    by_uid = dict(zip(shards.uid, shards.caption, strict=True))
    lang_of = dict(zip(shards.uid, langs or [ALL_LANGUAGES] * len(shards), strict=True))
    entry_table = pool.read_parquet("balanced/balanced/entry_counts.parquet").to_pandas()
    first_id = {lang: int(g.entry_id.min()) for lang, g in entry_table.groupby("language")}
    expected_p: dict[str, float] = {}
    for lang, meta in tables.items():
        uids = [u for u in by_uid if (routes.get(lang_of[u], lang_of[u]) if per_language else ALL_LANGUAGES) == lang]
        matched = reference_matches([by_uid[u] for u in uids], meta, version)
        counts = np.zeros(len(meta), np.uint64)
        for ids in matched:
            counts[ids] += 1
        got_counts = entry_table[entry_table.language == lang].sort_values("entry_id")["count"].to_numpy()
        assert got_counts.tolist() == counts.astype(np.int64).tolist()
        t = metaclip2_p_to_t(counts, 0.1)
        assert report["thresholds"][lang]["t"] == int(t)
        probs = metaclip2_count_to_prob(counts, t)
        for uid, ids in zip(uids, matched, strict=True):
            got_ids = (np.asarray(samples.at[uid, "entry_ids"], np.int64) - first_id[lang]).tolist()
            assert got_ids == ids
            expected_p[uid] = float(1.0 - np.prod(1.0 - probs[ids])) if ids else 0.0
    got_p = samples.loc[list(expected_p), "keep_probability"].to_numpy()
    np.testing.assert_allclose(got_p, list(expected_p.values()), rtol=1e-12, atol=1e-15)
    assert samples["kept"].sum() == report["actual_kept"]
    kept = set(pool.read_parquet("balanced/balanced/uids.parquet")["uid"].to_pylist())
    assert kept == set(samples.index[samples["kept"]])
    if per_language:
        routed = samples["metadata_language"].to_dict()
        assert all(routed[u] == routes[lang_of[u]] for u in routed)
