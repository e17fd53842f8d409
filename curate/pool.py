"""The pool store: one directory (local or object store) that every stage reads and writes.

Contract (docs/architecture.md):
- a shard's output is written under a temporary name and made visible in one step (rename on
  local disks); on object stores, where a PUT is already all-or-nothing per object, the
  completion marker written last is what makes a shard count as done;
- `_done/<stage>/<shard>.json` holds the shard's stats; a shard without a marker is not done,
  whatever else lies on disk, so a killed worker never leaves something taken as finished;
- `reports/<stage>.json` is the merged statistics of a stage.
"""

from __future__ import annotations

import contextlib
import io
import json
import posixpath
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from curate import layout
from curate.errors import PoolError, first_line

T = TypeVar("T")

TMP_MARK = ".tmp-"


class Pool:
    """A pool directory addressed by a local path or URL (s3://, gs://, memory://, file://)."""

    def __init__(self, root: str) -> None:
        self.url = str(root).rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.root = self.root.rstrip("/") or "/"
        self.is_local = "file" in fs_protocols(self.fs)

    # Pool objects travel to Ray workers; the filesystem object is rebuilt there.
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (Pool, (self.url,))

    def __repr__(self) -> str:
        return f"Pool({self.url!r})"

    def path(self, *parts: str) -> str:
        """Filesystem path (no protocol) of a location inside the pool."""
        for part in parts:
            # The backstop for names that become paths (curate/names.py checks them where they enter):
            # whatever a config or a pool file says, nothing is read or written outside the pool.
            if part.startswith("/") or ".." in part.split("/"):
                raise PoolError(f"{self.url}: {part[:100]!r} is not a location inside the pool")
        return posixpath.join(self.root, *parts)

    def uri(self, *parts: str) -> str:
        """Full URL of a location, usable by other fsspec/pyarrow readers."""
        if self.is_local:
            return self.path(*parts)
        return self.fs.unstrip_protocol(self.path(*parts))

    # ---------------------------------------------------------------- basic io
    def exists(self, *parts: str) -> bool:
        return bool(self.fs.exists(self.path(*parts)))

    def makedirs(self, *parts: str) -> None:
        self.fs.makedirs(self.path(*parts), exist_ok=True)

    def listdir(self, *parts: str) -> list[str]:
        """Names (not paths) directly under a directory, sorted; temporaries excluded."""
        where = self.path(*parts)
        if not self.fs.exists(where):
            return []
        names = [posixpath.basename(p.rstrip("/")) for p in self.fs.ls(where, detail=False)]
        return sorted(n for n in names if TMP_MARK not in n)

    def glob(self, pattern: str) -> list[str]:
        """Pool-relative paths matching a glob, sorted; temporaries excluded."""
        found = self.fs.glob(self.path(pattern))
        prefix = self.root.rstrip("/") + "/"
        return sorted(p[len(prefix) :] for p in found if TMP_MARK not in posixpath.basename(p))

    def open(self, rel: str, mode: str = "rb") -> Any:
        return self.fs.open(self.path(rel), mode)

    def read_bytes(self, rel: str) -> bytes:
        with self.open(rel, "rb") as fh:
            return fh.read()

    def read_json(self, rel: str) -> Any:
        """A JSON file of the pool; a damaged one is a PoolError naming it (a missing one: FileNotFoundError)."""
        data = self.read_bytes(rel)
        try:
            return json.loads(data)
        except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError on binary garbage
            raise PoolError(f"{self.uri(rel)}: not valid JSON ({first_line(exc)})") from exc

    def remove(self, rel: str, recursive: bool = False) -> None:
        if self.exists(rel):
            self.fs.rm(self.path(rel), recursive=recursive)

    @contextlib.contextmanager
    def open_atomic(self, rel: str) -> Iterator[Any]:
        """Write a file that appears under its final name only once fully written."""
        final = self.path(rel)
        self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
        if not self.is_local:
            # An object PUT is all-or-nothing; completion is signalled by the marker.
            with self.fs.open(final, "wb") as fh:
                yield fh
            return
        tmp = f"{final}{TMP_MARK}{uuid.uuid4().hex[:12]}"
        try:
            with self.fs.open(tmp, "wb") as fh:
                yield fh
            self.fs.mv(tmp, final)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.rm(tmp)
            raise

    def open_staged(self, rel: str) -> StagedFile:
        """A file written under a temporary name and moved to `rel` only by its commit() (for
        writers that decide at the end whether to keep what they wrote); discard() drops it."""
        return StagedFile(self, rel)

    def write_bytes(self, rel: str, data: bytes) -> None:
        with self.open_atomic(rel) as fh:
            fh.write(data)

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())

    def write_parquet(self, rel: str, table: pa.Table, **kwargs: Any) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf, **kwargs)
        self.write_bytes(rel, buf.getvalue())

    def read_parquet(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        """A parquet file of the pool; a damaged one (truncated, garbage, missing a column) is a
        PoolError naming it, so a shard task fails with one line that says which file."""
        return self._parquet(rel, lambda fh: pq.read_table(fh, columns=columns))

    def parquet_schema(self, rel: str) -> pa.Schema:
        """The Arrow schema from a parquet file's footer (PoolError naming a damaged file)."""
        return self._parquet(rel, lambda fh: pq.ParquetFile(fh).schema_arrow)

    def parquet_metadata(self, rel: str) -> pq.FileMetaData:
        """A parquet file's footer (row count, schema); PoolError naming a damaged file."""
        return self._parquet(rel, lambda fh: pq.ParquetFile(fh).metadata)

    def _parquet(self, rel: str, read: Callable[[Any], T]) -> T:
        with self.open(rel, "rb") as fh:
            try:
                return read(fh)
            except (pa.ArrowException, OSError, ValueError) as exc:
                raise PoolError(f"{self.uri(rel)}: unreadable parquet ({first_line(exc)})") from exc

    def read_parquet_dir(self, rel_dir: str, columns: list[str] | None = None) -> pa.Table:
        """Concatenate every parquet file directly under a directory, in name order."""
        files = [f for f in self.listdir(rel_dir) if f.endswith(".parquet")]
        if not files:
            raise FileNotFoundError(self.uri(rel_dir))
        tables = [self.read_parquet(posixpath.join(rel_dir, f), columns) for f in files]
        return pa.concat_tables(tables, promote_options="default")

    def cleanup_temporaries(self, rel_dir: str = "") -> int:
        """Remove files a crashed writer left under temporary names; returns how many."""
        leftovers = [p for p in self.fs.find(self.path(rel_dir)) if TMP_MARK in posixpath.basename(p)]
        for p in leftovers:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(p)
        return len(leftovers)

    # ------------------------------------------------------- completion markers (curate.runner writes them)
    def marker_ids(self, rel_dir: str) -> list[str]:
        """Ids of every marker file in a markers directory, readable or not (one listing), sorted."""
        return [name[: -len(".json")] for name in self.listdir(rel_dir) if name.endswith(".json")]

    def read_marker_dir(self, rel_dir: str) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """(stats by shard id, {shard id: why its marker is unusable}) of a markers directory.

        A marker that is not a JSON object (garbage, truncated by a full disk, edited by hand) does
        not count as done: the stage's next run redoes that shard rather than failing on it."""
        good: dict[str, dict[str, Any]] = {}
        damaged: dict[str, str] = {}
        for shard in self.marker_ids(rel_dir):
            rel = posixpath.join(rel_dir, f"{shard}.json")
            try:
                stats = self.read_json(rel)
            except PoolError as exc:
                damaged[shard] = str(exc)
                continue
            except FileNotFoundError:  # removed since the listing (a --rerun elsewhere)
                continue
            if isinstance(stats, dict):
                good[shard] = stats
            else:
                damaged[shard] = f"{self.uri(rel)}: not a JSON object"
        return good, damaged

    def clear_stage(self, stage: str) -> None:
        """Forget a stage's completion (every target's markers and reports), so it runs again."""
        self.remove(layout.stage_markers(stage), recursive=True)
        self.remove(layout.report(stage))
        self.remove(posixpath.join(layout.REPORTS, stage), recursive=True)

    def read_report(self, key: str) -> dict[str, Any] | None:
        """reports/<key>.json (a stage's or a named target's), or None."""
        rel = layout.report(key)
        return self.read_json(rel) if self.exists(rel) else None


class StagedFile:
    """One file being written under a temporary name in the pool (see Pool.open_staged).

    The temporary name is what a crash leaves behind: listings skip it and cleanup_temporaries
    removes it. commit() moves it to the final name: a rename on local disks; on object stores a
    copy (a PUT is all-or-nothing, but writing to the final name at once would replace an earlier
    file before the writer knows whether to keep it)."""

    def __init__(self, pool: Pool, rel: str) -> None:
        self.pool = pool
        self.rel = rel
        self.final = pool.path(rel)
        self.tmp = f"{self.final}{TMP_MARK}{uuid.uuid4().hex[:12]}"
        pool.fs.makedirs(posixpath.dirname(self.final), exist_ok=True)
        self.fh: Any = pool.fs.open(self.tmp, "wb")

    def commit(self) -> None:
        self.fh.close()
        self.pool.fs.mv(self.tmp, self.final)

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.fh.close()
        with contextlib.suppress(Exception):
            self.pool.fs.rm(self.tmp)


def fs_protocols(fs: fsspec.AbstractFileSystem) -> set[str]:
    """The protocols a filesystem answers to (fsspec gives a str or a tuple)."""
    proto = fs.protocol
    return {proto} if isinstance(proto, str) else set(proto)
