"""Plan an export: which download shard supplies each uid, and where its output shards start.

The plan is computed once on the driver from the shards' small per-candidate tables (uid, status),
so every task knows its uids and its output shard numbers up front: tasks are independent, a rerun
after a crash rewrites exactly the same files, and missing uids are counted before any image moves.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curate.errors import PoolError
from curate.pool import Pool
from curate.shards import list_shards, read_shard_table

NOT_IN_POOL = "not_in_pool"


@dataclass
class ShardTask:
    """One input download shard's share of the export (the payload of its Ray task)."""

    input_shard: str
    uids: list[str]
    counts: list[int]
    first_output: int
    n_outputs: int
    samples: int


@dataclass
class ExportPlan:
    tasks: dict[str, ShardTask]
    subset_rows: int
    subset_unique: int
    missing: dict[str, int] = field(default_factory=dict)  # reason -> unique uids not exported
    missing_rows: int = 0  # rows of the subset (repeats included) not exported
    samples: int = 0
    output_shards: int = 0

    def fingerprint(self, settings: dict[str, Any]) -> str:
        """Identifies the output layout, so a resume never mixes two different exports."""
        h = hashlib.sha256(repr(sorted(settings.items())).encode())
        for sid, task in self.tasks.items():
            h.update(f"{sid}:{task.first_output}:{task.samples}:".encode())
            h.update("".join(task.uids).encode())
            h.update(repr(task.counts).encode())
        return h.hexdigest()[:20]


def _pool_rows(pool: Pool, shard_ids: list[str]) -> pa.Table:
    tables = []
    for idx, sid in enumerate(shard_ids):
        t = read_shard_table(pool, sid, ["uid", "status"])
        tables.append(t.append_column("shard_idx", pa.array([idx] * t.num_rows, pa.int32())))
    if not tables:
        return pa.table({"uid": pa.array([], pa.string()), "status": pa.array([], pa.string()),
                         "shard_idx": pa.array([], pa.int32())})
    return pa.concat_tables(tables)


def plan_export(pool: Pool, counts: pa.Table, samples_per_shard: int) -> ExportPlan:
    """Assign each listed uid to the first download shard holding it as a success."""
    shard_ids = list_shards(pool)
    if not shard_ids:
        raise PoolError(f"{pool.url}: no finished download shards (run `curate download` first)")
    rows = _pool_rows(pool, shard_ids)
    success = rows.filter(pc.equal(rows["status"], "success"))
    success = success.filter(pc.is_in(success["uid"], value_set=counts["uid"]))
    # A uid downloaded in two shards is exported once, from the earlier shard.
    first = success.group_by("uid").aggregate([("shard_idx", "min")]).rename_columns(["uid", "shard_idx"])
    chosen = first.join(counts, "uid").sort_by([("shard_idx", "ascending"), ("uid", "ascending")])

    absent = counts.filter(pc.invert(pc.is_in(counts["uid"], value_set=chosen["uid"])))
    missing: dict[str, int] = {}
    if absent.num_rows:
        failed = rows.filter(pc.is_in(rows["uid"], value_set=absent["uid"]))
        status_of = failed.group_by("uid").aggregate([("status", "min")])
        for item in pc.value_counts(status_of["status_min"]).to_pylist():
            missing[str(item["values"])] = int(item["counts"])
        not_seen = absent.num_rows - status_of.num_rows
        if not_seen:
            missing[NOT_IN_POOL] = not_seen

    tasks: dict[str, ShardTask] = {}
    next_output = 0
    shard_col = chosen["shard_idx"].to_numpy()
    uid_col = chosen["uid"].to_pylist()
    count_col = chosen["count"].to_numpy()
    bounds = _group_bounds(shard_col)
    for start, stop in bounds:
        sid = shard_ids[int(shard_col[start])]
        samples = int(count_col[start:stop].sum())
        n_out = math.ceil(samples / samples_per_shard)
        tasks[sid] = ShardTask(sid, uid_col[start:stop], [int(c) for c in count_col[start:stop]],
                               next_output, n_out, samples)
        next_output += n_out
    total_rows = int(pc.sum(counts["count"]).as_py() or 0)
    samples = sum(t.samples for t in tasks.values())
    return ExportPlan(tasks, total_rows, counts.num_rows, missing, total_rows - samples, samples, next_output)


def _group_bounds(sorted_keys: Any) -> list[tuple[int, int]]:
    """[start, stop) of each run of equal values in a sorted array."""
    n = len(sorted_keys)
    if n == 0:
        return []
    import numpy as np

    cuts = np.flatnonzero(np.diff(sorted_keys)) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [n]])
    return [(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]
