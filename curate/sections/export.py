"""The `export:` section of a pipeline YAML. Export: a subset → trainer-ready webdataset/Parquet shards."""

from __future__ import annotations

from pydantic import Field

from curate.names import PoolName
from curate.sections.base import Section


class ExportConfig(Section):
    """A subset written as webdataset shards and Parquet for trainers (docs/export.md)."""

    subset: str | None = Field(
        None, description="what to export: `subsets/<spec>`, `balanced/<name>`, a bare name (looked up in "
        "`subsets/` then `balanced/`), a directory holding `uids.parquet`/`uids.npy`, or a path/URL of a "
        "`uids.parquet` (column `uid`) or DataComp `uids.npy`"
    )
    name: PoolName | None = Field(None, description="output directory `exports/<name>/`; default: the subset's "
                                  "name")
    samples_per_shard: int = Field(10_000, ge=1, description="samples per output tar (the last tar of each input shard "
                                   "may hold fewer)")
    shuffle_buffer: int = Field(0, ge=0, description="samples held in a seeded shuffle buffer per task; 0: keep order")
    seed: int = Field(0, description="seed of the shuffle buffer")
    with_images_parquet: bool = Field(False, description="also write `exports/<name>/images/NNNNNNNN.parquet` "
                                         "(key, uid, caption, ext, image bytes)")
