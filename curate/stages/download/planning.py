"""Cut candidates/*.parquet (in name order) into download shards of samples_per_shard rows."""

from __future__ import annotations

import posixpath

from curate import layout
from curate.errors import PoolError
from curate.pool import Pool
from curate.shards import shard_name
from curate.stages.download.shard import CANDIDATE_COLUMNS, Segment

CANDIDATE_DIR = layout.CANDIDATES
# A guard, not a resume rule: finished shards cut from other candidates are refused (with --rerun to
# start over) rather than silently downloaded again, since a download is the costliest thing to redo.
PLAN_REL = layout.DOWNLOAD_PLAN


def candidate_files(pool: Pool) -> list[tuple[str, int]]:
    """(pool-relative path, row count) of every candidates parquet file, checking its columns."""
    names = [n for n in pool.listdir(CANDIDATE_DIR) if n.endswith(".parquet")]
    if not names:
        raise PoolError(f"{pool.uri(CANDIDATE_DIR)} has no parquet files: run `curate ingest` first")
    out = []
    for name in names:
        rel = posixpath.join(CANDIDATE_DIR, name)
        meta = pool.parquet_metadata(rel)  # a truncated or garbage file is one PoolError naming it
        names = meta.schema.to_arrow_schema().names
        missing = [c for c in CANDIDATE_COLUMNS if c not in names]
        if missing:
            raise PoolError(f"{pool.uri(rel)} lacks column(s) {', '.join(missing)}")
        out.append((rel, meta.num_rows))
    return out


def plan_shards(files: list[tuple[str, int]], samples_per_shard: int) -> dict[str, list[Segment]]:
    """Shard id → the row ranges it covers; shards span file boundaries so all but the last are full."""
    shards: dict[str, list[Segment]] = {}
    current: list[Segment] = []
    filled = 0
    for rel, rows in files:
        start = 0
        while start < rows:
            take = min(rows - start, samples_per_shard - filled)
            current.append(Segment(rel, start, start + take))
            filled += take
            start += take
            if filled == samples_per_shard:
                shards[shard_name(len(shards))] = current
                current, filled = [], 0
    if current:
        shards[shard_name(len(shards))] = current
    return shards


def check_plan(pool: Pool, files: list[tuple[str, int]], samples_per_shard: int, finished: int) -> None:
    """Refuse to resume finished shards that were cut differently (other candidates or shard size)."""
    plan = {"samples_per_shard": samples_per_shard, "candidates": [[rel, rows] for rel, rows in files]}
    if pool.exists(PLAN_REL) and finished:
        previous = pool.read_json(PLAN_REL)
        if previous != plan:
            raise PoolError(
                f"{pool.uri(layout.SHARDS)} was cut from other candidates or another samples_per_shard "
                f"({previous.get('samples_per_shard')}); rerun with --rerun to download again"
            )
    pool.write_json(PLAN_REL, plan)
