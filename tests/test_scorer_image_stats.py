"""image_stats: pHash of a resized copy is close, of an unrelated image far; sizes and aspect ratio."""

from __future__ import annotations

import numpy as np
from PIL import Image

from curate.scorers.image_stats import PHASH_VIEW, ImageStatsConfig, ImageStatsScorer, hamming, phash_batch
from curate.stages.score.decode import decode_image
from curate.testing.synthetic import draw_shape, encode


def _photo(seed: int, size: int = 256) -> Image.Image:
    """A smooth random image (low-frequency structure, like a photo), reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(small, "RGB").resize((size, size), Image.Resampling.BICUBIC)


def _hash(img: Image.Image, quality: int = 90) -> int:
    view = decode_image(encode(img, quality=quality), [PHASH_VIEW], 10**8).views[PHASH_VIEW.column]
    return int(phash_batch(view[None])[0])


def test_resized_recompressed_copy_is_close_unrelated_far() -> None:
    for seed in range(5):
        original = _photo(seed, 256)
        copy = original.resize((97, 97), Image.Resampling.LANCZOS)
        assert hamming(_hash(original), _hash(copy, quality=60))[0] <= 6
    far = [hamming(_hash(_photo(a)), _hash(_photo(b)))[0] for a, b in [(0, 1), (2, 3), (4, 5), (6, 7)]]
    assert min(far) >= 16


def test_phash_is_uint64_and_deterministic() -> None:
    grey = np.random.default_rng(0).integers(0, 256, (3, 32, 32)).astype(np.uint8)
    a, b = phash_batch(grey), phash_batch(grey.copy())
    assert a.dtype == np.uint64 and a.tolist() == b.tolist()
    assert phash_batch(np.zeros((0, 32, 32), np.uint8)).shape == (0,)


def test_scorer_columns_and_aspect_ratio() -> None:
    view = decode_image(encode(draw_shape("red", "circle", 64)), [PHASH_VIEW], 10**8).views[PHASH_VIEW.column]
    batch = {
        "image_ok": np.array([True, False]), "decoded_width": np.array([200, 50], np.int32),
        "decoded_height": np.array([100, 0], np.int32), "original_width": np.array([400, -1], np.int32),
        "original_height": np.array([200, -1], np.int32), PHASH_VIEW.column: np.stack([view, np.zeros_like(view)]),
    }
    out = ImageStatsScorer(ImageStatsConfig())(batch)
    assert out["aspect_ratio"][0] == 2.0 and np.isnan(out["aspect_ratio"][1])
    assert out["phash"].dtype == np.uint64 and out["phash"][0] == phash_batch(view[None])[0]
    assert set(out) == set(ImageStatsScorer(ImageStatsConfig()).columns())
