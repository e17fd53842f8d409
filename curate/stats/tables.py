"""Load a pool's tables for statistics: per-sample scores joined on uid, and the stage outputs.

Histograms need every score column side by side, one row per successful sample. Reading is per
download shard and vectorised with pyarrow; beyond `max_rows` a seeded uniform row sample is kept,
so a billion-row pool still reports in bounded memory (the counts in the funnel stay exact).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.pool import Pool
from curate.progress import ShardProgress
from curate.shards import list_shards, read_shard_table

SHARD_SAMPLE_COLUMNS = ["uid", "caption", "width", "height", "original_width", "original_height"]


@dataclass
class PoolTables:
    shards: list[str]
    shard_rows: pa.Table  # every candidate row of the download shards: status, error_message
    samples: pa.Table  # successful samples (possibly a sample of them) joined with every score column
    sampled: bool  # True when `samples` is a row sample of the pool
    scorers: dict[str, list[str]] = field(default_factory=dict)  # scorer -> its columns
    sample_shard: pa.Array | None = None  # download shard id of each row of `samples`


def _first_per_uid(table: pa.Table) -> pa.Table:
    if table.num_rows == 0:
        return table
    _, first = np.unique(table["uid"].to_numpy(zero_copy_only=False), return_index=True)
    return table.take(pa.array(np.sort(first)))


def load_pool_tables(pool: Pool, max_rows: int, seed: int = 0, progress: bool = False) -> PoolTables:
    shards = list_shards(pool)
    scorers = pool.listdir("scores")
    status_tables = []
    for sid in shards:
        t = read_shard_table(pool, sid, ["status", "error_message"])
        status_tables.append(t)
    shard_rows = pa.concat_tables(status_tables) if status_tables else pa.table(
        {"status": pa.array([], pa.string()), "error_message": pa.array([], pa.string())})
    n_success = int(pc.sum(pc.equal(shard_rows["status"], "success")).as_py() or 0) if shard_rows.num_rows else 0
    keep_fraction = min(1.0, max_rows / n_success) if n_success else 1.0
    rng = np.random.default_rng(seed)
    parts: list[pa.Table] = []
    scorer_cols: dict[str, list[str]] = {}
    bar = ShardProgress("stats", len(shards))
    bar.enabled = progress
    for sid in shards:
        table = read_shard_table(pool, sid)
        table = table.filter(pc.equal(table["status"], "success"))
        table = table.select([c for c in SHARD_SAMPLE_COLUMNS if c in table.column_names])
        if keep_fraction < 1.0:
            table = table.filter(pa.array(rng.random(table.num_rows) < keep_fraction))
        for scorer in scorers:
            rel = f"scores/{scorer}/{sid}.parquet"
            if not pool.exists(rel):
                continue
            scores = _first_per_uid(pool.read_parquet(rel))
            cols = [c for c in scores.column_names if c != "uid"]
            scorer_cols.setdefault(scorer, cols)
            new = [c for c in cols if c not in table.column_names]
            if new:
                table = table.join(scores.select(["uid", *new]), "uid", join_type="left outer")
        table = table.append_column("_shard", pa.array([sid] * table.num_rows, pa.string()))
        parts.append(table)
        bar.update(table.num_rows)
    samples = pa.concat_tables(parts, promote_options="default") if parts else pa.table({})
    sample_shard = None
    if "_shard" in samples.column_names:
        sample_shard = samples["_shard"].combine_chunks()
        samples = samples.drop_columns(["_shard"])
    return PoolTables(shards, shard_rows, samples, keep_fraction < 1.0, scorer_cols, sample_shard)


def parquet_rows(pool: Pool, rel_dir: str) -> int | None:
    """Rows of every parquet file under a directory, from footers only; None when there are none."""
    files = [f for f in pool.listdir(rel_dir) if f.endswith(".parquet")]
    if not files:
        return None
    total = 0
    for name in files:
        total += pool.parquet_metadata(f"{rel_dir}/{name}").num_rows
    return total


def read_json_or_none(pool: Pool, rel: str) -> Any:
    return pool.read_json(rel) if pool.exists(rel) else None
