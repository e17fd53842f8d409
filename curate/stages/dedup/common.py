"""Pieces every dedup method shares: reading pool columns, the keep rule, group ids, output.

Every method ends the same way: it has, for each sample (in uid order), the index of the sample
that represents its group. The representative is kept, every other member is a duplicate, and
the group id is the dense rank of the representative's uid, so ids do not depend on how the
pool was sharded or how many workers ran.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.errors import PoolError
from curate.pool import Pool
from curate.shards import list_shards

DEDUP_DIR = "dedup"
WORK_DIR = "dedup/_work"

_HEX = np.full(256, 255, dtype=np.uint8)
_HEX[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint8)
_HEX[np.frombuffer(b"ABCDEF", dtype=np.uint8)] = np.arange(10, 16, dtype=np.uint8)


@dataclass
class MethodResult:
    """What a method computed, in uid order; `extra` holds the method's score columns."""

    uids: pa.Array
    representative: np.ndarray  # index (into uids) of each sample's kept group member
    extra: dict[str, pa.Array] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # samples left out, by reason
    group: np.ndarray | None = None  # override: methods whose groups are not "same representative"
    is_duplicate: np.ndarray | None = None


def shard_ids(pool: Pool) -> list[str]:
    shards = list_shards(pool)
    if not shards:
        raise PoolError(f"{pool.url}: no finished download shards; run `curate download` first")
    return shards


def require_shard_files(pool: Pool, rel_dir: str, shards: list[str], what: str) -> None:
    """Fail with the names of missing per-shard tables, rather than deduplicating part of a pool."""
    present = {n[: -len(".parquet")] for n in pool.listdir(rel_dir) if n.endswith(".parquet")}
    missing = [s for s in shards if s not in present]
    if missing:
        names = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
        raise PoolError(f"{pool.uri(rel_dir)}: {len(missing)} shard(s) lack {what}: {names}")


def find_score_dir(pool: Pool, column: str, shards: list[str]) -> str:
    """The scores/<scorer>/ directory whose tables hold `column`."""

    for scorer in pool.listdir("scores"):
        rel = f"scores/{scorer}/{shards[0]}.parquet"
        if pool.exists(rel) and column in pool.parquet_schema(rel).names:
            return f"scores/{scorer}"
    raise PoolError(f"{pool.uri('scores')}: no scorer writes column {column!r} (needed by the keep rule)")


def read_shard_columns(pool: Pool, rel_dir: str, shards: list[str], columns: list[str]) -> pa.Table:
    tables = [pool.read_parquet(posixpath.join(rel_dir, f"{s}.parquet"), columns=columns) for s in shards]
    return pa.concat_tables(tables) if tables else pa.table({c: [] for c in columns})


def read_scores(pool: Pool, column: str, shards: list[str]) -> pa.Table:
    """uid + one score column over the whole pool."""
    rel_dir = find_score_dir(pool, column, shards)
    require_shard_files(pool, rel_dir, shards, f"the {column} score")
    return read_shard_columns(pool, rel_dir, shards, ["uid", column])


def attach_score(table: pa.Table, scores: pa.Table, column: str) -> pa.Table:
    """Left-join a score column onto `table` by uid (missing scores stay null)."""
    joined = table.join(scores.select(["uid", column]), "uid", join_type="left outer")
    return joined


def uid_prefix_u64(uids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The first 64 bits of each 32-hex uid as uint64, vectorised (uids are uniform hashes)."""
    if isinstance(uids, pa.ChunkedArray):
        uids = pa.concat_arrays(uids.chunks) if uids.num_chunks else pa.array([], pa.string())
    n = len(uids)
    if n == 0:
        return np.zeros(0, np.uint64)
    uids = uids.cast(pa.string())
    if uids.null_count or pc.min_max(pc.utf8_length(uids)).as_py() != {"min": 32, "max": 32}:
        raise PoolError("uid column holds values that are not 32 hex characters")
    # Every uid has the same length, so the string data buffer is an (n, 32) byte matrix.
    offsets = np.frombuffer(uids.buffers()[1], dtype=np.int32)[uids.offset : uids.offset + 1]
    raw = np.frombuffer(uids.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[0] + 32 * n].reshape(n, 32)[:, :16]
    nibbles = _HEX[raw].astype(np.uint64)
    if (nibbles == 255).any():
        raise PoolError("uid column holds values that are not 32 hex characters")
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    return np.bitwise_or.reduce(nibbles << shifts, axis=1)


def keep_order(n: int, keep: str, score: np.ndarray | None = None, centroid_cos: np.ndarray | None = None,
               ) -> np.ndarray:
    """Indices best-first under the keep rule; rows are in uid order, so the index breaks ties by uid."""
    idx = np.arange(n)
    if keep == "lowest_uid":
        return idx
    if keep == "highest_score":
        if score is None:
            raise ValueError("keep=highest_score needs scores")
        # A missing score ranks last: a sample never wins its group on a score it does not have.
        filled = np.where(np.isnan(score), -np.inf, score)
        return np.lexsort((idx, -filled))
    if keep == "farthest_from_centroid":
        if centroid_cos is None:
            raise ValueError("keep=farthest_from_centroid needs centroid similarities")
        return np.lexsort((idx, centroid_cos))
    raise ValueError(f"unknown keep rule {keep!r}")


def representatives(labels: np.ndarray, order: np.ndarray) -> np.ndarray:
    """For each sample, the index of the best-ranked (first in `order`) sample with its label."""
    uniq, first = np.unique(labels[order], return_index=True)
    rep_of_label = order[first]
    return rep_of_label[np.searchsorted(uniq, labels)]


def sort_by_uid(table: pa.Table) -> pa.Table:
    return table.take(pc.sort_indices(table["uid"]))


def check_unique_uids(uids: pa.Array | pa.ChunkedArray, where: str) -> None:
    if pc.count_distinct(uids).as_py() != len(uids):
        raise PoolError(f"{where}: uid column holds repeated uids; dedup needs one row per sample")


def finish(pool: Pool, name: str, result: MethodResult) -> dict:
    """Write dedup/<name>.parquet and return the method's statistics."""
    n = len(result.uids)
    rep = result.representative
    is_dup = result.is_duplicate if result.is_duplicate is not None else rep != np.arange(n)
    if result.group is not None:
        group = result.group.astype(np.int64)
    else:
        _, group = np.unique(rep, return_inverse=True)
        group = group.astype(np.int64)
    columns = {"uid": result.uids, "group": pa.array(group, pa.int64()), "is_duplicate": pa.array(is_dup, pa.bool_())}
    columns.update(result.extra)
    pool.write_parquet(f"{DEDUP_DIR}/{name}.parquet", pa.table(columns))
    if result.group is None and n:
        sizes = np.bincount(group)
        groups = int((sizes > 1).sum())
        largest = int(sizes.max())
    else:
        groups = len(np.unique(group[is_dup])) if n else 0
        largest = 0
    removed = int(is_dup.sum())
    counts = {"kept": n - removed, "duplicate": removed, **result.counts}
    return {
        "samples": n,
        "duplicate_groups": groups,
        "largest_group": largest,
        "samples_removed": removed,
        "removed_rate": round(removed / n, 6) if n else 0.0,
        "counts": counts,
    }


def prepare_work_dir(pool: Pool, work: str, stages: list[str], fingerprint: str, rerun: bool) -> None:
    """Keep a method's intermediate files only when they come from this very configuration.

    Resuming after a crash reuses finished sub-stage shards; a changed configuration (other
    centroids, another eval set) or --rerun starts the method's intermediates afresh.
    """
    stamp = f"{work}/config.json"
    if not rerun and pool.exists(stamp) and pool.read_bytes(stamp).decode() == fingerprint:
        return
    pool.remove(work, recursive=True)
    for stage in stages:
        pool.clear_stage(stage)
    pool.write_bytes(stamp, fingerprint.encode())
