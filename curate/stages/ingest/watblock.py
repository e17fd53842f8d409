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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from curate.stages.ingest.candidates import LinkBatch
from curate.stages.ingest.extract import IMG_PATH

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


def _page_langs(response: pa.StructArray, html: pa.StructArray) -> pa.Array:
    """Declared page language: <meta http-equiv|name=content-language|language>, else the HTTP header."""
    n = len(html)
    metas = html.field("Head").field("Metas")
    flat = pc.list_flatten(metas)
    meta_lang = pa.nulls(n, pa.string())
    if len(flat):
        parent = pc.list_parent_indices(metas)
        key = pc.utf8_lower(pc.coalesce(flat.field("http-equiv"), flat.field("name")))
        lang = _lang_tokens(flat.field("content"))
        hit = pc.fill_null(pc.and_(pc.is_in(key, pa.array(["content-language", "language"])), pc.is_valid(lang)),
                           False)
        if pc.any(hit).as_py():
            found = pa.table({"page": parent.filter(hit), "row": pa.array(np.arange(len(flat)))
                              .filter(hit)}).group_by("page", use_threads=False).aggregate([("row", "min")])
            values = np.full(n, -1, dtype=np.int64)
            values[found["page"].to_numpy()] = found["row_min"].to_numpy()
            mask = values < 0
            meta_lang = lang.take(pa.array(np.where(mask, 0, values), mask=mask))
    header_lang = _lang_tokens(response.field("Headers").field("Content-Language"))
    return pc.coalesce(meta_lang, header_lang)


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


def _rows_mentioning_language(bodies: list[bytes]) -> list[int]:
    """Indices of the bodies holding _LANG_MARK in any letter case: one lower-casing and one scan
    of the joined block rather than a lower-cased copy per body."""
    text = b"\n".join(bodies).lower()
    ends = np.cumsum([len(body) + 1 for body in bodies])
    rows: list[int] = []
    at = text.find(_LANG_MARK)
    while at != -1:
        row = int(np.searchsorted(ends, at, side="right"))
        rows.append(row)
        at = text.find(_LANG_MARK, int(ends[row]))  # the next body
    return rows


def _block_langs(bodies: list[bytes]) -> pa.Array:
    """Declared page language of each record; only records that mention a language are parsed for it."""
    rows = _rows_mentioning_language(bodies)
    if not rows:
        return pa.nulls(len(bodies), pa.string())
    response = _parse([bodies[i] for i in rows], _PARSE_LANG).field("Payload-Metadata").field("HTTP-Response-Metadata")
    langs = _page_langs(response, response.field("HTML-Metadata"))
    if len(rows) == len(bodies):
        return langs
    index = np.full(len(bodies), -1, dtype=np.int64)
    index[rows] = np.arange(len(rows))
    missing = index < 0
    return langs.take(pa.array(np.where(missing, 0, index), mask=missing))


def parse_wat_block(bodies: list[bytes], counts: Counter[str]) -> LinkBatch:
    """Image links of WAT response records (each a JSON document on one line)."""
    envelope = _parse(bodies, _PARSE_LINKS)
    page_url = envelope.field("WARC-Header-Metadata").field("WARC-Target-URI")
    response = envelope.field("Payload-Metadata").field("HTTP-Response-Metadata")
    html = response.field("HTML-Metadata")
    links = html.field("Links")
    flat = pc.list_flatten(links)
    parent = pc.list_parent_indices(links)
    for column in (page_url, flat.field("url"), flat.field("alt"), flat.field("title")):
        try:
            column.validate(full=True)  # the JSON reader does not check UTF-8 itself
        except pa.ArrowInvalid as exc:
            raise BlockRejected(str(exc)) from exc
    is_img = pc.fill_null(pc.equal(flat.field("path"), IMG_PATH), False)
    img_parent = parent.filter(is_img)
    per_page = np.bincount(img_parent.to_numpy(), minlength=len(bodies))
    has_url = pc.is_valid(page_url).to_numpy(zero_copy_only=False)
    found = {
        "non_image_links_ignored": len(flat) - int(per_page.sum()),
        "record_no_images": int(np.count_nonzero(per_page == 0)),
        "record_no_target_uri": int(np.count_nonzero((per_page > 0) & ~has_url)),
        "record_with_images": int(np.count_nonzero((per_page > 0) & has_url)),
    }
    counts.update({k: v for k, v in found.items() if v})
    # Links of pages without a URL cannot be resolved: leave them out (their records are counted).
    keep = pc.and_(is_img, pc.is_valid(page_url.take(parent)))
    imgs = flat.filter(keep)
    return LinkBatch(
        page_url=page_url,
        page_base=pa.nulls(len(bodies), pa.string()),
        page_lang=_block_langs(bodies),
        link_page=pc.cast(parent.filter(keep), pa.int32()),
        src=imgs.field("url"),
        alt=imgs.field("alt"),
        title=imgs.field("title"),
    )
