"""Read WARC/WAT/WET records with FastWARC, surviving corrupt stretches of a file.

Two readers that yield the same records from an intact file:
- `iter_gzip_stream_records`, the fast one: zlib-ng's C reader inflates all gzip members as one
  stream and FastWARC parses the inflated bytes. Inflating ~150k small members costs FastWARC's own
  gzip reader ~25 % more CPU than zlib-ng's. It cannot resume past damage, so at the first sign of
  any (a gzip error, a record shorter than its Content-Length, FastWARC stopping before the end of
  the data) it raises `DamagedStream` and the caller reads the file again with the careful reader.
- `iter_records`, the careful one: FastWARC stops at the first damaged gzip member or unparsable
  header. Common Crawl files are per-record gzip members, so after a failure we look for the next
  gzip member that starts a WARC record and carry on from there: one damaged record costs that
  record, not the rest of the file.

Both read a record's body into memory whole, so a record declaring more than `max_record_bytes`
(a Content-Length; gzip turns a 1.5 GB record into 1.5 MB on disk) is counted as
`record_too_large` and skipped unread: FastWARC streams past its body, and the rest of the file is kept.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterator
from typing import IO

from fastwarc.warc import ArchiveIterator, WarcRecord
from zlib_ng import gzip_ng

GZIP_MAGIC = b"\x1f\x8b\x08"
_SCAN_CHUNK = 1 << 20


def _starts_warc_member(fh: IO[bytes], offset: int) -> bool:
    """True when a gzip member at `offset` inflates to the start of a WARC record."""
    fh.seek(offset)
    head = fh.read(4096)
    try:
        inflated = zlib.decompressobj(31).decompress(head, 16)
    except zlib.error:
        return False
    return inflated.startswith(b"WARC/")


def find_next_member(fh: IO[bytes], start: int) -> int | None:
    """Offset of the first gzip member at or after `start` that holds a WARC record."""
    pos = start
    while True:
        fh.seek(pos)
        chunk = fh.read(_SCAN_CHUNK + len(GZIP_MAGIC))
        if len(chunk) < len(GZIP_MAGIC):
            return None
        i = chunk.find(GZIP_MAGIC)
        while i != -1 and i < _SCAN_CHUNK:
            if _starts_warc_member(fh, pos + i):
                return pos + i
            i = chunk.find(GZIP_MAGIC, i + 1)
        if len(chunk) <= _SCAN_CHUNK:
            return None
        pos += _SCAN_CHUNK


class DamagedStream(Exception):
    """The fast reader met damage; read the file again with iter_records."""


def is_gzip(fh: IO[bytes]) -> bool:
    fh.seek(0)
    magic = fh.read(len(GZIP_MAGIC))
    fh.seek(0)
    return magic == GZIP_MAGIC


def iter_gzip_stream_records(fh: IO[bytes], counts: Counter[str] | None = None,
                             max_record_bytes: int | None = None) -> Iterator[tuple[WarcRecord, bytes]]:
    """Yield (record, body) of an intact gzip-compressed WARC/WAT file; raise DamagedStream at any damage.

    Records are yielded as they are read, so a caller must be ready to discard what it built
    from them when DamagedStream comes. Records over `max_record_bytes` are counted in
    counts["record_too_large"] and skipped."""
    fh.seek(0)
    stream = gzip_ng.GzipFile(fileobj=fh, mode="rb")
    records = iter(ArchiveIterator(stream, parse_http=True))
    while True:
        try:
            record = next(records)
            if max_record_bytes is not None and record.content_length > max_record_bytes:
                if counts is not None:
                    counts["record_too_large"] += 1
                continue
            body = record.reader.read()
        except StopIteration:
            break
        except Exception as exc:  # gzip, zlib or FastWARC parse errors: the careful reader sorts them out
            raise DamagedStream(f"{type(exc).__name__}: {exc}") from exc
        if not record.is_http and len(body) < record.content_length:
            raise DamagedStream("a record is shorter than its Content-Length")
        yield record, body
    try:
        rest = stream.read(1)
    except Exception as exc:
        raise DamagedStream(f"{type(exc).__name__}: {exc}") from exc
    if rest:
        raise DamagedStream("FastWARC stopped before the end of the data")


def iter_records(fh: IO[bytes], counts: Counter[str],
                 max_record_bytes: int | None = None) -> Iterator[tuple[WarcRecord, bytes]]:
    """Yield (record, body) for every readable record; damaged stretches are counted in
    counts["record_corrupt"] and skipped, records shorter than their Content-Length in
    counts["record_truncated"], records over `max_record_bytes` in counts["record_too_large"]."""
    base = 0
    while True:
        fh.seek(base)
        records = iter(ArchiveIterator(fh, parse_http=True))
        last: WarcRecord | None = None  # its stream_pos is read only when a restart needs it
        while True:
            try:
                last = next(records)
                if max_record_bytes is not None and last.content_length > max_record_bytes:
                    counts["record_too_large"] += 1
                    continue
                body = last.reader.read()
            except StopIteration:
                return
            except Exception:
                # A restart that fails before reading anything is still the same damaged stretch.
                if last is not None or base == 0:
                    counts["record_corrupt"] += 1
                break
            # For HTTP records the parsed headers are not part of `body`, so the length check
            # only applies to plain records (WAT JSON, WET text).
            if not last.is_http and len(body) < last.content_length:
                counts["record_truncated"] += 1
                continue
            yield last, body
        # Resume after the start of the last record we read (or the failed start), never before.
        resume_from = (base + last.stream_pos if last is not None else base) + 1
        nxt = find_next_member(fh, resume_from)
        if nxt is None:
            return
        base = nxt
