"""Image-caption pairs for DFN training and evaluation, read from any of the supported sources.

The set is held as an Arrow table of *encoded* image bytes (uid, caption, label, image): a DFN's
high-quality set is small next to the pool (DFN used a few million pairs), and random access by
index is what makes the batch order a pure function of (seed, step), which exact resume needs.
Images are decoded lazily in DataLoader workers.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.dfn.config import DataSource, ParquetSource, PoolSubsetSource, WebdatasetSource
from curate.errors import ConfigError, PoolError
from curate.pool import Pool, fs_protocols
from curate.shards import iter_shard_samples, list_shards, read_shard_table

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
PAIR_SCHEMA = pa.schema([("uid", pa.string()), ("caption", pa.string()), ("label", pa.string()),
                         ("image", pa.binary())])


@dataclass
class PairSet:
    """Pairs plus the count of every record that was not turned into a pair, by reason."""

    table: pa.Table
    counts: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.table.num_rows


def load_pairs(source: DataSource) -> PairSet:
    if isinstance(source, WebdatasetSource):
        return read_webdataset(source.urls, source.label_field)
    if isinstance(source, ParquetSource):
        return read_parquet_pairs(source)
    if isinstance(source, PoolSubsetSource):
        return read_pool_subset(Pool(source.pool), source.subset, source.label_field)
    raise TypeError(f"unknown data source {source!r}")


def _expand(urls: list[str], suffix: str) -> list[str]:
    """Files named by paths, directories or globs, as fsspec URLs, in a stable order."""
    out: list[str] = []
    for url in urls:
        fs, path = fsspec.core.url_to_fs(url)
        if fs.isdir(path):
            found = sorted(p for p in fs.find(path) if p.endswith(suffix))
        elif any(ch in path for ch in "*?["):
            found = sorted(fs.glob(path))
        elif fs.exists(path):
            found = [path]
        else:
            raise ConfigError(f"data: {url}: no such file or directory")
        if not found:
            raise ConfigError(f"data: {url}: no {suffix} files found")
        out.extend(fs.unstrip_protocol(p) if "file" not in fs_protocols(fs) else p for p in found)
    return out


def _protocols(fs: fsspec.AbstractFileSystem) -> set[str]:
    return {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)


def _rows_to_table(rows: dict[str, list[Any]]) -> pa.Table:
    return pa.table(rows, schema=PAIR_SCHEMA)


def _empty_rows() -> dict[str, list[Any]]:
    return {"uid": [], "caption": [], "label": [], "image": []}


def _add_sample(rows: dict[str, list[Any]], counts: Counter, sample: dict[str, Any],
                label_field: str | None) -> None:
    meta = sample.get("meta") or {}
    image, caption = sample.get("image"), sample.get("caption")
    if image is None:
        counts["missing_image"] += 1
        return
    if not caption:
        counts["missing_caption"] += 1
        return
    label = meta.get(label_field) if label_field else None
    if label_field and label is None:
        counts["missing_label"] += 1
    rows["uid"].append(meta.get("uid") or sample.get("key"))
    rows["caption"].append(caption)
    rows["label"].append(None if label is None else str(label))
    rows["image"].append(image)
    counts["loaded"] += 1


def _iter_tar(fh: Any) -> Any:
    """Group a webdataset tar's members into samples by key (members of a sample are adjacent)."""
    current: dict[str, Any] = {}
    with tarfile.open(fileobj=fh, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            base = posixpath.basename(member.name)
            if base.startswith("."):
                continue
            key, _, ext = member.name.partition(".")
            if current and current["key"] != key:
                yield current
                current = {}
            current["key"] = key
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            ext = ext.lower()
            if ext == "json":
                current["meta"] = json.loads(data)
            elif ext in ("txt", "caption"):
                current["caption"] = data.decode("utf-8").strip()
            elif ext in IMAGE_EXTS:
                current["image"] = data
    if current:
        yield current


def read_webdataset(urls: list[str], label_field: str | None = None) -> PairSet:
    rows, counts = _empty_rows(), Counter()
    for url in _expand(urls, ".tar"):
        with fsspec.open(url, "rb") as fh:
            for sample in _iter_tar(fh):
                _add_sample(rows, counts, sample, label_field)
    return PairSet(_rows_to_table(rows), dict(counts))


def read_parquet_pairs(source: ParquetSource) -> PairSet:
    tables = []
    for url in _expand(source.paths, ".parquet"):
        with fsspec.open(url, "rb") as fh:
            names = pq.ParquetFile(fh).schema_arrow.names
            for col in (source.image_column, source.caption_column):
                if col not in names:
                    raise ConfigError(f"data: {url}: no column {col!r} (has {', '.join(names)})")
            wanted = [source.image_column, source.caption_column]
            wanted += [c for c in (source.uid_column, source.label_field) if c and c in names]
            if source.label_field and source.label_field not in names:
                raise ConfigError(f"data: {url}: no label column {source.label_field!r}")
            fh.seek(0)
            tables.append(pq.read_table(fh, columns=wanted))
    table = pa.concat_tables(tables, promote_options="default")
    image, caption = table[source.image_column], table[source.caption_column]
    no_image = pc.is_null(image)
    empty_caption = pc.fill_null(pc.equal(pc.utf8_length(caption), 0), True)
    no_caption = pc.and_(pc.invert(no_image), empty_caption)
    keep = pc.invert(pc.or_(no_image, no_caption))
    counts = {"missing_image": pc.sum(no_image).as_py() or 0, "missing_caption": pc.sum(no_caption).as_py() or 0}
    table = table.filter(keep)
    n = table.num_rows
    counts["loaded"] = n
    uid = (table[source.uid_column].cast(pa.string()) if source.uid_column and source.uid_column in table.column_names
           else pa.array([str(i) for i in range(n)], pa.string()))
    label = (table[source.label_field].cast(pa.string()) if source.label_field
             else pa.nulls(n, pa.string()))
    out = pa.table({"uid": uid, "caption": table[source.caption_column].cast(pa.string()), "label": label,
                    "image": table[source.image_column].cast(pa.binary())}, schema=PAIR_SCHEMA)
    return PairSet(out, {k: v for k, v in counts.items() if v})


def read_pool_subset(pool: Pool, subset: str, label_field: str | None = None) -> PairSet:
    rel = f"subsets/{subset}/uids.parquet"
    if not pool.exists(rel):
        raise PoolError(f"{pool.uri(rel)} not found: run `curate filter` to make subset {subset!r} first")
    wanted = pool.read_parquet(rel, columns=["uid"])["uid"]
    wanted_set = set(wanted.to_pylist())
    rows, counts = _empty_rows(), Counter()
    found: set[str] = set()
    for shard_id in list_shards(pool):
        uids = read_shard_table(pool, shard_id, columns=["uid", "status"])
        hit = pc.and_(pc.is_in(uids["uid"], value_set=wanted), pc.equal(uids["status"], "success"))
        if not pc.any(hit).as_py():
            continue  # skip reading the tar of a shard holding none of the subset
        for sample in iter_shard_samples(pool, shard_id):
            if sample["uid"] in wanted_set and sample["uid"] not in found:
                found.add(sample["uid"])
                _add_sample(rows, counts, sample, label_field)
    missing = len(wanted_set) - len(found)
    if missing:
        counts["not_in_shards"] += missing
    return PairSet(_rows_to_table(rows), dict(counts))


def split_holdout(pairs: PairSet, fraction: float, seed: int) -> tuple[PairSet, PairSet]:
    """Deterministic train/held-out split by a seeded permutation."""
    import numpy as np

    n = len(pairs)
    order = np.random.default_rng(seed).permutation(n)
    cut = round(n * (1 - fraction))
    return (PairSet(pairs.table.take(np.sort(order[:cut])), dict(pairs.counts)),
            PairSet(pairs.table.take(np.sort(order[cut:])), {}))


def source_from_paths(paths: list[str], *, label_field: str | None = None, image_column: str = "jpg",
                      caption_column: str = "caption") -> DataSource:
    """A webdataset or Parquet source for command-line paths, by what the paths hold."""
    kinds = set()
    for url in paths:
        fs, path = fsspec.core.url_to_fs(url)
        names = fs.find(path) if fs.isdir(path) else [path]
        if any(n.endswith(".tar") for n in names):
            kinds.add("webdataset")
        if any(n.endswith(".parquet") for n in names):
            kinds.add("parquet")
        if not fs.isdir(path) and not any(ch in path for ch in "*?[") and not fs.exists(path):
            raise ConfigError(f"--data {url}: no such file or directory")
    if len(kinds) != 1:
        what = "both .tar and .parquet files" if kinds else "no .tar or .parquet files"
        raise ConfigError(f"--data {' '.join(paths)}: found {what}; give webdataset tars or Parquet files")
    if kinds == {"webdataset"}:
        return WebdatasetSource(urls=paths, label_field=label_field)
    return ParquetSource(paths=paths, image_column=image_column, caption_column=caption_column,
                         label_field=label_field)
