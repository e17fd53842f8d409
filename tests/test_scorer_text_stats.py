"""text_stats: DataComp's caption_num_words (whitespace split) and caption_num_chars."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from curate.scorers.text_stats import TextStatsConfig, TextStatsScorer


def _score(captions: list[str]) -> dict[str, np.ndarray]:
    return TextStatsScorer(TextStatsConfig())({"caption": np.array(captions, dtype=object)})


def test_known_captions() -> None:
    out = _score(["a red circle", "", "  spaced\tout\nwords  ", "中文 字幕", "naïve café"])
    assert out["caption_num_words"].tolist() == [3, 0, 3, 2, 2]
    assert out["caption_num_chars"].tolist() == [12, 0, 20, 5, 10]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"])), max_size=20))
def test_matches_python_split_and_len(captions: list[str]) -> None:
    out = _score(captions)
    assert out["caption_num_words"].tolist() == [len(c.split()) for c in captions]
    assert out["caption_num_chars"].tolist() == [len(c) for c in captions]
