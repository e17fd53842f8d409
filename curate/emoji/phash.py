"""The pool's own perceptual hash of encoded image bytes (the image_stats scorer's decode and pHash),
so the generators can keep unrelated images apart and planted near-copies close, as dedup will see them."""

from __future__ import annotations

import numpy as np

from curate.scorers.image_stats import PHASH_VIEW, phash_batch
from curate.stages.score.decode import decode_image

MAX_PIXELS = 100_000_000


def phash_of(data: bytes) -> int:
    decoded = decode_image(data, [PHASH_VIEW], MAX_PIXELS)
    if not decoded.ok:
        raise ValueError(f"generated image does not decode: {decoded.reason}")
    return int(phash_batch(decoded.views[PHASH_VIEW.column][None])[0])


class HashIndex:
    """Hashes accepted so far; distance() is the nearest one's Hamming distance (64 when empty)."""

    def __init__(self) -> None:
        self._hashes = np.zeros(1024, np.uint64)
        self._n = 0

    def distance(self, h: int) -> int:
        if not self._n:
            return 64
        return int(np.bitwise_count(self._hashes[: self._n] ^ np.uint64(h)).min())

    def add(self, h: int) -> None:
        if self._n == len(self._hashes):
            self._hashes = np.concatenate([self._hashes, np.zeros_like(self._hashes)])
        self._hashes[self._n] = h
        self._n += 1
