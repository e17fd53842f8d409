"""A synthetic pool of score tables for tests and benchmarks of the stages after score.

`make_score_pool(pool, n_shards, rows_per_shard, seed)` writes, per shard, what download and the
scorers would have: the shard parquet (SHARD_SCHEMA, ~8% failed downloads), the score tables of
DESIGN's column contract, the download completion markers, and (optionally) dedup/exact.parquet.
Values are drawn from plausible distributions (CLIP cosines around 0.2-0.35, correlated across
models; ~45% English; image sides 64-2048), vectorised so 10M rows take seconds, not minutes.
uids are random 128-bit hex (not make_uid of url and caption), which keeps generation fast.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curate import layout
from curate.pool import Pool
from curate.shards import SHARD_SCHEMA, shard_name
from curate.testing import random_hex

# Scorer directory -> columns it writes (contract names).
SCORERS: dict[str, tuple[str, ...]] = {
    "b32": ("clip_b32_similarity_score",),
    "l14": ("clip_l14_similarity_score",),
    "dfn": ("clip_dfn_similarity_score",),
    "language": ("lang", "lang_score", "lang_en_score"),
    "text_stats": ("caption_num_words", "caption_num_chars"),
    "image_stats": ("width", "height", "original_width", "original_height", "aspect_ratio", "phash"),
    "nsfw": ("nsfw_image_score", "nsfw_text_score"),
}

_WORDS = np.array(str.split("a photo of the red blue green cat dog house car tree in on with and big small old new "
                            "beach city mountain person woman man child food bowl table chair sky night day"))
_LANGS = np.array(["en", "de", "fr", "es", "ja", "ru", "zh", "pt", "it", "nl"])
_LANG_P = np.array([0.45, 0.1, 0.08, 0.08, 0.07, 0.06, 0.06, 0.04, 0.03, 0.03])


def _caption_bank(rng: np.random.Generator, size: int = 4096) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    lengths = rng.integers(0, 14, size=size)
    captions = [" ".join(rng.choice(_WORDS, size=k)) for k in lengths]
    captions[:8] = ["", "ok", "a", "hi there", "IMG_0001.jpg", "cat", "dog cat", "  "]
    arr = pa.array(captions, pa.string())
    words = np.array([len(c.split()) for c in captions], dtype=np.int32)
    chars = np.array([len(c) for c in captions], dtype=np.int32)
    return arr, words, chars


def make_shard_tables(rng: np.random.Generator, n: int, bank: tuple[pa.Array, np.ndarray, np.ndarray],
                      failure_rate: float = 0.08) -> tuple[pa.Table, dict[str, pa.Table]]:
    """One shard: the download table (all rows) and score tables (successful rows only)."""
    uids = random_hex(rng, n)
    pick = rng.integers(0, len(bank[0]), size=n)
    captions = bank[0].take(pa.array(pick))
    ok = rng.random(n) >= failure_rate
    ow = rng.integers(64, 2049, size=n).astype(np.int32)
    # Mostly landscape/portrait photos, a tail of banners and skyscrapers.
    ratio = np.where(rng.random(n) < 0.9, rng.uniform(0.5, 2.0, n), rng.uniform(0.1, 8.0, n))
    oh = np.clip(ow / ratio, 16, 4096).astype(np.int32)
    scale = np.minimum(1.0, 512 / np.maximum(ow, oh))
    w, h = np.maximum(1, (ow * scale).astype(np.int32)), np.maximum(1, (oh * scale).astype(np.int32))
    status = np.where(ok, "success", rng.choice(["failed_to_download", "failed_to_resize"], size=n))
    nullable = ~ok
    shard = pa.table({
        "key": pa.array([f"{i:09d}" for i in range(n)], pa.string()),
        "uid": uids,
        "url": pa.array(np.char.add("https://img.example.com/", np.arange(n).astype(str)), pa.string()),
        "caption": captions,
        "status": pa.array(status, pa.string()),
        "error_message": pa.array(np.where(ok, None, "synthetic failure"), pa.string()),
        "width": pa.array(w, pa.int32(), mask=nullable),
        "height": pa.array(h, pa.int32(), mask=nullable),
        "original_width": pa.array(ow, pa.int32(), mask=nullable),
        "original_height": pa.array(oh, pa.int32(), mask=nullable),
        "sha256": pa.array(np.where(ok, "0" * 64, None), pa.string()),
    }, schema=SHARD_SCHEMA)

    idx = np.flatnonzero(ok)
    m = len(idx)
    ok_uids = uids.take(pa.array(idx))
    quality = rng.normal(0.0, 1.0, m)
    b32 = 0.28 + 0.045 * quality + rng.normal(0, 0.02, m)
    l14 = 0.24 + 0.05 * quality + rng.normal(0, 0.02, m)
    dfn = 0.20 + 0.06 * quality + rng.normal(0, 0.03, m)
    lang = rng.choice(_LANGS, size=m, p=_LANG_P)
    f32 = np.float32
    lang_score = rng.uniform(0.3, 1.0, m).astype(f32)
    # Derived, not drawn, so the generator's stream (and every pool seeded before it) stays the same.
    lang_en_score = np.where(lang == "en", lang_score, (1 - lang_score) / 4).astype(f32)
    scores = {
        "b32": {"clip_b32_similarity_score": b32.astype(f32)},
        "l14": {"clip_l14_similarity_score": l14.astype(f32)},
        "dfn": {"clip_dfn_similarity_score": dfn.astype(f32)},
        "language": {"lang": pa.array(lang, pa.string()), "lang_score": lang_score,
                     "lang_en_score": lang_en_score},
        "text_stats": {"caption_num_words": bank[1][pick[idx]], "caption_num_chars": bank[2][pick[idx]]},
        "image_stats": {
            "width": w[idx], "height": h[idx], "original_width": ow[idx], "original_height": oh[idx],
            "aspect_ratio": (ow[idx] / oh[idx]).astype(f32),
            "phash": rng.integers(0, np.iinfo(np.uint64).max, size=m, dtype=np.uint64),
        },
        "nsfw": {"nsfw_image_score": rng.beta(1, 12, m).astype(f32), "nsfw_text_score": rng.beta(1, 15, m).astype(f32)},
    }
    tables = {name: pa.table({"uid": ok_uids, **cols}) for name, cols in scores.items()}
    return shard, tables


def make_score_pool(pool: Pool, n_shards: int, rows_per_shard: int, seed: int = 0, *,
                    scorers: tuple[str, ...] | None = None, dedup: bool = True,
                    duplicate_rate: float = 0.05) -> list[str]:
    """Write a synthetic pool; returns the shard ids. `scorers` limits which score tables exist."""
    rng = np.random.default_rng(seed)
    bank = _caption_bank(rng)
    shard_ids = []
    dedup_uids: list[pa.Array] = []
    for index in range(n_shards):
        sid = shard_name(index)
        shard, tables = make_shard_tables(rng, rows_per_shard, bank)
        pool.write_parquet(layout.shard_parquet(sid), shard)
        ok = int((np.asarray(shard["status"]) == "success").sum())
        stats = {"samples": shard.num_rows, "successes": ok, "counts": {"success": ok, "failed": shard.num_rows - ok}}
        pool.write_json(layout.shard_stats(sid), stats)
        for name, table in tables.items():
            if scorers is None or name in scorers:
                pool.write_parquet(f"scores/{name}/{sid}.parquet", table)
        dedup_uids.append(tables["b32"]["uid"].combine_chunks())
        pool.write_json(layout.download_marker(sid), stats)
        shard_ids.append(sid)
    if dedup and dedup_uids:
        uids = pa.concat_arrays(dedup_uids)
        n = len(uids)
        # Groups of 2-3: each group's first member is kept, the rest are duplicates.
        is_dup = rng.random(n) < duplicate_rate
        group = np.arange(n, dtype=np.int64)
        dup_idx = np.flatnonzero(is_dup)
        group[dup_idx] = np.maximum(dup_idx - 1, 0)
        is_dup[0] = False
        pool.write_parquet("dedup/exact.parquet", pa.table({"uid": uids, "group": group, "is_duplicate": is_dup}))
    return shard_ids
