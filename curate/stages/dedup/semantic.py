"""SemDeDup: semantic near-duplicates by spherical k-means, then pairwise cosine inside clusters.

Steps, each sized so the pool never has to fit in one process:
1. fit spherical k-means (faiss; GPU faiss when present) on a sample of the embeddings; the
   sample is chosen by uid hash and sorted by uid, so it does not depend on sharding;
2. assign every sample to its nearest centroid, one Ray task per embedding shard, writing each
   sample to the part of its cluster's bucket (clusters are spread over `cluster_tasks` buckets);
3. one Ray task per bucket orders each cluster's members by the keep rule and marks a sample a
   duplicate when its cosine to any sample ranked before it exceeds 1 - eps (SemDeDup's rule).

Comparing with every earlier sample, not only earlier kept ones, is what the SemDeDup paper does;
it makes the kept set shrink monotonically as eps grows (a greedy "earlier kept" rule does not)
and lets the whole cluster be processed with matrix products instead of a per-sample loop.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.config import SemanticDedup
from curate.errors import ConfigError
from curate.extras import require
from curate.pool import Pool
from curate.runner import run_stage
from curate.stages.dedup.common import (
    WORK_DIR,
    MethodResult,
    attach_score,
    check_unique_uids,
    find_score_dir,
    keep_order,
    prepare_work_dir,
    require_shard_files,
    shard_ids,
    sort_by_uid,
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
    table = pool.read_parquet(f"{settings['embeddings_dir']}/{shard_id}.parquet", columns=["uid", settings["column"]])
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
        scores = pool.read_parquet(f"{settings['score_dir']}/{shard_id}.parquet", columns=["uid", settings["score"]])
        out = attach_score(out, scores, settings["score"])
    bucket = cluster % settings["buckets"]
    for b in np.unique(bucket):
        part = out.filter(pa.array(bucket == b))
        pool.write_parquet(f"{settings['work']}/parts/{int(b):05d}/{shard_id}.parquet", part)
    return {"samples": table.num_rows, "counts": {"assigned": table.num_rows}}


def dedup_bucket(pool: Pool, bucket: str, payload: None, settings: dict[str, Any]) -> dict[str, Any]:
    """SemDeDup inside every cluster of one bucket; writes uid, cluster, root uid, scores."""
    rel = f"{settings['work']}/parts/{bucket}"
    out_rel = f"{settings['work']}/result/{bucket}.parquet"
    if not pool.listdir(rel):
        pool.write_parquet(out_rel, _empty_result())
        return {"samples": 0, "clusters": 0}
    table = sort_by_uid(pool.read_parquet_dir(rel))
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
        total += pool.parquet_metadata(f"{embeddings_dir}/{s}.parquet").num_rows
    if total == 0:
        return np.zeros((0, 0), np.float32), 0
    cutoff = np.uint64(min(2**64 - 1, int(2**64 * min(1.0, sample_size / total))))
    picked = []
    for s in shards:
        table = pool.read_parquet(f"{embeddings_dir}/{s}.parquet", columns=["uid", column])
        keep = uid_prefix_u64(table["uid"]) < cutoff if sample_size < total else np.ones(table.num_rows, bool)
        picked.append(table.filter(pa.array(keep)))
    sample = sort_by_uid(pa.concat_tables(picked))
    return embedding_matrix(sample[column]), total


def semantic_dedup(pool: Pool, method: SemanticDedup, *, ray_address: str | None = None, rerun: bool = False,
                   quiet: bool = False) -> MethodResult:
    _faiss()  # here, not first in a Ray task
    name = method.output_name
    shards = shard_ids(pool)
    embeddings_dir = f"embeddings/{method.embeddings}"
    require_shard_files(pool, embeddings_dir, shards, f"embeddings of {method.embeddings!r}")
    work = f"{WORK_DIR}/{name}"
    stage_assign, stage_clusters = f"dedup-{name}-assign", f"dedup-{name}-clusters"
    fingerprint = json.dumps(method.model_dump(mode="json"), sort_keys=True)
    prepare_work_dir(pool, work, [stage_assign, stage_clusters], fingerprint, rerun)

    if pool.exists(f"{work}/centroids.npy"):
        with pool.open(f"{work}/centroids.npy") as fh:
            centroids = np.load(fh, allow_pickle=False)
    else:
        sample, total = draw_sample(pool, embeddings_dir, method.column, shards, method.sample_size)
        if total == 0:
            return MethodResult(pa.array([], pa.string()), np.zeros(0, np.int64))
        k = method.n_clusters or max(1, round(total / 1000))
        k = min(k, len(sample))
        centroids = fit_centroids(sample, k, method.niter, method.seed, use_gpu(method.use_gpu))
        with pool.open_atomic(f"{work}/centroids.npy") as fh:
            np.save(fh, centroids)

    settings: dict[str, Any] = {
        "embeddings_dir": embeddings_dir, "column": method.column, "centroids": centroids,
        "buckets": method.cluster_tasks, "work": work, "keep": method.keep,
        "threshold": 1.0 - method.eps, "score": None, "score_dir": None,
    }
    if method.keep == "highest_score" and method.score_column:
        settings["score"] = method.score_column
        settings["score_dir"] = find_score_dir(pool, method.score_column, shards)
    run_stage(stage_assign, pool, assign_shard, {s: None for s in shards}, settings,
              ray_address=ray_address, quiet=quiet).raise_for_failures()
    buckets = {f"{b:05d}": None for b in range(method.cluster_tasks)}
    run_stage(stage_clusters, pool, dedup_bucket, buckets, settings, ray_address=ray_address,
              quiet=quiet).raise_for_failures()

    result = sort_by_uid(pool.read_parquet_dir(f"{work}/result"))
    check_unique_uids(result["uid"], pool.uri(embeddings_dir))
    uids = result["uid"].combine_chunks()
    # Group id: dense rank of the kept root's uid, as for the other methods.
    root_index = pc.index_in(result["root_uid"], value_set=uids).to_numpy(zero_copy_only=False)
    return MethodResult(uids, root_index.astype(np.int64), extra={
        "cluster": result["cluster"].combine_chunks(),
        "semantic_max_cosine": result["semantic_max_cosine"].combine_chunks(),
        "centroid_cos": result["centroid_cos"].combine_chunks(),
    }, counts={})


def cleanup(pool: Pool, method: SemanticDedup) -> None:
    """Drop the shuffle parts once the final table is written; centroids and config stay."""
    pool.remove(posixpath.join(WORK_DIR, method.output_name, "parts"), recursive=True)
