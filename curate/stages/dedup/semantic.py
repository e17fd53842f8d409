"""SemDeDup: semantic near-duplicates by spherical k-means, then pairwise cosine inside clusters.

Steps, each sized so the pool never has to fit in one process:
1. fit spherical k-means (faiss; GPU faiss when present) on a sample of the embeddings; the
   sample is chosen by uid hash and sorted by uid, so it does not depend on sharding;
2. pass `<name>/assign`: assign every sample to its nearest centroid, one task per embedding
   shard, writing each sample to the part of its cluster's bucket (clusters are spread over
   `cluster_tasks` buckets);
3. pass `<name>/clusters`: one task per bucket orders each cluster's members by the keep rule and
   marks a sample a duplicate when its cosine to any sample ranked before it exceeds 1 - eps
   (SemDeDup's rule);
4. pass `<name>/groups` (one pseudo-shard): merge the buckets into dedup/<name>.parquet.

Intermediates live in dedup/_work/<name>/<run>/, <run> being the fingerprint of the method's
config and inputs: a resume reuses the centroids and finished shards of the same run only.

Comparing with every earlier sample, not only earlier kept ones, is what the SemDeDup paper does;
it makes the kept set shrink monotonically as eps grows (a greedy "earlier kept" rule does not)
and lets the whole cluster be processed with matrix products instead of a per-sample loop.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import layout
from curate.config import SemanticDedup
from curate.errors import ConfigError
from curate.extras import require
from curate.pool import Pool
from curate.stage import Pass, StageContext, fingerprint_of
from curate.stages.dedup.common import (
    MethodResult,
    already_done,
    attach_score,
    check_unique_uids,
    finish_method,
    groups_pass,
    keep_order,
    method_fingerprint,
    require_shard_files,
    run_groups,
    score_source,
    shard_ids,
    sort_by_uid,
    table_identity,
    uid_prefix_u64,
)
from curate.stages.dedup.embeddings import embedding_array, embedding_matrix

BLOCK = 2048  # rows per similarity block: bounds memory to BLOCK x cluster size floats


def _faiss() -> Any:
    return require("faiss", "dedup", "semantic dedup")


def use_gpu(setting: str) -> bool:
    faiss = _faiss()
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if setting == "yes" and gpus == 0:
        raise ConfigError("semantic dedup: use_gpu: yes, but faiss sees no GPU (install faiss-gpu)")
    return setting == "yes" or (setting == "auto" and gpus > 0)


def fit_centroids(sample: np.ndarray, n_clusters: int, niter: int, seed: int, gpu: bool) -> np.ndarray:
    """Spherical k-means centroids (unit vectors) of a normalised float32 sample."""
    kmeans = _faiss().Kmeans(sample.shape[1], n_clusters, niter=niter, spherical=True, seed=seed, gpu=gpu,
                          verbose=False, max_points_per_centroid=max(256, len(sample)))
    kmeans.train(sample)
    return np.asarray(kmeans.centroids, dtype=np.float32)


def max_earlier_similarity(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows in keep order: highest cosine to any earlier row, and which row that is (-1: none)."""
    n = len(emb)
    best = np.full(n, -np.inf, dtype=np.float32)
    arg = np.full(n, -1, dtype=np.int64)
    for start in range(1, n, BLOCK):
        stop = min(n, start + BLOCK)
        sims = emb[start:stop] @ emb[:stop].T
        # Row r (global start + r) may only look at columns before itself.
        cols = np.arange(stop)
        sims[cols[None, :] >= (start + np.arange(stop - start))[:, None]] = -np.inf
        arg[start:stop] = sims.argmax(axis=1)
        best[start:stop] = sims[np.arange(stop - start), arg[start:stop]]
    return best, arg


def cluster_duplicates(emb: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Within one cluster in keep order: is_duplicate, index of the kept root, max earlier cosine."""
    best, arg = max_earlier_similarity(emb)
    dup = best > threshold
    parent = np.where(dup, arg, np.arange(len(emb)))
    # Follow duplicate-of links to the kept sample at the root (pointer jumping: log depth).
    while True:
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            break
        parent = nxt
    return dup, parent, best


# ------------------------------------------------------------------------------------------ shard tasks
def assign_shard(pool: Pool, shard_id: str, payload: None, settings: dict[str, Any]) -> dict[str, Any]:
    """Nearest centroid for each sample of one embedding shard, written to its cluster bucket."""
    table = pool.read_parquet(layout.shard_table(settings["embeddings_dir"], shard_id),
                              columns=["uid", settings["column"]])
    emb = embedding_matrix(table[settings["column"]])
    centroids = np.asarray(settings["centroids"], dtype=np.float32)
    index = _faiss().IndexFlatIP(centroids.shape[1])
    index.add(centroids)
    sims, ids = index.search(emb, 1)
    cluster = ids[:, 0].astype(np.int64)
    out = pa.table({
        "uid": table["uid"],
        "cluster": pa.array(cluster, pa.int64()),
        "centroid_cos": pa.array(sims[:, 0], pa.float32()),
        "embedding": embedding_array(emb),
    })
    if settings.get("score_dir"):
        scores = pool.read_parquet(layout.shard_table(settings["score_dir"], shard_id),
                                   columns=["uid", settings["score"]])
        out = attach_score(out, scores, settings["score"])
    bucket = cluster % settings["buckets"]
    # Every bucket gets a part, empty or not: a shard's parts are then a known list of files (the
    # pass's outputs), and a redone shard overwrites all of them.
    for b in range(settings["buckets"]):
        part = out.filter(pa.array(bucket == b))
        pool.write_parquet(layout.dedup_part(settings["work"], bucket_name(b), shard_id), part)
    return {"samples": table.num_rows, "counts": {"assigned": table.num_rows}}


def dedup_bucket(pool: Pool, bucket: str, payload: None, settings: dict[str, Any]) -> dict[str, Any]:
    """SemDeDup inside every cluster of one bucket; writes uid, cluster, root uid, scores."""
    out_rel = layout.dedup_result(settings["work"], bucket)
    # The parts of this run's shards only, never whatever else the directory holds.
    parts = [pool.read_parquet(layout.dedup_part(settings["work"], bucket, s)) for s in settings["shards"]]
    table = sort_by_uid(pa.concat_tables(parts)) if parts else _empty_parts()
    if table.num_rows == 0:
        pool.write_parquet(out_rel, _empty_result())
        return {"samples": 0, "clusters": 0}
    cluster = table["cluster"].to_numpy()
    score = (table[settings["score"]].to_numpy(zero_copy_only=False).astype(np.float64)
             if settings.get("score") else None)
    centroid_cos = table["centroid_cos"].to_numpy()
    order_in_bucket = keep_order(table.num_rows, settings["keep"], score=score, centroid_cos=centroid_cos)
    # Stable sort by cluster keeps each cluster's members in keep order.
    order = order_in_bucket[np.argsort(cluster[order_in_bucket], kind="stable")]
    emb = embedding_matrix(table["embedding"])
    starts = np.flatnonzero(np.r_[True, np.diff(cluster[order]) != 0])
    ends = np.r_[starts[1:], len(order)]
    n = table.num_rows
    is_dup = np.zeros(n, dtype=bool)
    root = np.arange(n)
    best = np.full(n, np.nan, dtype=np.float32)
    for s, e in zip(starts, ends, strict=True):
        members = order[s:e]
        dup, parent, sim = cluster_duplicates(emb[members], settings["threshold"])
        is_dup[members] = dup
        root[members] = members[parent]
        best[members] = sim
    best[~np.isfinite(best)] = np.nan
    result = pa.table({
        "uid": table["uid"],
        "cluster": table["cluster"],
        "root_uid": table["uid"].take(pa.array(root)),
        "is_duplicate": pa.array(is_dup),
        "semantic_max_cosine": pa.array(best, pa.float32(), from_pandas=True),
        "centroid_cos": table["centroid_cos"],
    })
    pool.write_parquet(out_rel, result)
    return {"samples": n, "clusters": len(starts), "counts": {"duplicate": int(is_dup.sum())}}


def bucket_name(b: int) -> str:
    return f"{b:05d}"


def _empty_parts() -> pa.Table:
    return pa.table({"uid": pa.array([], pa.string()), "cluster": pa.array([], pa.int64())})


def _empty_result() -> pa.Table:
    return pa.table({"uid": pa.array([], pa.string()), "cluster": pa.array([], pa.int64()),
                     "root_uid": pa.array([], pa.string()), "is_duplicate": pa.array([], pa.bool_()),
                     "semantic_max_cosine": pa.array([], pa.float32()), "centroid_cos": pa.array([], pa.float32())})


# ------------------------------------------------------------------------------------------- driver
def draw_sample(pool: Pool, embeddings_dir: str, column: str, shards: list[str], sample_size: int,
                ) -> tuple[np.ndarray, int]:
    """A uid-hash sample of about sample_size normalised embeddings, in uid order; and the pool size."""
    total = 0
    for s in shards:
        total += pool.parquet_metadata(layout.shard_table(embeddings_dir, s)).num_rows
    if total == 0:
        return np.zeros((0, 0), np.float32), 0
    cutoff = np.uint64(min(2**64 - 1, int(2**64 * min(1.0, sample_size / total))))
    picked = []
    for s in shards:
        table = pool.read_parquet(layout.shard_table(embeddings_dir, s), columns=["uid", column])
        keep = uid_prefix_u64(table["uid"]) < cutoff if sample_size < total else np.ones(table.num_rows, bool)
        picked.append(table.filter(pa.array(keep)))
    sample = sort_by_uid(pa.concat_tables(picked))
    return embedding_matrix(sample[column]), total


def run_semantic(ctx: StageContext, method: SemanticDedup) -> dict[str, Any]:
    """Centroids, then passes assign, clusters and groups; nothing runs when groups is done with this
    config and these inputs."""
    _faiss()  # here, not first in a Ray task
    pool = ctx.pool
    name = method.output_name
    shards = shard_ids(pool)
    embeddings_dir = layout.embeddings_dir(method.embeddings)
    require_shard_files(pool, embeddings_dir, shards, f"embeddings of {method.embeddings!r}")
    score_dir = score_source(pool, method, shards)
    fingerprint = method_fingerprint(method, embeddings=table_identity(pool, embeddings_dir, shards),
                                     scores=table_identity(pool, score_dir, shards))
    run_id = fingerprint_of(fingerprint)
    work = layout.dedup_work(name, run_id)
    buckets = [bucket_name(b) for b in range(method.cluster_tasks)]
    settings: dict[str, Any] = {
        "method": method, "embeddings_dir": embeddings_dir, "column": method.column, "shards": shards,
        "buckets": method.cluster_tasks, "bucket_names": buckets, "work": work, "keep": method.keep,
        "threshold": 1.0 - method.eps, "score": method.score_column if score_dir else None, "score_dir": score_dir,
        "started": time.time(), "empty": False,
    }
    groups = groups_pass(method, semantic_groups, settings, fingerprint)
    if already_done(ctx, groups):
        return run_groups(ctx, groups)
    # Intermediates of other configurations or inputs are never read again.
    for other in pool.listdir(layout.dedup_work(name)):
        if other != run_id:
            pool.remove(layout.dedup_work(name, other), recursive=True)

    centroids = _centroids(pool, method, embeddings_dir, shards, work)
    if centroids is None:  # no samples at all
        settings["empty"] = True
        return run_groups(ctx, groups)
    # Refitted centroids may differ (GPU k-means, threads): shards assigned with others are redone.
    run_fp = {"run": run_id, "centroids": hashlib.sha256(centroids.tobytes()).hexdigest()[:16]}
    ctx.run_pass(Pass(f"{name}/assign", assign_shard, {s: None for s in shards}, {**settings, "centroids": centroids},
                      fingerprint=run_fp,
                      outputs=lambda sid, _p, _st: [layout.dedup_part(work, b, sid) for b in buckets]))
    ctx.run_pass(Pass(f"{name}/clusters", dedup_bucket, {b: None for b in buckets}, settings, fingerprint=run_fp,
                      outputs=lambda b, _p, _st: [layout.dedup_result(work, b)]))
    stats = run_groups(ctx, groups)
    # The shuffle parts (a copy of every embedding) go once the table is written; centroids stay.
    pool.remove(layout.dedup_parts(work), recursive=True)
    return stats


def _centroids(pool: Pool, method: SemanticDedup, embeddings_dir: str, shards: list[str],
               work: str) -> np.ndarray | None:
    """This run's centroids: read back on a resume, fitted on a uid-hash sample otherwise."""
    rel = layout.dedup_centroids(work)
    if pool.exists(rel):
        with pool.open(rel) as fh:
            return np.load(fh, allow_pickle=False)
    sample, total = draw_sample(pool, embeddings_dir, method.column, shards, method.sample_size)
    if total == 0:
        return None
    k = method.n_clusters or max(1, round(total / 1000))
    k = min(k, len(sample))
    centroids = fit_centroids(sample, k, method.niter, method.seed, use_gpu(method.use_gpu))
    with pool.open_atomic(rel) as fh:
        np.save(fh, centroids)
    return centroids


def semantic_groups(pool: Pool, _sid: str, _payload: None, settings: dict[str, Any]) -> dict[str, Any]:
    """Merge the buckets' results into dedup/<name>.parquet."""
    method: SemanticDedup = settings["method"]
    if settings["empty"]:
        result = MethodResult(pa.array([], pa.string()), np.zeros(0, np.int64))
        return finish_method(pool, method, result, settings["started"])
    work = settings["work"]
    table = sort_by_uid(pa.concat_tables([pool.read_parquet(layout.dedup_result(work, b))
                                          for b in settings["bucket_names"]]))
    check_unique_uids(table["uid"], pool.uri(settings["embeddings_dir"]))
    uids = table["uid"].combine_chunks()
    # Group id: dense rank of the kept root's uid, as for the other methods.
    root_index = pc.index_in(table["root_uid"], value_set=uids).to_numpy(zero_copy_only=False)
    result = MethodResult(uids, root_index.astype(np.int64), extra={
        "cluster": table["cluster"].combine_chunks(),
        "semantic_max_cosine": table["semantic_max_cosine"].combine_chunks(),
        "centroid_cos": table["centroid_cos"].combine_chunks(),
    }, counts={})
    return finish_method(pool, method, result, settings["started"])
