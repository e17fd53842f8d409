"""Parse many WAT JSON records at once with Arrow's JSON reader (C++), straight into columns.

Per-record Python (json.loads, walking each link dict) is what makes WAT extraction slow; here
the records of a block are joined as newline-delimited JSON and read with an explicit schema
that names only the fields ingest needs. If anything in a block is off (invalid JSON, invalid
UTF-8, a field of the wrong type), the caller re-reads that block record by record with the
stdlib path, which counts each bad record by reason.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from curate.stages.ingest.candidates import LinkBatch
from curate.stages.ingest.extract import IMG_PATH

try:  # built by `pip install` where a C compiler is present (setup.py); optional
    from curate.stages.ingest import _watlinks
except ImportError:  # pragma: no cover - depends on the install
    _watlinks = None

# Tests switch this off to compare the scanner with Arrow's reader on the same input.
USE_SCANNER = True

_LINK = pa.struct([("path", pa.string()), ("url", pa.string()), ("alt", pa.string()), ("title", pa.string())])
_META = pa.struct([("name", pa.string()), ("http-equiv", pa.string()), ("content", pa.string())])


def _envelope_schema(response_fields: list[tuple[str, pa.DataType]], with_uri: bool) -> pa.Schema:
    payload = pa.struct([("HTTP-Response-Metadata", pa.struct(response_fields))])
    envelope = [("Payload-Metadata", payload)]
    if with_uri:
        envelope.insert(0, ("WARC-Header-Metadata", pa.struct([("WARC-Target-URI", pa.string())])))
    return pa.schema([("Envelope", pa.struct(envelope))])


# Links are read for every record; the language fields only for records that mention a language
# (building the Metas and Headers columns costs about a third of the parse, and most pages have none).
_LINKS_SCHEMA = _envelope_schema([("HTML-Metadata", pa.struct([("Links", pa.list_(_LINK))]))], with_uri=True)
_LANG_SCHEMA = _envelope_schema(
    [("Headers", pa.struct([("Content-Language", pa.string())])),
     ("HTML-Metadata", pa.struct([("Head", pa.struct([("Metas", pa.list_(_META))]))]))],
    with_uri=False,
)
_LANG_MARK = b'anguage"'  # in "Content-Language" (header or http-equiv) and "language" (meta name), lower-cased
# (the C scanner picks the same records: see mentions_language in _watlinks.c)


def _options(schema: pa.Schema) -> pj.ParseOptions:
    return pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore", newlines_in_values=False)


_PARSE_LINKS = _options(_LINKS_SCHEMA)
_PARSE_LANG = _options(_LANG_SCHEMA)


class BlockRejected(Exception):
    """The block needs the record-by-record path."""


def _lang_tokens(values: pa.Array) -> pa.Array:
    """'en-US, de' → 'en-us'; empty → null."""
    token = pc.utf8_lower(pc.utf8_trim_whitespace(pc.extract_regex(values, r"^(?P<t>[^,]*)").field("t")))
    return pc.if_else(pc.equal(token, ""), pa.nulls(len(token), pa.string()), token)


def _take_or_null(values: pa.Array, index: np.ndarray) -> pa.Array:
    """values[index], null where index is negative."""
    missing = index < 0
    return values.take(pa.array(np.where(missing, 0, index), mask=missing))


def _page_langs(n: int, header: pa.Array, meta_page: np.ndarray, name: pa.Array, equiv: pa.Array,
                content: pa.Array) -> pa.Array:
    """Declared language of n pages: the first <meta http-equiv|name=content-language|language>
    of each page, else its HTTP Content-Language header. The metas of all pages come flat, with
    the index of their page in `meta_page`."""
    meta_lang = pa.nulls(n, pa.string())
    if len(meta_page):
        key = pc.utf8_lower(pc.coalesce(equiv, name))
        lang = _lang_tokens(content)
        hit = pc.fill_null(pc.and_(pc.is_in(key, pa.array(["content-language", "language"])), pc.is_valid(lang)),
                           False).to_numpy(zero_copy_only=False)
        hit_rows = np.flatnonzero(hit)
        if len(hit_rows):
            pages, first = np.unique(meta_page[hit_rows], return_index=True)
            row = np.full(n, -1, dtype=np.int64)
            row[pages] = hit_rows[first]
            meta_lang = _take_or_null(lang, row)
    return pc.coalesce(meta_lang, _lang_tokens(header))


def _read_block(data: bytes, n_records: int, parse: pj.ParseOptions) -> pa.Table:
    try:
        table = pj.read_json(io.BytesIO(data), read_options=pj.ReadOptions(use_threads=False, block_size=len(data) + 1),
                             parse_options=parse)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise BlockRejected(str(exc)) from exc
    if table.num_rows != n_records:
        raise BlockRejected("record count mismatch")
    return table


def _parse(bodies: list[bytes], parse: pj.ParseOptions) -> pa.StructArray:
    """The Envelope column of `bodies` read with `parse`."""
    try:
        table = _read_block(b"\n".join(bodies), len(bodies), parse)
    except BlockRejected:
        # Newlines between JSON tokens are legal but split a record: retry with them as spaces
        # (rare, so the common case is not scanned for them).
        table = _read_block(b"\n".join(body.replace(b"\n", b" ") for body in bodies), len(bodies), parse)
    return table.column("Envelope").combine_chunks()


def _block_langs(bodies: list[bytes]) -> pa.Array:
    """Declared page language of each record; only records that mention a language are parsed for it."""
    rows = [i for i, body in enumerate(bodies) if _LANG_MARK in body.lower()]
    if not rows:
        return pa.nulls(len(bodies), pa.string())
    response = _parse([bodies[i] for i in rows], _PARSE_LANG).field("Payload-Metadata").field("HTTP-Response-Metadata")
    metas = response.field("HTML-Metadata").field("Head").field("Metas")
    flat = pc.list_flatten(metas)
    langs = _page_langs(len(rows), response.field("Headers").field("Content-Language"),
                        pc.list_parent_indices(metas).to_numpy(), flat.field("name"), flat.field("http-equiv"),
                        flat.field("content"))
    if len(rows) == len(bodies):
        return langs
    index = np.full(len(bodies), -1, dtype=np.int64)
    index[rows] = np.arange(len(rows))
    return _take_or_null(langs, index)


@dataclass
class _ImageLinks:
    """The image links of a block, before the page-level counts."""

    page_url: pa.Array  # per record
    parent: np.ndarray  # record index of each image link
    url: pa.Array
    alt: pa.Array
    title: pa.Array
    n_links: int  # every element of every Links array, images or not


def _image_links_arrow(bodies: list[bytes]) -> _ImageLinks:
    envelope = _parse(bodies, _PARSE_LINKS)
    page_url = envelope.field("WARC-Header-Metadata").field("WARC-Target-URI")
    links = envelope.field("Payload-Metadata").field("HTTP-Response-Metadata").field("HTML-Metadata").field("Links")
    flat = pc.list_flatten(links)
    parent = pc.list_parent_indices(links)
    for column in (page_url, flat.field("url"), flat.field("alt"), flat.field("title")):
        try:
            column.validate(full=True)  # the JSON reader does not check UTF-8 itself
        except pa.ArrowInvalid as exc:
            raise BlockRejected(str(exc)) from exc
    is_img = pc.fill_null(pc.equal(flat.field("path"), IMG_PATH), False)
    imgs = flat.filter(is_img)
    return _ImageLinks(page_url=page_url, parent=parent.filter(is_img).to_numpy(), url=imgs.field("url"),
                       alt=imgs.field("alt"), title=imgs.field("title"), n_links=len(flat))


def _string_column(values: bytes, offsets: bytes, valid: bytes) -> pa.Array:
    present = np.frombuffer(valid, dtype=np.uint8)
    nulls = len(present) - int(np.count_nonzero(present))
    bitmap = pa.py_buffer(np.packbits(present, bitorder="little")) if nulls else None
    return pa.StringArray.from_buffers(len(present), pa.py_buffer(offsets), pa.py_buffer(values), bitmap, nulls)


def _scanned(bodies: list[bytes]) -> tuple[_ImageLinks, pa.Array] | None:
    """The C scanner's reading of the block (image links, page languages); None where it leaves
    the block to Arrow."""
    if _watlinks is None:
        return None
    scanned = _watlinks.scan(bodies)
    if scanned is None:
        return None
    page_url, link_page, url, alt, title, n_links, header, meta_page, name, equiv, content = scanned
    links = _ImageLinks(page_url=_string_column(*page_url), parent=np.frombuffer(link_page, dtype=np.int32),
                        url=_string_column(*url), alt=_string_column(*alt), title=_string_column(*title),
                        n_links=n_links)
    langs = _page_langs(len(bodies), _string_column(*header), np.frombuffer(meta_page, dtype=np.int32),
                        _string_column(*name), _string_column(*equiv), _string_column(*content))
    return links, langs


def parse_wat_block(bodies: list[bytes], counts: Counter[str]) -> LinkBatch:
    """Image links of WAT response records (each a JSON document on one line)."""
    scanned = _scanned(bodies) if USE_SCANNER else None
    if scanned is not None:
        links, page_lang = scanned
    else:
        links, page_lang = _image_links_arrow(bodies), _block_langs(bodies)
    per_page = np.bincount(links.parent, minlength=len(bodies))
    has_url = pc.is_valid(links.page_url).to_numpy(zero_copy_only=False)
    found = {
        "non_image_links_ignored": links.n_links - int(per_page.sum()),
        "record_no_images": int(np.count_nonzero(per_page == 0)),
        "record_no_target_uri": int(np.count_nonzero((per_page > 0) & ~has_url)),
        "record_with_images": int(np.count_nonzero((per_page > 0) & has_url)),
    }
    counts.update({k: v for k, v in found.items() if v})
    # Links of pages without a URL cannot be resolved: leave them out (their records are counted).
    keep = pa.array(has_url[links.parent])
    return LinkBatch(
        page_url=links.page_url,
        page_base=pa.nulls(len(bodies), pa.string()),
        page_lang=page_lang,
        link_page=pa.array(links.parent, pa.int32()).filter(keep),
        src=links.url.filter(keep),
        alt=links.alt.filter(keep),
        title=links.title.filter(keep),
    )
