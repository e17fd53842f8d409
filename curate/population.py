"""The rows a filter or balance run ranks and keeps: download shards, or an imported metadata pool.

A pool built by `curate import` holds DataComp/LAION-style metadata rows in metadata/m*.parquet
(published by metadata/_import.json, written last). Its population is every metadata row, as in
DataComp's baselines, so cut-offs are computed over the whole pool and nothing needs a download.
Any other pool's population is the successful samples of its download shards.

Metadata part ids start with "m" and download shard ids are digits, so a worker tells them apart
from the id alone, and scores/embeddings of later downloads never share a file name with them.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curate.pool import Pool
from curate.shards import list_shards, read_shard_table, shard_parquet_rel

METADATA_DIR = "metadata"
MANIFEST_REL = f"{METADATA_DIR}/_import.json"
PART_PREFIX = "m"


def manifest(pool: Pool) -> dict[str, Any] | None:
    """The import manifest of a metadata pool, or None for a pool built by ingest + download."""
    return pool.read_json(MANIFEST_REL) if pool.exists(MANIFEST_REL) else None


def is_metadata_part(part_id: str) -> bool:
    return part_id.startswith(PART_PREFIX)


def part_rel(part_id: str) -> str:
    return f"{METADATA_DIR}/{part_id}.parquet"


def population_ids(pool: Pool) -> list[str]:
    """Metadata part ids of an imported pool, else the finished download shards."""
    found = manifest(pool)
    if found is not None:
        return sorted(found["parts"])
    return list_shards(pool)


def population_rel(pool: Pool, part_id: str) -> str:
    """The table that lists a part's rows: the metadata part, or the download shard's parquet (a
    PoolError names a download shard whose marker outlived its parquet)."""
    return part_rel(part_id) if is_metadata_part(part_id) else shard_parquet_rel(pool, part_id)


def read_rows(pool: Pool, part_id: str, columns: list[str]) -> tuple[pa.Table, int]:
    """uid + `columns` of a part's population rows, and how many rows are outside it.

    Every metadata row counts; of a download shard only the successful samples do.
    """
    wanted = ["uid", *[c for c in columns if c != "uid"]]
    if is_metadata_part(part_id):
        return pool.read_parquet(part_rel(part_id), columns=wanted), 0
    shard = read_shard_table(pool, part_id, [*wanted, "status"])  # phantom and uid checks included
    table = shard.filter(pc.equal(shard["status"], "success")).drop_columns(["status"])
    return table, shard.num_rows - table.num_rows
