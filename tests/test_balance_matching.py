"""Aho-Corasick matching equals a brute-force implementation of MetaCLIP's rule."""

from __future__ import annotations

import json
import pickle

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curate.errors import ConfigError
from curate.stages.balance.matching import (
    PUNCTUATION,
    brute_force_match,
    build_matcher,
    spacing,
    spacing_reference,
)
from curate.stages.balance.metadata import ALL_LANGUAGES, load_metadata

# A small alphabet makes collisions, repeats and overlaps between entries and captions common.
WORDS = ["a", "ab", "b", "ba", "dog", "hot", "St", "Louis", "über", "猫", "がいる", "ไทย", "𝔘"]
ALPHABET = st.sampled_from([*WORDS, *PUNCTUATION, " ", "  ", "\t", "\n", "\u3000", "\xa0", "-", "'", "é", "e\u0301"])
text = st.lists(ALPHABET, max_size=14).map("".join)


def _pairs(rows, entries) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for r, e in zip(rows.tolist(), entries.tolist(), strict=True):
        out.setdefault(r, []).append(e)
    return out


def _check(captions: list[str], entries: list[str], *, spaced: bool, lowercase: bool = False) -> None:
    lang = "en" if spaced else "ja"
    matcher, _ = build_matcher({lang: entries}, lowercase=lowercase)
    got = _pairs(*matcher.match(pa.array(captions, pa.string()), lang))
    for i, caption in enumerate(captions):
        want = brute_force_match(caption, entries, spaced=spaced, lowercase=lowercase)
        assert got.get(i, []) == want, (caption, entries)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(captions=st.lists(text, min_size=1, max_size=8), entries=st.lists(text, min_size=1, max_size=12))
def test_spaced_matching_equals_brute_force(captions: list[str], entries: list[str]) -> None:
    _check(captions, entries, spaced=True)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(captions=st.lists(text, min_size=1, max_size=8), entries=st.lists(text, min_size=1, max_size=12))
def test_unspaced_matching_equals_brute_force(captions: list[str], entries: list[str]) -> None:
    _check(captions, entries, spaced=False)


@settings(max_examples=100, deadline=None)
@given(captions=st.lists(st.text(max_size=30), min_size=1, max_size=6),
       entries=st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=8), lowercase=st.booleans())
def test_arbitrary_unicode_equals_brute_force(captions: list[str], entries: list[str], lowercase: bool) -> None:
    _check(captions, entries, spaced=True, lowercase=lowercase)


@given(st.text(max_size=60))
def test_vectorised_spacing_equals_reference(s: str) -> None:
    assert spacing(pa.array([s])).to_pylist() == [spacing_reference(s)]


def test_adversarial_cases() -> None:
    entries = ["dog", "hot dog", "St. Louis", "dog dog", "do", "g", "dog.", "Louis!"]
    captions = [
        "hot dog, hot dog; dog.dog",   # repeated + overlapping entries, punctuation glued to words
        "hotdog doge undog",           # substrings inside words must not match
        "St.Louis",                    # punctuation spaced in both caption and entry
        "dog dog dog",                 # overlapping occurrences of a two-word entry
        "\tdog\n\ndog ",               # whitespace runs of all kinds
        "Hot Dog",                     # case-sensitive, as MetaCLIP
    ]
    _check(captions, entries, spaced=True)
    matcher, _ = build_matcher({ALL_LANGUAGES: entries})
    got = _pairs(*matcher.match(pa.array(captions)))
    assert got[0] == [0, 1, 6]  # "dog.": the "." is spaced out in both; "dog dog" is not contiguous
    assert 1 not in got
    assert got[2] == [2]
    assert got[3] == [0, 3]
    assert 5 not in got
    assert _pairs(*build_matcher({ALL_LANGUAGES: entries}, lowercase=True)[0].match(pa.array(captions)))[5] == [0, 1]


def test_unspaced_language_matches_inside_words() -> None:
    matcher, _ = build_matcher({"zh": ["猫", "小猫"], "en": ["猫"]})
    assert _pairs(*matcher.match(pa.array(["一只小猫"]), "zh")) == {0: [0, 1]}
    assert _pairs(*matcher.match(pa.array(["一只小猫"]), "en")) == {}


def test_entry_ids_are_global_across_languages() -> None:
    matcher, first = build_matcher({"en": ["cat", "dog"], "fr": ["chat", "chien"]})
    assert first == {"en": 0, "fr": 2}
    assert _pairs(*matcher.match(pa.array(["un chien"]), "fr")) == {0: [3]}


def test_matcher_survives_pickling() -> None:
    matcher, _ = build_matcher({ALL_LANGUAGES: ["hot dog", "dog"]})
    again = pickle.loads(pickle.dumps(matcher))
    assert _pairs(*again.match(pa.array(["a hot dog"]))) == {0: [0, 1]}


def test_metadata_formats(tmp_path) -> None:
    (tmp_path / "m.txt").write_text("cat\n\n dog \nhot dog\n")
    meta = load_metadata(str(tmp_path / "m.txt"))
    assert meta.entries == {ALL_LANGUAGES: ["cat", "dog", "hot dog"]} and meta.blank_lines_skipped[ALL_LANGUAGES] == 1
    (tmp_path / "m.json").write_text(json.dumps(["cat", "dog"]))
    assert load_metadata(str(tmp_path / "m.json")).entries == {ALL_LANGUAGES: ["cat", "dog"]}
    folder = tmp_path / "langs"
    folder.mkdir()
    (folder / "en.txt").write_text("cat\n")
    (folder / "ja.json").write_text(json.dumps(["猫"]))
    meta = load_metadata(str(folder))
    assert meta.per_language and meta.entries == {"en": ["cat"], "ja": ["猫"]}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [("bad.json", "{\"a\": 1}", "JSON list"), ("bad2.json", "[1, \"x\"]", "entry 0"),
     ("broken.json", "[\"a\",", "not valid JSON"), ("empty.txt", "\n\n", "no entries")],
)
def test_metadata_errors(tmp_path, name: str, content: str, message: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_metadata(str(tmp_path / name))


def test_metadata_folder_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_metadata(str(tmp_path / "missing"))
    (tmp_path / "en.csv").write_text("x")
    with pytest.raises(ConfigError, match=r"en\.csv"):
        load_metadata(str(tmp_path))
