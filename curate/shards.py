"""Download shards: img2dataset's webdataset layout, the contract between download and later stages.

    shards/00000000.tar          {key}.jpg, {key}.txt, {key}.json per successful sample
    shards/00000000.parquet      one row per candidate (successes and failures), SHARD_SCHEMA
    shards/00000000_stats.json   img2dataset-style counts (status_dict, successes, failed_to_*)

With output_format "parquet" the images live in the .parquet's `jpg` column and there is no tar.
Only shards with a `_done/download/fetch/<shard>.json` marker are complete; readers list shards that way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate import layout
from curate.errors import PoolError
from curate.pool import Pool, StagedFile
from curate.tarstream import iter_tar_files
from curate.uid import check_uids

SHARD_DIR = "shards"

SHARD_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("uid", pa.string()),
        ("url", pa.string()),
        ("caption", pa.string()),
        ("status", pa.string()),
        ("error_message", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("original_width", pa.int32()),
        ("original_height", pa.int32()),
        ("sha256", pa.string()),
    ]
)


def shard_name(index: int) -> str:
    return f"{index:08d}"


@dataclass
class SampleRow:
    key: str
    uid: str
    url: str
    caption: str
    status: str
    error_message: str | None = None
    width: int | None = None
    height: int | None = None
    original_width: int | None = None
    original_height: int | None = None
    sha256: str | None = None
    image: bytes | None = None  # encoded image; present only when status == "success"
    extension: str = "jpg"
    extra: dict[str, Any] | None = None  # carried into the sample's .json (e.g. page_url, lang)


# The parquet is written a row group at a time: rows wait in Arrow batches (a few hundred bytes a
# row without images) until a row group holds ROW_GROUP_ROWS rows or, with the images in the
# parquet, ROW_GROUP_BYTES of them. A shard of the default 10,000 rows is one row group, as before.
ROW_GROUP_ROWS = 65_536
ROW_GROUP_BYTES = 32 * 1024 * 1024
_BATCH_ROWS = 1024


def _tar_member(name: str, data: bytes) -> list[bytes]:
    """Header, data and padding of one tar member, byte for byte what tarfile writes (TarInfo.tobuf
    headers: addfile() copies every member through a file object, a quarter of a shard's write time)."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible shards
    return [info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"), data, bytes(-len(data) % tarfile.BLOCKSIZE)]


class ShardWriter:
    """Writes one shard as its rows are added, in the order added; close() makes it visible.

    The tar (webdataset) and the parquet are written under temporary names as rows come (a
    successful sample's files go to the tar at once, its image is not kept), so memory does not
    grow with the shard. close() moves the tar, then the parquet to their final names and writes
    the stats; discard() drops both. Nothing partial is ever under a final name, and the runner's
    completion marker, written after close(), is what makes the shard count as done.
    """

    def __init__(self, pool: Pool, shard_id: str, output_format: str = "webdataset") -> None:
        if output_format not in ("webdataset", "parquet"):
            raise ValueError(f"unknown output_format {output_format!r}")
        self.pool = pool
        self.shard_id = shard_id
        self.output_format = output_format
        self.schema = SHARD_SCHEMA.append(pa.field("jpg", pa.binary())) if output_format == "parquet" else SHARD_SCHEMA
        # What the caller may still need once the rows are written (kept-earlier check, stats): small.
        self.uids: list[str] = []
        self.statuses: list[str] = []
        self.bytes_stored = 0
        self._tar: StagedFile | None = None
        self._tar_size = 0
        self._parquet: StagedFile | None = None
        self._parquet_writer: pq.ParquetWriter | None = None
        self._rows: list[SampleRow] = []
        self._batches: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self._finished = False

    def add(self, row: SampleRow) -> None:
        if self._finished:
            raise ValueError(f"shard {self.shard_id}: add() after finish()")
        self.uids.append(row.uid)
        self.statuses.append(row.status)
        if row.image is not None:
            self.bytes_stored += len(row.image)
            if self.output_format == "webdataset":
                if row.status == "success":
                    self._write_tar_sample(row)
                row = dataclasses.replace(row, image=None)  # in the tar now (the parquet has no images)
            else:
                self._pending_bytes += len(row.image)
        self._rows.append(row)
        if len(self._rows) >= _BATCH_ROWS:
            self._to_batch()
        if self._pending_rows >= ROW_GROUP_ROWS or self._pending_bytes >= ROW_GROUP_BYTES:
            self._write_row_group()

    def _write_tar_sample(self, r: SampleRow) -> None:
        if self._tar is None:
            self._tar = self.pool.open_staged(f"{SHARD_DIR}/{self.shard_id}.tar")
        meta = {
            "key": r.key, "uid": r.uid, "url": r.url, "caption": r.caption, "status": r.status,
            "width": r.width, "height": r.height, "original_width": r.original_width,
            "original_height": r.original_height, "sha256": r.sha256, **(r.extra or {}),
        }
        parts = [*_tar_member(f"{r.key}.{r.extension}", r.image or b""),
                 *_tar_member(f"{r.key}.txt", r.caption.encode("utf-8")),
                 *_tar_member(f"{r.key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))]
        data = b"".join(parts)
        self._tar.fh.write(data)
        self._tar_size += len(data)

    def _to_batch(self) -> None:
        if not self._rows:
            return
        cols: dict[str, list[Any]] = {f.name: [] for f in SHARD_SCHEMA}
        for r in self._rows:
            for name, values in cols.items():
                values.append(getattr(r, name))
        arrays = [pa.array(cols[f.name], f.type) for f in SHARD_SCHEMA]
        if self.output_format == "parquet":
            arrays.append(pa.array([r.image for r in self._rows], pa.binary()))
        self._batches.append(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self._pending_rows += len(self._rows)
        self._rows = []

    def _write_row_group(self) -> None:
        self._to_batch()
        if not self._batches:
            return
        if self._parquet_writer is None:
            self._parquet = self.pool.open_staged(f"{SHARD_DIR}/{self.shard_id}.parquet")
            self._parquet_writer = pq.ParquetWriter(self._parquet.fh, self.schema)
        table = pa.Table.from_batches(self._batches, schema=self.schema)
        self._parquet_writer.write_table(table, row_group_size=max(1, table.num_rows))
        self._batches, self._pending_rows, self._pending_bytes = [], 0, 0

    def finish(self) -> None:
        """Write what is left to the temporaries (end of tar, parquet footer); nothing visible yet."""
        if self._finished:
            return
        self._write_row_group()
        if self._parquet_writer is None:  # a shard without rows still gets its (empty) parquet
            self._parquet = self.pool.open_staged(f"{SHARD_DIR}/{self.shard_id}.parquet")
            self._parquet_writer = pq.ParquetWriter(self._parquet.fh, self.schema)
        self._parquet_writer.close()
        if self.output_format == "webdataset":
            if self._tar is None:
                self._tar = self.pool.open_staged(f"{SHARD_DIR}/{self.shard_id}.tar")
            end = 2 * tarfile.BLOCKSIZE  # end-of-archive marker, then padding to a whole record
            self._tar.fh.write(bytes(end + -(self._tar_size + end) % tarfile.RECORDSIZE))
        self._finished = True

    def close(self, stats: dict[str, Any]) -> None:
        """Make the shard visible: the tar first, so the parquet never names a missing tar, then the stats."""
        try:
            self.finish()
            if self._tar is not None:
                self._tar.commit()
            assert self._parquet is not None
            self._parquet.commit()
        except BaseException:
            self.discard()
            raise
        self.pool.write_json(f"{SHARD_DIR}/{self.shard_id}_stats.json", stats)

    def discard(self) -> None:
        """Drop the temporaries (the earlier shard, if any, stays as it was)."""
        if self._parquet_writer is not None and not self._finished:
            with contextlib.suppress(Exception):
                self._parquet_writer.close()
        for staged in (self._tar, self._parquet):
            if staged is not None:
                staged.discard()
        self._tar = self._parquet = None
        self._parquet_writer = None
        self._finished = True


def shard_outputs(output_format: str) -> Callable[[str, Any, Any], list[str]]:
    """The files a finished download shard has (the runner redoes a marked shard missing one)."""
    def outputs(shard_id: str, _payload: Any, _stats: Any) -> list[str]:
        tar = [f"{SHARD_DIR}/{shard_id}.tar"] if output_format == "webdataset" else []
        return [*tar, f"{SHARD_DIR}/{shard_id}.parquet"]
    return outputs


def list_shards(pool: Pool) -> list[str]:
    """Ids of complete download shards (those with a completion marker), sorted.

    A marker's presence is what counts here, not its content: a damaged one does not hide the
    shard from later stages (`curate download` itself redoes such a shard)."""
    return pool.marker_ids(layout.DOWNLOAD_MARKERS)


def shard_parquet_rel(pool: Pool, shard_id: str) -> str:
    """The shard's parquet, or a PoolError saying its marker is a phantom (the file is gone)."""
    rel = f"{SHARD_DIR}/{shard_id}.parquet"
    if not pool.exists(rel):
        raise PoolError(f"{pool.uri(rel)} is missing though {pool.uri(layout.download_marker(shard_id))} "
                        "marks the shard done; run `curate download` again to redo it")
    return rel


def read_shard_table(pool: Pool, shard_id: str, columns: list[str] | None = None) -> pa.Table:
    """The shard's per-candidate table (without image bytes unless `jpg` is asked for)."""
    rel = shard_parquet_rel(pool, shard_id)
    if columns is None:
        columns = [n for n in pool.parquet_schema(rel).names if n != "jpg"]
    table = pool.read_parquet(rel, columns=columns)
    if "uid" in table.column_names:
        check_uids(table["uid"], pool.uri(rel))
    return table


def iter_shard_samples(pool: Pool, shard_id: str) -> Iterator[dict[str, Any]]:
    """Successful samples of a shard: {key, uid, caption, image (bytes), ext, meta}."""
    tar_rel = f"{SHARD_DIR}/{shard_id}.tar"
    if pool.exists(tar_rel):
        with pool.open(tar_rel) as fh:
            current: dict[str, Any] = {}
            for name, data in iter_tar_files(fh):
                key, _, ext = name.rpartition(".")
                if current and current.get("key") != key:
                    yield _finish(current)
                    current = {}
                current["key"] = key
                if ext == "json":
                    current["meta"] = json.loads(data)
                elif ext == "txt":
                    current["caption"] = data.decode("utf-8")
                else:
                    current["image"] = data
                    current["ext"] = ext
            if current:
                yield _finish(current)
        return
    table = pool.read_parquet(shard_parquet_rel(pool, shard_id))
    for row in table.to_pylist():
        if row["status"] == "success" and row.get("jpg") is not None:
            image = row.pop("jpg")
            yield {"key": row["key"], "uid": row["uid"], "caption": row["caption"], "image": image,
                   "ext": "jpg", "meta": row}


def _finish(sample: dict[str, Any]) -> dict[str, Any]:
    meta = sample.get("meta", {})
    sample.setdefault("caption", meta.get("caption", ""))
    sample["uid"] = meta.get("uid")
    return sample
