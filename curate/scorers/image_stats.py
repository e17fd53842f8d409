"""image_stats: sizes, aspect ratio and a 64-bit DCT perceptual hash (pHash), vectorised over the batch.

pHash: the image squashed to 32x32 greyscale, 2-D DCT-II, the 8x8 lowest frequencies compared with
their median, 64 bits packed most-significant first into a uint64. A resized or re-encoded copy
keeps nearly all bits; unrelated images differ in about half.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from curate.scorers.base import (
    HEIGHT,
    IMAGE_OK,
    ORIG_HEIGHT,
    ORIG_WIDTH,
    WIDTH,
    Batch,
    ImageView,
    Scorer,
    ScorerConfig,
    register,
)

PHASH_VIEW = ImageView(size=32, mode="squash", color="L")


class ImageStatsConfig(ScorerConfig):
    type: Literal["image_stats"] = "image_stats"


def phash_batch(gray: np.ndarray) -> np.ndarray:
    """uint64 pHash of each (32, 32) greyscale image in an (N, 32, 32) array."""
    if gray.shape[0] == 0:
        return np.zeros(0, np.uint64)
    from scipy.fft import dctn  # here, not at import: every Ray worker loads the scorer registry

    freq = dctn(gray.astype(np.float32), type=2, axes=(1, 2), norm="ortho")[:, :8, :8].reshape(len(gray), 64)
    bits = freq > np.median(freq, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").reshape(-1).astype(np.uint64)


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Bit distance between uint64 hashes (elementwise)."""
    x = np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64))
    return np.unpackbits(np.atleast_1d(x).view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


@register
class ImageStatsScorer(Scorer):
    type = "image_stats"
    config_class = ImageStatsConfig

    def columns(self) -> list[str]:
        return ["width", "height", "original_width", "original_height", "aspect_ratio", "phash"]

    def image_columns(self) -> list[str]:
        return ["phash"]

    def views(self) -> list[ImageView]:
        return [PHASH_VIEW]

    def __call__(self, batch: Batch) -> Batch:
        ok = batch[IMAGE_OK].astype(bool)
        width = batch[WIDTH].astype(np.float64)
        height = batch[HEIGHT].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            aspect = np.where(height > 0, width / height, np.nan)
        phash = np.zeros(len(ok), np.uint64)
        phash[ok] = phash_batch(batch[PHASH_VIEW.column][ok])
        return {
            "width": batch[WIDTH], "height": batch[HEIGHT],
            "original_width": batch[ORIG_WIDTH], "original_height": batch[ORIG_HEIGHT],
            "aspect_ratio": aspect, "phash": phash,
        }
