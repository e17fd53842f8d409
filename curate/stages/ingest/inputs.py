"""Turn `curate ingest` inputs (files, globs, URLs, crawl ids) into a sorted list of files.

Shard ids come from positions in that sorted list, so the same inputs always give the same
candidates/part-NNNNN.parquet names, and a rerun skips exactly the files already done.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass

import fsspec

from curate.errors import ConfigError
from curate.stages.ingest.fetch import NotARegularFile, check_regular_file, read_bytes

CRAWL_ID = re.compile(r"^CC-MAIN-\d{4}-\d{2}$")
_CRAWL_IN_PATH = re.compile(r"CC-MAIN-\d{4}-\d{2}")
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class InputFile:
    """One file to ingest: its URL/path and the crawl it belongs to ("" when unknown)."""

    url: str
    crawl: str


def crawl_of(url: str) -> str:
    """The crawl id named in a Common Crawl path, or ""."""
    found = _CRAWL_IN_PATH.search(url)
    return found.group(0) if found else ""


def crawl_wat_files(crawl_id: str, n_files: int, base_url: str) -> list[InputFile]:
    """The first `n_files` WAT files listed in `<base>/crawl-data/<id>/wat.paths.gz`."""
    base = base_url.rstrip("/")
    listing = f"{base}/crawl-data/{crawl_id}/wat.paths.gz"
    try:
        text = gzip.decompress(read_bytes(listing)).decode("utf-8")
    except Exception as exc:
        raise ConfigError(f"cannot read the file list of crawl {crawl_id} at {listing}: {exc}") from exc
    paths = [line.strip() for line in text.splitlines() if line.strip()][:n_files]
    if not paths:
        raise ConfigError(f"crawl {crawl_id}: {listing} lists no files")
    return [InputFile(f"{base}/{p.lstrip('/')}", crawl_id) for p in paths]


def _expand_glob(pattern: str) -> list[str]:
    fs, _ = fsspec.core.url_to_fs(pattern)
    found = fs.glob(pattern)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return sorted(found)
    return sorted(fs.unstrip_protocol(p) for p in found)


def _regular(url: str) -> str:
    try:
        check_regular_file(url)
    except NotARegularFile as exc:
        raise ConfigError(f"ingest: {exc}") from None
    return url


def resolve_inputs(inputs: list[str], crawl_files: int, crawl_base_url: str) -> list[InputFile]:
    """Sorted, de-duplicated files to ingest. A glob that matches nothing is an error (a
    typo must not silently ingest nothing); a plain path is kept even if it cannot be opened,
    so that it shows up as a failed shard. A local FIFO, directory, device or socket is an error
    here, before any task could block opening it."""
    if not inputs:
        raise ConfigError("ingest: no inputs given (files, globs, http(s)/s3 URLs or a crawl id like CC-MAIN-2024-22)")
    files: dict[str, InputFile] = {}
    for item in inputs:
        if CRAWL_ID.match(item):
            for f in crawl_wat_files(item, crawl_files, crawl_base_url):
                files.setdefault(f.url, f)
        elif _GLOB_CHARS.search(item) and not item.startswith(("http://", "https://")):
            matched = _expand_glob(item)
            if not matched:
                raise ConfigError(f"ingest: the glob {item!r} matches no files")
            for url in matched:
                files.setdefault(url, InputFile(_regular(url), crawl_of(url)))
        else:
            files.setdefault(item, InputFile(_regular(item), crawl_of(item)))
    return [files[k] for k in sorted(files)]


def shard_id(index: int) -> str:
    return f"{index:05d}"
