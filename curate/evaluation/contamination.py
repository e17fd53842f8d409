"""The check that no evaluation image is also a training sample of the pool.

An evaluation that leaks into training measures memorisation, and a curated arm that happens to
keep the leaked samples would look better than its control for the wrong reason. So before any
training, every evaluation image is compared with every downloaded sample of the pool, by the
rules the pool's own dedup uses: identical bytes (sha256, the `exact` method), a 64-bit DCT pHash
within `phash_max_distance` bits (the `perceptual` method, same hash as the image_stats scorer),
and optionally the CLIP cosine of the `decontaminate` method against the pool's embeddings. Any
hit is an error naming the first few pairs; the counts go into results.json either way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from curate.errors import ConfigError
from curate.evaluation.arms import PoolSamples
from curate.evaluation.config import Contamination
from curate.pool import Pool
from curate.scorers.image_stats import PHASH_VIEW, phash_batch
from curate.stages.score.decode import decode_image

MAX_PIXELS = 100_000_000  # the pool's images were decoded under the download's own bound already

_BLOCK = 512  # eval images compared with the whole pool at a time (bounds the distance matrix)


def phashes(images: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(hashes of the decodable images, their indices): the image_stats scorer's decode and pHash,
    so a distance here is the distance the pool's perceptual dedup sees."""
    grays, ok = [], []
    for i, data in enumerate(images):
        decoded = decode_image(data, [PHASH_VIEW], MAX_PIXELS)
        if decoded.ok:
            grays.append(decoded.views[PHASH_VIEW.column])
            ok.append(i)
    if not grays:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    return phash_batch(np.stack(grays)), np.asarray(ok, np.int64)


@dataclass
class PoolHashes:
    """The pool's side of every byte rule, computed once however many evaluation sets are checked."""

    uids: list[str]
    sha: dict[str, str] | None  # sha256 hex -> uid
    phash: np.ndarray | None
    phash_rows: np.ndarray | None  # the pool row of each hash (undecodable images have none)


def pool_hashes(samples: PoolSamples, settings: Contamination) -> PoolHashes:
    images = samples.table["jpg"].to_pylist()
    uids = samples.table["uid"].to_pylist()
    sha = ({hashlib.sha256(b).hexdigest(): u for b, u in zip(images, uids, strict=True)} if settings.exact
           else None)
    phash, rows = phashes(images) if settings.phash_max_distance is not None else (None, None)
    return PoolHashes(uids, sha, phash, rows)


def nearest_hamming(queries: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query hash: the smallest Hamming distance to any base hash, and that base index."""
    best = np.full(len(queries), 65, np.int64)
    where = np.full(len(queries), -1, np.int64)
    if not len(base):
        return best, where
    for start in range(0, len(queries), _BLOCK):
        q = queries[start:start + _BLOCK]
        dist = np.bitwise_count(np.bitwise_xor(q[:, None], base[None, :])).astype(np.int64)
        where[start:start + len(q)] = dist.argmin(axis=1)
        best[start:start + len(q)] = dist.min(axis=1)
    return best, where


def check_disjoint(pool: Pool, hashes: PoolHashes, evalset: Any, settings: Contamination) -> dict[str, Any]:
    """Compare one evaluation set with the pool; ConfigError on any overlap, else the report."""
    pool_uids = hashes.uids
    report: dict[str, Any] = {"evalset": evalset.name, "eval_images": len(evalset.images),
                              "pool_samples": len(pool_uids)}
    hits: list[str] = []
    if hashes.sha is not None:
        pool_sha = hashes.sha
        exact = [(k, pool_sha[h]) for k, h in ((k, hashlib.sha256(b).hexdigest())
                                                for k, b in zip(evalset.keys, evalset.images, strict=True))
                 if h in pool_sha]
        report["exact_overlap"] = len(exact)
        hits += [f"{k} = pool uid {u} (identical bytes)" for k, u in exact[:3]]
    if settings.phash_max_distance is not None and hashes.phash is not None and hashes.phash_rows is not None:
        eval_hash, eval_ok = phashes(evalset.images)
        pool_ok = hashes.phash_rows
        dist, where = nearest_hamming(eval_hash, hashes.phash)
        close = np.flatnonzero(dist <= settings.phash_max_distance)
        report["phash_max_distance"] = settings.phash_max_distance
        report["phash_overlap"] = len(close)
        report["phash_nearest_min"] = int(dist.min()) if len(dist) else None
        hits += [f"{evalset.keys[eval_ok[i]]} ~ pool uid {pool_uids[pool_ok[where[i]]]} (pHash distance {dist[i]})"
                 for i in close[:3]]
    if settings.clip is not None:
        report.update(_clip_overlap(pool, evalset, settings, hits))
    if hits:
        raise ConfigError(f"eval: evaluation set {evalset.name!r} ({evalset.path}) overlaps the pool: "
                          f"{'; '.join(hits[:3])} — remove these images from the pool (dedup `decontaminate`, "
                          "then filter) or from the evaluation set")
    return report


def _clip_overlap(pool: Pool, evalset: Any, settings: Contamination, hits: list[str]) -> dict[str, Any]:
    from curate import layout
    from curate.evaluation.metrics import encode_images
    from curate.models.loading import load_clip
    from curate.stages.dedup.decontaminate import nearest_eval
    from curate.stages.dedup.embeddings import embedding_matrix

    clip = settings.clip
    assert clip is not None
    # The set's own images (already loaded, in key order) with the model that made the pool's embeddings.
    emb, ok = encode_images(load_clip(clip.model, clip.pretrained), evalset.images, source=str(evalset.path))
    eval_emb = emb.numpy()[ok]
    names = [k for k, good in zip(evalset.keys, ok, strict=True) if good]
    rel = layout.embeddings_dir(clip.embeddings)
    if not pool.exists(rel):
        raise ConfigError(f"eval: contamination.clip: {pool.uri(rel)} not found (score with image_embeddings: true)")
    table = pool.read_parquet_dir(rel, columns=["uid", clip.column])
    emb = embedding_matrix(table[clip.column])
    if emb.shape[1] != eval_emb.shape[1]:
        raise ConfigError(f"eval: contamination.clip: {rel} has {emb.shape[1]}-d embeddings, {clip.model} gives "
                          f"{eval_emb.shape[1]}-d")
    # Search the pool for each eval image (the pool is the index here: one nearest pool sample per eval image).
    sims, ids = nearest_eval(eval_emb, emb)
    close = np.flatnonzero(sims > clip.threshold)
    uids = table["uid"].to_pylist()
    hits += [f"{names[i]} ~ pool uid {uids[ids[i]]} (CLIP cosine {sims[i]:.3f})" for i in close[:3]]
    return {"clip_threshold": clip.threshold, "clip_overlap": len(close),
            "clip_nearest_max": float(sims.max()) if len(sims) else None}
