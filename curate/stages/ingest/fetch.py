"""Open an input for reading: local paths and object stores through fsspec, http(s) through requests.

The record reader needs a seekable file (to skip past a damaged gzip member), so an http(s)
input is streamed into a local temporary file first; a Common Crawl WAT file is a few hundred MB.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from typing import IO

import fsspec
import requests

HTTP_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


def is_http(url: str) -> bool:
    return url.startswith(("http://", "https://"))


@contextlib.contextmanager
def open_input(url: str) -> Iterator[IO[bytes]]:
    """A seekable binary file for `url`; raises (FileNotFoundError, HTTPError, …) if it cannot be opened."""
    if not is_http(url):
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
