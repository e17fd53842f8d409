"""Open an input for reading: local paths and object stores through fsspec, http(s) through requests.

The record reader needs a seekable file (to skip past a damaged gzip member), so an http(s)
input is streamed into a local temporary file first; a Common Crawl WAT file is a few hundred MB.
A local input must be a regular file: opening a FIFO blocks until a writer comes, and a device
(/dev/zero) never ends, so they are refused from a stat before any open.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from typing import IO

import fsspec
import requests

HTTP_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class NotARegularFile(OSError):
    """A local input that is a FIFO, directory, device or socket."""


def is_http(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def local_path(url: str) -> str | None:
    """The filesystem path of a local input (a plain path or file:// URL); None for other URLs."""
    if url.startswith("file://"):
        return url[len("file://"):]
    return None if "://" in url else url


def check_regular_file(url: str) -> None:
    """Raise NotARegularFile when `url` is a local path to something other than a regular file.

    A missing path passes: it fails when opened, as any unreadable input does."""
    path = local_path(url)
    if path is None:
        return
    try:
        mode = os.stat(path).st_mode  # stat never opens, so a FIFO cannot block it
    except OSError:
        return
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        raise NotARegularFile(f"{url} is {kind}, not a regular file; ingest reads files, URLs and crawl ids")


@contextlib.contextmanager
def open_input(url: str) -> Iterator[IO[bytes]]:
    """A seekable binary file for `url`; raises (FileNotFoundError, HTTPError, …) if it cannot be opened."""
    if not is_http(url):
        check_regular_file(url)
        with fsspec.open(url, "rb") as fh:
            yield fh
        return
    with requests.get(url, stream=True, timeout=HTTP_TIMEOUT_S) as response:
        response.raise_for_status()
        # Raw bytes as stored: the record reader does its own gzip member handling.
        response.raw.decode_content = False
        with tempfile.TemporaryFile(prefix="curate-ingest-") as spool:
            shutil.copyfileobj(response.raw, spool, _CHUNK)
            spool.seek(0)
            yield spool


def read_bytes(url: str) -> bytes:
    with open_input(url) as fh:
        return fh.read()
