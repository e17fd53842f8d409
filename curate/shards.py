"""Download shards: img2dataset's webdataset layout, the contract between download and later stages.

    shards/00000000.tar          {key}.jpg, {key}.txt, {key}.json per successful sample
    shards/00000000.parquet      one row per candidate (successes and failures), SHARD_SCHEMA
    shards/00000000_stats.json   img2dataset-style counts (status_dict, successes, failed_to_*)

With output_format "parquet" the images live in the .parquet's `jpg` column and there is no tar.
Only shards with a `_done/download/fetch/<shard>.json` marker are complete; readers list shards that way.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from curate import layout
from curate.errors import PoolError
from curate.pool import Pool
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


class ShardWriter:
    """Collects one shard's rows and writes tar/parquet/stats atomically on close()."""

    def __init__(self, pool: Pool, shard_id: str, output_format: str = "webdataset") -> None:
        if output_format not in ("webdataset", "parquet"):
            raise ValueError(f"unknown output_format {output_format!r}")
        self.pool = pool
        self.shard_id = shard_id
        self.output_format = output_format
        self.rows: list[SampleRow] = []

    def add(self, row: SampleRow) -> None:
        self.rows.append(row)

    def _table(self) -> pa.Table:
        cols: dict[str, list[Any]] = {f.name: [] for f in SHARD_SCHEMA}
        for r in self.rows:
            for name in cols:
                cols[name].append(getattr(r, name))
        table = pa.table(cols, schema=SHARD_SCHEMA)
        if self.output_format == "parquet":
            table = table.append_column("jpg", pa.array([r.image for r in self.rows], pa.binary()))
        return table

    def _tar_bytes(self) -> bytes:
        """The tar, byte for byte what tarfile writes, built from TarInfo.tobuf headers: addfile()
        copies every member through a file object, a quarter of a download shard's write time."""
        parts: list[bytes] = []
        for r in self.rows:
            if r.status != "success" or r.image is None:
                continue
            meta = {
                "key": r.key, "uid": r.uid, "url": r.url, "caption": r.caption, "status": r.status,
                "width": r.width, "height": r.height, "original_width": r.original_width,
                "original_height": r.original_height, "sha256": r.sha256, **(r.extra or {}),
            }
            for ext, data in (
                (r.extension, r.image),
                ("txt", r.caption.encode("utf-8")),
                ("json", json.dumps(meta, ensure_ascii=False).encode("utf-8")),
            ):
                info = tarfile.TarInfo(f"{r.key}.{ext}")
                info.size = len(data)
                info.mtime = 0  # reproducible shards
                parts.append(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
                parts.append(data)
                parts.append(bytes(-len(data) % tarfile.BLOCKSIZE))
        parts.append(bytes(2 * tarfile.BLOCKSIZE))  # end-of-archive marker
        size = sum(len(p) for p in parts)
        parts.append(bytes(-size % tarfile.RECORDSIZE))
        return b"".join(parts)

    def close(self, stats: dict[str, Any]) -> None:
        """Write the shard; the tar goes first so the parquet never names a missing tar."""
        if self.output_format == "webdataset":
            self.pool.write_bytes(f"{SHARD_DIR}/{self.shard_id}.tar", self._tar_bytes())
        self.pool.write_parquet(f"{SHARD_DIR}/{self.shard_id}.parquet", self._table())
        self.pool.write_json(f"{SHARD_DIR}/{self.shard_id}_stats.json", stats)


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
