"""Resolve what to export: a filter subset, a balanced set, or any DataComp uids.npy / uids.parquet."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import layout
from curate.errors import ConfigError, first_line
from curate.pool import Pool, fs_protocols
from curate.uid import check_uids, npy_array_to_uids

SUBSET_ROOTS = (layout.SUBSETS, layout.BALANCED)
UID_FILES = ("uids.parquet", "uids.npy")


@dataclass
class Subset:
    name: str
    source: str  # the file the uids came from, as a URL or path
    uids: pa.ChunkedArray  # in file order, repeats kept (a uid listed k times is exported k times)

    def counts(self) -> pa.Table:
        """uid -> how many times it is listed."""
        vc = pc.value_counts(self.uids)
        return pa.table({"uid": vc.field("values"), "count": pc.cast(vc.field("counts"), pa.int64())})


def _read_uid_file(url: str) -> pa.ChunkedArray:
    fs, path = fsspec.core.url_to_fs(url)
    if path.endswith(".npy"):
        with fs.open(path, "rb") as fh:
            arr = np.load(fh, allow_pickle=False)
        if not (arr.dtype.names == ("f0", "f1") or (arr.ndim == 2 and arr.shape[1] == 2)):
            raise ConfigError(f"{url}: not a DataComp uid array (expected dtype u8,u8), got {arr.dtype}")
        return pa.chunked_array([pa.array(npy_array_to_uids(arr), pa.string())])
    with fs.open(path, "rb") as fh:
        try:
            table = pq.read_table(fh)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise ConfigError(f"{url}: unreadable parquet ({first_line(exc)})") from exc
    if "uid" not in table.column_names:
        raise ConfigError(f"{url}: has no 'uid' column (columns: {', '.join(table.column_names)})")
    uids = pc.cast(table["uid"], pa.string())
    check_uids(uids, url, ConfigError)
    return uids


def _uid_file_in(fs: fsspec.AbstractFileSystem, directory: str) -> str | None:
    for name in UID_FILES:
        if fs.exists(posixpath.join(directory, name)):
            return posixpath.join(directory, name)
    return None


def _available(pool: Pool) -> list[str]:
    return [f"{root}/{name}" for root in SUBSET_ROOTS for name in pool.listdir(root)]


def resolve_subset(pool: Pool, subset: str, what: str = "export") -> Subset:
    """Find the uid list `subset` names.

    Tried in order: a pool-relative path (`subsets/x`, `balanced/y`, or a file under them), a bare
    name under subsets/ then balanced/, and a path or URL outside the pool. A directory means its
    uids.parquet (or uids.npy). `what` names the command in errors.
    """
    subset = subset.strip()
    if not subset:
        raise ConfigError(f"{what}: no subset given (--subset NAME|PATH)")
    candidates: list[tuple[fsspec.AbstractFileSystem, str, str]] = []
    rel = subset.rstrip("/")
    if "://" not in rel and not rel.startswith("/") and ".." not in rel.split("/"):
        candidates.append((pool.fs, pool.path(rel), pool.uri(rel)))
        candidates += [(pool.fs, pool.path(root, rel), pool.uri(root, rel)) for root in SUBSET_ROOTS]
    fs, path = fsspec.core.url_to_fs(rel)
    candidates.append((fs, path, rel))
    for cfs, path, url in candidates:
        if not cfs.exists(path):
            continue
        if cfs.isdir(path):
            found = _uid_file_in(cfs, path)
            if found is None:
                raise ConfigError(f"{what}: {url} holds neither {' nor '.join(UID_FILES)}")
            file_url = url.rstrip("/") + "/" + posixpath.basename(found)
            return Subset(posixpath.basename(path.rstrip("/")), file_url, _read_uid_file(_full(cfs, found)))
        if not path.endswith((".npy", ".parquet")):
            raise ConfigError(f"{what}: {url} is neither a .npy nor a .parquet uid file")
        parent = posixpath.basename(posixpath.dirname(path))
        stem = posixpath.basename(path).rsplit(".", 1)[0]
        name = parent if stem == "uids" and parent else stem
        return Subset(name, url, _read_uid_file(_full(cfs, path)))
    known = ", ".join(_available(pool)) or "none"
    raise ConfigError(f"{what}: subset {subset!r} not found in {pool.url} or as a path (pool has: {known})")


def _full(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return fs.unstrip_protocol(path) if "file" not in fs_protocols(fs) else path

