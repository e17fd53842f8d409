"""Pieces every dedup method shares: reading pool columns, the keep rule, group ids, output.

Every method ends the same way: it has, for each sample (in uid order), the index of the sample
that represents its group. The representative is kept, every other member is a duplicate, and
the group id is the dense rank of the representative's uid, so ids do not depend on how the
pool was sharded or how many workers ran.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import layout
from curate.errors import PoolError
from curate.pool import Pool
from curate.shards import list_shards
from curate.stage import Pass, StageContext, fingerprint_of

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

    for scorer in pool.listdir(layout.SCORES):
        rel = layout.scores_file(scorer, shards[0])
        if pool.exists(rel) and column in pool.parquet_schema(rel).names:
            return layout.scores_dir(scorer)
    raise PoolError(f"{pool.uri(layout.SCORES)}: no scorer writes column {column!r} (needed by the keep rule)")


def read_shard_columns(pool: Pool, rel_dir: str, shards: list[str], columns: list[str]) -> pa.Table:
    tables = [pool.read_parquet(layout.shard_table(rel_dir, s), columns=columns) for s in shards]
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
    pool.write_parquet(layout.dedup_table(name), pa.table(columns))
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


def score_source(pool: Pool, method: Any, shards: list[str]) -> str | None:
    """The scores/<scorer>/ the keep rule reads (checked here, on the driver), or None."""
    column = getattr(method, "score_column", None)
    if method.keep != "highest_score" or not column:
        return None
    rel_dir = find_score_dir(pool, column, shards)
    require_shard_files(pool, rel_dir, shards, f"the {column} score")
    return rel_dir


def table_identity(pool: Pool, rel_dir: str | None, shards: list[str]) -> dict[str, Any] | None:
    """Size and modification stamp of each shard's table under `rel_dir`, from one listing: what a
    method's fingerprint holds of its inputs, so a re-scored or re-downloaded shard redoes the method."""
    if rel_dir is None:
        return None
    infos = pool.fs.ls(pool.path(rel_dir), detail=True) if pool.exists(rel_dir) else []
    by_name = {str(info["name"]).rstrip("/").rsplit("/", 1)[-1]: info for info in infos}
    out: dict[str, Any] = {}
    for sid in shards:
        info = by_name.get(f"{sid}.parquet")
        stamp = None
        if info is not None:
            stamp = next((info[k] for k in ("ETag", "etag", "md5Hash", "mtime", "LastModified", "updated")
                          if info.get(k) is not None), None)
        out[sid] = None if info is None else [info.get("size"), stamp]
    return {"dir": rel_dir, "tables": out}


def method_fingerprint(method: Any, **inputs: Any) -> dict[str, Any]:
    """What a method's output depends on: its settings and the identity of the tables it reads."""
    return {"config": method.model_dump(mode="json"), "inputs": inputs}


def table_output(name: str) -> Any:
    """Pass.outputs of a method's final pass: dedup/<name>.parquet."""
    return lambda _sid, _payload, _stats: [layout.dedup_table(name)]


GROUPS = "groups"


def groups_pass(method: Any, fn: Any, settings: Any, fingerprint: Any) -> Pass:
    """The method's final, driver-sized step as a pass over one pseudo-shard: its marker (holding the
    method's statistics) and fingerprint decide, with the runner's rule, whether the method is redone."""
    name = method.output_name
    return Pass(f"{name}/{GROUPS}", fn, {"all": None}, settings, fingerprint=fingerprint, outputs=table_output(name))


def already_done(ctx: StageContext, p: Pass) -> bool:
    """Whether `p` (a method's groups pass) is finished with this fingerprint, by the runner's rule;
    methods with earlier passes ask first, so a finished method reads and computes nothing."""
    from curate.runner import finished_shards

    return "all" in finished_shards(ctx, p, fingerprint_of(p.fingerprint) if p.fingerprint is not None else None)


def run_groups(ctx: StageContext, p: Pass) -> dict[str, Any]:
    """Run (or skip) a groups pass; returns the method's statistics from its marker."""
    return dict(ctx.run_pass(p).done["all"])


def finish_method(pool: Pool, method: Any, result: MethodResult, started: float) -> dict[str, Any]:
    """Write dedup/<name>.parquet; the statistics reports/dedup.json lists under `methods`."""
    name = method.output_name
    stats = finish(pool, name, result)
    stats.update(method=method.method, keep=method.keep, output=layout.dedup_table(name),
                 seconds=round(time.time() - started, 3), config=method.model_dump(mode="json"))
    return stats
