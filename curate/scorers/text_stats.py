"""text_stats: DataComp's caption length columns, computed with pyarrow over the whole batch."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.scorers.base import CAPTION, Batch, Scorer, ScorerConfig, register

# Python's str.split() whitespace: Unicode separators (Z) plus these control characters; a word
# is a maximal run of anything else, so counts equal len(caption.split()) as DataComp computes it.
_WORD = r"[^\p{Z}\t\n\x{0b}\x{0c}\r\x{1c}-\x{1f}\x{85}]+"


class TextStatsConfig(ScorerConfig):
    type: Literal["text_stats"] = "text_stats"


def caption_num_words(captions: pa.Array) -> np.ndarray:
    return pc.count_substring_regex(captions, _WORD).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int32)


def caption_num_chars(captions: pa.Array) -> np.ndarray:
    return pc.utf8_length(captions).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int32)


@register
class TextStatsScorer(Scorer):
    type = "text_stats"
    config_class = TextStatsConfig

    def columns(self) -> list[str]:
        return ["caption_num_words", "caption_num_chars"]

    def __call__(self, batch: Batch) -> Batch:
        captions = pa.array(batch[CAPTION].tolist(), pa.string())
        return {"caption_num_words": caption_num_words(captions), "caption_num_chars": caption_num_chars(captions)}
