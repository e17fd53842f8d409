"""The export task: stream one download shard's chosen samples into new webdataset shards.

Output per export (exports/<name>/):
    NNNNNNNN.tar                 {key}.jpg (or the shard's image extension), {key}.txt, {key}.json
    metadata/NNNNNNNN.parquet    one row per written sample: key, uid, shard metadata, every score column
    images/NNNNNNNN.parquet      key, uid, caption, image bytes (with_images_parquet only)
Keys are `{uid}-{j}`, j = 0..k-1 for a uid listed k times, as DataComp's resharder writes repeats.
"""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from curate import layout
from curate.pool import Pool
from curate.shards import iter_shard_samples, read_shard_table

SHARD_COLUMNS = ["uid", "url", "caption", "width", "height", "original_width", "original_height", "sha256"]


class ExportSettings(BaseModel):
    name: str  # the export: exports/<name>/
    samples_per_shard: int
    shuffle_buffer: int = 0
    seed: int = 0
    with_images_parquet: bool = False


def output_name(index: int) -> str:
    return f"{index:08d}"


def sample_features(pool: Pool, shard_id: str, uids: list[str]) -> pa.Table:
    """Shard columns of the chosen uids joined with every scores/<scorer>/<shard>.parquet on uid."""
    table = read_shard_table(pool, shard_id)
    keep = [c for c in SHARD_COLUMNS if c in table.column_names]
    table = table.filter(pc.equal(table["status"], "success")).select(keep)
    table = table.filter(pc.is_in(table["uid"], value_set=pa.array(uids, pa.string())))
    table = _first_per_uid(table)
    for scorer in pool.listdir(layout.SCORES):
        rel = layout.scores_file(scorer, shard_id)
        if not pool.exists(rel):
            continue
        scores = _first_per_uid(pool.read_parquet(rel))
        new_cols = [c for c in scores.column_names if c == "uid" or c not in table.column_names]
        if len(new_cols) > 1:
            table = table.join(scores.select(new_cols), "uid", join_type="left outer")
    # Joins reorder rows; put them back in the plan's uid order so output is deterministic.
    order = pc.index_in(pa.array(uids, pa.string()), value_set=table["uid"])
    return table.take(pc.drop_null(order))


def _first_per_uid(table: pa.Table) -> pa.Table:
    if table.num_rows == 0:
        return table
    _, first = np.unique(table["uid"].to_numpy(zero_copy_only=False), return_index=True)
    return table.take(pa.array(np.sort(first)))


class _ShuffleBuffer:
    """webdataset-style buffer shuffle: hold up to `size` items, emit a random one as each arrives."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.rng = np.random.default_rng(seed)
        self.items: list[Any] = []

    def push(self, item: Any) -> list[Any]:
        if self.size <= 1:
            return [item]
        self.items.append(item)
        if len(self.items) < self.size:
            return []
        return [self._pop()]

    def drain(self) -> list[Any]:
        out = []
        while self.items:
            out.append(self._pop())
        return out

    def _pop(self) -> Any:
        i = int(self.rng.integers(len(self.items)))
        self.items[i], self.items[-1] = self.items[-1], self.items[i]
        return self.items.pop()


class _OutputShard:
    """One output tar, streamed to a temporary name and renamed into place on close."""

    def __init__(self, pool: Pool, settings: ExportSettings, index: int) -> None:
        self.pool = pool
        self.settings = settings
        self.name = output_name(index)
        self.rows: list[int] = []
        self.keys: list[str] = []
        self.images: list[bytes] = []
        self.exts: list[str] = []
        self._stack = contextlib.ExitStack()
        fh = self._stack.enter_context(pool.open_atomic(layout.export_tar(settings.name, self.name)))
        # Held open across add() calls; the ExitStack closes it on close()/abort().
        self.tar = self._stack.enter_context(tarfile.open(fileobj=fh, mode="w|"))  # noqa: SIM115

    def add(self, key: str, row: int, image: bytes, ext: str, caption: str, meta: dict[str, Any]) -> None:
        meta = {"key": key, **meta}
        for suffix, data in ((ext, image), ("txt", caption.encode("utf-8")),
                             ("json", json.dumps(meta, ensure_ascii=False, default=_json_default).encode())):
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size = len(data)
            info.mtime = 0  # byte-identical reruns
            self.tar.addfile(info, io.BytesIO(data))
        self.rows.append(row)
        self.keys.append(key)
        self.exts.append(ext)
        if self.settings.with_images_parquet:
            self.images.append(image)

    def close(self, features: pa.Table) -> None:
        self._stack.close()  # tar complete and renamed before its metadata appears
        meta = features.take(pa.array(self.rows, pa.int64()))
        meta = meta.add_column(0, "key", pa.array(self.keys, pa.string()))
        meta = meta.append_column("shard", pa.array([self.name] * len(self.keys), pa.string()))
        self.pool.write_parquet(layout.export_metadata(self.settings.name, self.name), meta)
        if self.settings.with_images_parquet:
            images = pa.table({"key": meta["key"], "uid": meta["uid"], "caption": meta["caption"],
                               "ext": pa.array(self.exts, pa.string()), "image": pa.array(self.images, pa.binary())})
            self.pool.write_parquet(layout.export_images(self.settings.name, self.name), images)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._stack.__exit__(RuntimeError, RuntimeError("export shard aborted"), None)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def shard_outputs(settings: ExportSettings) -> Any:
    """Pass.outputs: the files a finished input shard wrote (its marker says how many output shards)."""

    def outputs(_sid: str, payload: dict[str, Any], stats: dict[str, Any]) -> list[str]:
        first = int(payload["first_output"])
        names = [output_name(i) for i in range(first, first + int(stats.get("n_output_shards", 0)))]
        files = [layout.export_tar(settings.name, n) for n in names]
        files += [layout.export_metadata(settings.name, n) for n in names]
        if settings.with_images_parquet:
            files += [layout.export_images(settings.name, n) for n in names]
        return files

    return outputs


def export_shard(pool: Pool, shard_id: str, payload: dict[str, Any], settings: ExportSettings) -> dict[str, Any]:
    """Write the output shards planned for one input shard; returns counts by reason."""
    uids: list[str] = payload["uids"]
    wanted = dict(zip(uids, payload["counts"], strict=True))
    features = sample_features(pool, shard_id, uids)
    row_of = {u: i for i, u in enumerate(features["uid"].to_pylist())}
    meta_rows = features.to_pylist()
    shuffle = _ShuffleBuffer(settings.shuffle_buffer, settings.seed * 1_000_003 + int(payload["first_output"]))
    next_index = int(payload["first_output"])
    current: _OutputShard | None = None
    written: list[str] = []
    counts = {"written": 0, "written_repeats": 0, "missing_image_in_shard": 0}
    seen: set[str] = set()

    def emit(item: tuple[str, int, bytes, str, str]) -> None:
        nonlocal current, next_index
        if current is None:
            current = _OutputShard(pool, settings, next_index)
            next_index += 1
        key, row, image, ext, caption = item
        current.add(key, row, image, ext, caption, meta_rows[row])
        counts["written"] += 1
        if len(current.rows) >= settings.samples_per_shard:
            current.close(features)
            written.append(current.name)
            current = None

    try:
        for sample in iter_shard_samples(pool, shard_id):
            uid = sample.get("uid")
            if uid not in wanted or uid in seen or uid not in row_of:
                continue
            seen.add(uid)
            for j in range(wanted[uid]):
                if j:
                    counts["written_repeats"] += 1
                for out in shuffle.push((f"{uid}-{j}", row_of[uid], sample["image"], sample.get("ext", "jpg"),
                                         sample.get("caption", ""))):
                    emit(out)
        for out in shuffle.drain():
            emit(out)
        if current is not None:
            current.close(features)
            written.append(current.name)
            current = None
    except BaseException:
        if current is not None:
            current.abort()
        raise
    missing = [u for u in uids if u not in seen]
    counts["missing_image_in_shard"] = len(missing)
    expected_outputs = int(payload["n_outputs"])
    if missing:
        # The plan promised these; fewer samples may mean fewer output shards than numbered.
        counts["missing_image_in_shard_rows"] = sum(wanted[u] for u in missing)
    return {
        "samples": counts["written"],
        "counts": {k: v for k, v in counts.items() if v},
        "n_output_shards": len(written),
        "planned_output_shards": expected_outputs,
    }
