"""One ingest shard: one input file → candidates/part-NNNNN.parquet, with counts by reason."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from fastwarc.warc import WarcRecord, WarcRecordType

from curate import layout
from curate.pool import Pool
from curate.stages.ingest.candidates import (
    CANDIDATE_SCHEMA,
    CandidateRules,
    FirstSeen,
    LinkBuffer,
    build_candidates,
)
from curate.stages.ingest.extract import IMG_MARK, RESPONSE_MARK, RecordSkipped, html_links
from curate.stages.ingest.fetch import open_input
from curate.stages.ingest.inputs import InputFile
from curate.stages.ingest.records import DamagedStream, is_gzip, iter_gzip_stream_records, iter_records
from curate.stages.ingest.watblock import parse_wat_block

# WAT records are parsed this many at a time; HTML links are turned into columns in batches of
# LINK_BATCH, so a big file never holds millions of Python strings at once.
WAT_BLOCK = 2_000
LINK_BATCH = 200_000
_HTML_TYPES = ("text/html", "application/xhtml+xml")


def add_counted_page(buf: LinkBuffer, counts: Counter, page_url: Any, base: Any, lang: Any,
                     links: list[Any]) -> bool:
    """Add a page's image links to `buf`, counting the record by what it held; True if added."""
    if not links:
        counts["record_no_images"] += 1
        return False
    if not page_url:
        counts["record_no_target_uri"] += 1
        return False
    counts["record_with_images"] += 1
    buf.add_page(page_url, base, lang, links)
    return True




def extract_file(fh: Any, rules: CandidateRules, source: str, crawl: str,
                 counts: Counter[str]) -> tuple[pa.Table, dict[str, int]]:
    """Candidates of every WAT/WARC/WET record in an open (seekable) file; counts every record and link.

    A gzip file is read with the fast reader first; if it turns out damaged, what was built from it
    is dropped and the file is read again with the careful reader, which skips past the damage.
    Either way the result is the careful reader's."""
    if is_gzip(fh):
        trial: Counter[str] = Counter()
        try:
            records = iter_gzip_stream_records(fh, trial, rules.max_record_bytes)
            result = _extract_records(records, rules, source, crawl, trial)
        except DamagedStream:
            fh.seek(0)
        else:
            counts.update(trial)
            return result
    return _extract_records(iter_records(fh, counts, rules.max_record_bytes), rules, source, crawl, counts)


def _extract_records(records: Iterator[tuple[WarcRecord, bytes]], rules: CandidateRules, source: str, crawl: str,
                     counts: Counter[str]) -> tuple[pa.Table, dict[str, int]]:
    tables: list[pa.Table] = []
    wat_bodies: list[bytes] = []
    html = LinkBuffer()
    seen = FirstSeen()
    n_records = n_image_links = 0

    def flush_wat() -> None:
        nonlocal wat_bodies, n_image_links
        if wat_bodies:
            batch = parse_wat_block(wat_bodies, counts)
            n_image_links += len(batch)
            tables.append(build_candidates(batch, rules, source, crawl, counts, seen))
            wat_bodies = []

    def flush_html() -> None:
        nonlocal html, n_image_links
        if len(html):
            n_image_links += len(html)
            tables.append(build_candidates(html.to_batch(counts), rules, source, crawl, counts, seen))
            html = LinkBuffer()

    for record, body in records:
        n_records += 1
        # record_type is an enum read without a header lookup (HeaderMap.get costs ~3 µs).
        rtype = record.record_type
        if rtype == WarcRecordType.metadata:
            if body[:1] != b"{":
                counts["record_skipped_metadata"] += 1  # a WARC file's crawler metadata, not WAT JSON
            elif IMG_MARK in body:
                # A byte search rejects requests, crawl metadata and image-less pages unparsed.
                wat_bodies.append(body)
                if len(wat_bodies) >= WAT_BLOCK:
                    flush_wat()
            else:
                counts["record_no_images" if RESPONSE_MARK in body else "record_not_html_response"] += 1
            continue
        if rtype == WarcRecordType.response:
            ctype = (record.http_content_type or "").lower() if record.is_http else ""
            if not ctype.startswith(_HTML_TYPES):
                counts["record_not_html_response"] += 1
                continue
            content_lang = record.http_headers.get("Content-Language") if record.http_headers else None
            try:
                base, lang, links = html_links(body, record.http_charset, content_lang)
            except RecordSkipped as skip:
                counts[f"record_{skip.reason}"] += 1
                continue
            page_url = record.headers.get("WARC-Target-URI")
            if add_counted_page(html, counts, page_url, base, lang, links) and len(html) >= LINK_BATCH:
                flush_html()
            continue
        if rtype == WarcRecordType.conversion:
            counts["record_wet_text_no_images"] += 1
        else:
            counts[f"record_skipped_{record.headers.get('WARC-Type') or 'untyped'}"] += 1
    flush_wat()
    flush_html()
    table = pa.concat_tables(tables) if tables else CANDIDATE_SCHEMA.empty_table()
    counts["link_kept"] += table.num_rows
    return table, {"records": n_records, "image_links": n_image_links}


def ingest_shard(pool: Pool, shard_id: str, payload: InputFile, rules: CandidateRules) -> dict[str, Any]:
    """Ray task body: read one input file, write its candidates parquet, return its stats.

    An input that cannot be opened raises, so the runner reports the shard as failed."""
    start = time.time()
    counts: Counter[str] = Counter()
    with open_input(payload.url) as fh:
        table, sizes = extract_file(fh, rules, payload.url, payload.crawl, counts)
    pool.write_parquet(layout.candidates_file(shard_id), table, compression="zstd")
    return {
        "samples": sizes["image_links"],
        "candidates": table.num_rows,
        "records": sizes["records"],
        "counts": dict(counts),
        "source": payload.url,
        "seconds": round(time.time() - start, 3),
    }
