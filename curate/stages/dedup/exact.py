"""Exact duplicates: samples whose downloaded image bytes have the same sha256 form one group."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import layout
from curate.config import ExactDedup
from curate.pool import Pool
from curate.shards import read_shard_table
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
    representatives,
    run_groups,
    score_source,
    shard_ids,
    sort_by_uid,
    table_identity,
)


def run_exact(ctx: StageContext, method: ExactDedup) -> dict[str, Any]:
    """One pass over a pseudo-shard, redone when the method's config or a shard's table changed."""
    pool = ctx.pool
    shards = shard_ids(pool)
    scores = score_source(pool, method, shards)
    fingerprint = method_fingerprint(method, shards=table_identity(pool, layout.SHARDS, shards),
                                     scores=table_identity(pool, scores, shards))
    settings = {"method": method, "shards": shards, "started": time.time()}
    return run_groups(ctx, groups_pass(method, exact_groups, settings, fingerprint))


def exact_groups(pool: Pool, _sid: str, _payload: None, settings: dict[str, Any]) -> dict[str, Any]:
    method: ExactDedup = settings["method"]
    return finish_method(pool, method, exact_dedup(pool, method, settings["shards"]), settings["started"])


def exact_dedup(pool: Pool, method: ExactDedup, shards: list[str]) -> MethodResult:
    table = pa.concat_tables(
        [read_shard_table(pool, s, columns=["uid", "status", "sha256"]) for s in shards]
    )
    table = table.filter(pc.equal(table["status"], "success"))
    missing = pc.is_null(table["sha256"])
    n_missing = int(pc.sum(missing).as_py() or 0)
    table = sort_by_uid(table.filter(pc.invert(missing)).select(["uid", "sha256"]))
    check_unique_uids(table["uid"], pool.uri(layout.SHARDS))
    return group_by_key(pool, method, table, "sha256", shards, {"missing_sha256": n_missing} if n_missing else {})


def group_by_key(pool: Pool, method: ExactDedup, table: pa.Table, key: str, shards: list[str],
                 counts: dict[str, int]) -> MethodResult:
    """Samples with equal `key` form one group; `table` is in uid order."""
    n = table.num_rows
    labels = pc.dictionary_encode(table[key]).combine_chunks().indices.to_numpy(zero_copy_only=False)
    score = _score(pool, method, table, shards)
    order = keep_order(n, method.keep, score=score)
    rep = representatives(labels, order)
    group_size = np.bincount(labels, minlength=int(labels.max()) + 1 if n else 0)[labels] if n else labels
    return MethodResult(table["uid"].combine_chunks(), rep,
                        extra={"group_size": pa.array(group_size, pa.int64())}, counts=counts)


def _score(pool: Pool, method: ExactDedup, table: pa.Table, shards: list[str]) -> np.ndarray | None:
    if method.keep != "highest_score" or method.score_column is None:
        return None
    joined = sort_by_uid(attach_score(table.select(["uid"]), read_scores(pool, method.score_column, shards),
                                      method.score_column))
    return joined[method.score_column].to_numpy(zero_copy_only=False).astype(np.float64)
