"""Perceptual duplicates: phashes within Hamming distance k, found with a multi-index hash.

All-pairs comparison is quadratic; instead the 64 phash bits are split into k+1 disjoint chunks
and faiss's IndexBinaryMultiHash keeps one hash table per chunk. Two hashes that differ in at
most k bits agree exactly on at least one chunk (pigeonhole), so looking up each chunk finds
every true neighbour; faiss then verifies candidates by their full Hamming distance. Pairs
become edges and connected components (union-find) become the groups, so a chain of near
copies (re-encoded, then resized, then cropped) lands in one group.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from curate import layout
from curate.config import PerceptualDedup
from curate.extras import require
from curate.pool import Pool
from curate.stage import StageContext
from curate.stages.dedup.common import (
    MethodResult,
    attach_score,
    check_unique_uids,
    finish_method,
    groups_pass,
    keep_order,
    method_fingerprint,
    read_scores,
    read_shard_columns,
    representatives,
    require_shard_files,
    run_groups,
    score_source,
    shard_ids,
    sort_by_uid,
    table_identity,
)

QUERY_BATCH = 65_536  # bounds the memory of one range search's result lists


def phash_bytes(phash: np.ndarray) -> np.ndarray:
    """uint64 hashes as faiss binary codes (n, 8) uint8."""
    return np.ascontiguousarray(phash.astype(np.uint64)).view(np.uint8).reshape(-1, 8)


def hamming_pairs(phash: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i < j) with Hamming distance <= max_distance, and their distances."""
    n = len(phash)
    codes = phash_bytes(phash)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32)
    chunks = max_distance + 1
    index = require("faiss", "dedup", "perceptual dedup").IndexBinaryMultiHash(64, chunks, 64 // chunks)
    index.add(codes)
    rows, cols, dists = [], [], []
    for start in range(0, n, QUERY_BATCH):
        # faiss returns distances strictly below the radius.
        lims, dist, ids = index.range_search(codes[start : start + QUERY_BATCH], max_distance + 1)
        query = start + np.repeat(np.arange(len(lims) - 1), np.diff(lims.astype(np.int64)))
        forward = ids > query
        rows.append(query[forward])
        cols.append(ids[forward].astype(np.int64))
        dists.append(dist[forward].astype(np.int32))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(dists)


def components(n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels


def run_perceptual(ctx: StageContext, method: PerceptualDedup) -> dict[str, Any]:
    """One pass over a pseudo-shard, redone when the method's config or a phash/score table changed."""
    pool = ctx.pool
    shards = shard_ids(pool)
    rel_dir = layout.scores_dir(method.scorer)
    require_shard_files(pool, rel_dir, shards, f"the {method.column} column of scorer {method.scorer!r}")
    scores = score_source(pool, method, shards)
    fingerprint = method_fingerprint(method, phash=table_identity(pool, rel_dir, shards),
                                     scores=table_identity(pool, scores, shards))
    settings = {"method": method, "shards": shards, "started": time.time()}
    return run_groups(ctx, groups_pass(method, perceptual_groups, settings, fingerprint))


def perceptual_groups(pool: Pool, _sid: str, _payload: None, settings: dict[str, Any]) -> dict[str, Any]:
    method: PerceptualDedup = settings["method"]
    return finish_method(pool, method, perceptual_dedup(pool, method, settings["shards"]), settings["started"])


def perceptual_dedup(pool: Pool, method: PerceptualDedup, shards: list[str]) -> MethodResult:
    rel_dir = layout.scores_dir(method.scorer)
    table = read_shard_columns(pool, rel_dir, shards, ["uid", method.column])
    missing = pc.is_null(table[method.column])
    n_missing = int(pc.sum(missing).as_py() or 0)
    table = sort_by_uid(table.filter(pc.invert(missing)))
    check_unique_uids(table["uid"], pool.uri(rel_dir))
    n = table.num_rows
    phash = table[method.column].to_numpy().astype(np.uint64)
    rows, cols, _ = hamming_pairs(phash, method.max_distance)
    labels = components(n, rows, cols)
    score = None
    if method.keep == "highest_score" and method.score_column:
        joined = sort_by_uid(attach_score(table.select(["uid"]), read_scores(pool, method.score_column, shards),
                                          method.score_column))
        score = joined[method.score_column].to_numpy(zero_copy_only=False).astype(np.float64)
    rep = representatives(labels, keep_order(n, method.keep, score=score))
    distance = np.bitwise_count(phash ^ phash[rep]).astype(np.int32) if n else np.zeros(0, np.int32)
    return MethodResult(table["uid"].combine_chunks(), rep,
                        extra={"phash_distance": pa.array(distance, pa.int32())},
                        counts={"missing_phash": n_missing} if n_missing else {})
