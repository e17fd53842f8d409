"""Read WAT response records with msgspec, decoding only the fields ingest uses.

A WAT response record is one JSON document; ingest needs its page URL, its `IMG@/src` links
(url, alt, title) and the fields that declare the page's language. The typed `msgspec.Struct`
classes below name only those: msgspec's decoder skips every other key (the `<a href>` anchors'
text, scripts, headers, ...) in C without building Python objects for them. Link and language
values are typed `Any`, so a number where a string belongs costs that value (counted per link
later, column-wise), not the page; a record that is not JSON, not UTF-8 where it is read, nested
past the recursion limit, or has an object or array where another type is, is skipped and counted
by reason. The per-page work left in Python is picking the image links out of each page's links.
"""

from __future__ import annotations

from collections import Counter
from operator import attrgetter, itemgetter
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.stages.ingest.candidates import LinkBatch, caption_strings, text_strings
from curate.stages.ingest.extract import IMG_PATH

# <meta http-equiv|name=...> keys that declare the page language (compared lower-cased).
_LANG_KEYS = pa.array(["content-language", "language"])


class _Link(msgspec.Struct, gc=False):
    path: Any = None
    url: Any = None
    alt: Any = None
    title: Any = None


class _Meta(msgspec.Struct, gc=False, rename={"equiv": "http-equiv"}):
    name: Any = None
    equiv: Any = None
    content: Any = None


class _Head(msgspec.Struct, gc=False, rename={"metas": "Metas"}):
    metas: list[_Meta] | None = None


class _Html(msgspec.Struct, gc=False, rename={"head": "Head", "links": "Links"}):
    head: _Head | None = None
    links: list[_Link] | None = None


class _Headers(msgspec.Struct, gc=False, rename={"content_language": "Content-Language"}):
    content_language: Any = None


class _Response(msgspec.Struct, gc=False, rename={"headers": "Headers", "html": "HTML-Metadata"}):
    headers: _Headers | None = None
    html: _Html | None = None


class _Payload(msgspec.Struct, gc=False, rename={"response": "HTTP-Response-Metadata"}):
    response: _Response | None = None


class _WarcHeader(msgspec.Struct, gc=False, rename={"target_uri": "WARC-Target-URI"}):
    target_uri: Any = None


class _Envelope(msgspec.Struct, gc=False, rename={"header": "WARC-Header-Metadata", "payload": "Payload-Metadata"}):
    header: _WarcHeader | None = None
    payload: _Payload | None = None


class _Record(msgspec.Struct, gc=False, rename={"envelope": "Envelope"}):
    envelope: _Envelope | None = None


_decode = msgspec.json.Decoder(_Record).decode
_path, _url, _alt, _title = attrgetter("path"), attrgetter("url"), attrgetter("alt"), attrgetter("title")
_name, _equiv, _content = attrgetter("name"), attrgetter("equiv"), attrgetter("content")


def decode_record(body: bytes) -> _Record | str:
    """The fields ingest reads from one WAT record, or the reason it is skipped (counted as
    record_<reason>)."""
    try:
        return _decode(body)
    except msgspec.ValidationError:  # (a DecodeError subclass) valid JSON of the wrong shape
        return "invalid_wat"
    except msgspec.DecodeError:  # not JSON: syntax, truncated, trailing data, lone surrogate escape
        return "invalid_json"
    except UnicodeDecodeError:  # a string ingest reads is not UTF-8 (skipped fields are not decoded)
        return "invalid_utf8"
    except RecursionError:  # nested deeper than Python's recursion limit, even in a skipped field
        return "too_deep"


def _strings_of(getter: attrgetter, items: list[Any]) -> pa.Array:
    """One attribute of every item as a string column; values that are not text are null."""
    return text_strings(list(map(getter, items)))[0]


def _take(items: list[Any], index: np.ndarray) -> list[Any]:
    """items[i] for i in index, in C."""
    if len(index) == 0:
        return []
    picked = itemgetter(*index.tolist())(items)
    return list(picked) if len(index) > 1 else [picked]


def _lang_tokens(values: pa.Array) -> pa.Array:
    """'en-US, de' → 'en-us'; empty → null."""
    token = pc.utf8_lower(pc.utf8_trim_whitespace(pc.extract_regex(values, r"^(?P<t>[^,]*)").field("t")))
    return pc.if_else(pc.equal(token, ""), pa.nulls(len(token), pa.string()), token)


def _page_langs(n: int, header: pa.Array, meta_page: np.ndarray, metas: list[_Meta]) -> pa.Array:
    """Declared language of n pages: the first <meta http-equiv|name=content-language|language>
    of each page with a non-empty content, else its HTTP Content-Language header. The metas of
    all pages come flat, with the index of their page in `meta_page`."""
    header_lang = _lang_tokens(header)
    if not metas:
        return header_lang
    key = pc.utf8_lower(pc.coalesce(_strings_of(_equiv, metas), _strings_of(_name, metas)))
    lang = _lang_tokens(_strings_of(_content, metas))
    hit = pc.fill_null(pc.and_(pc.is_in(key, _LANG_KEYS), pc.is_valid(lang)), False)
    hit_rows = np.flatnonzero(hit.to_numpy(zero_copy_only=False))
    if not len(hit_rows):
        return header_lang
    pages, first = np.unique(meta_page[hit_rows], return_index=True)
    row = np.full(n, -1, dtype=np.int64)
    row[pages] = hit_rows[first]
    missing = row < 0
    return pc.coalesce(lang.take(pa.array(np.where(missing, 0, row), mask=missing)), header_lang)


def parse_wat_block(bodies: list[bytes], counts: Counter[str]) -> LinkBatch:
    """Image links of WAT response records (each a JSON document), with their pages' URL and
    language; every record is counted by what it held or why it was skipped.

    Python touches each record once, to gather its links and metas into flat lists; picking the
    image links and the language out of them is done column-wise."""
    uris: list[Any] = []  # per record with links
    header_langs: list[Any] = []
    links: list[_Link] = []  # the links of all those records, flat
    n_links: list[int] = []
    metas: list[_Meta] = []
    n_metas: list[int] = []
    no_links = 0
    for body in bodies:
        record = decode_record(body)
        if isinstance(record, str):
            counts[f"record_{record}"] += 1
            continue
        envelope = record.envelope
        payload = envelope.payload if envelope is not None else None
        response = payload.response if payload is not None else None
        html = response.html if response is not None else None
        page_links = html.links if html is not None else None
        if not page_links:
            no_links += 1
            continue
        links += page_links
        n_links.append(len(page_links))
        header = envelope.header
        uris.append(header.target_uri if header is not None else None)
        headers = response.headers
        header_langs.append(headers.content_language if headers is not None else None)
        head = html.head
        page_metas = head.metas if head is not None else None
        if page_metas:
            metas += page_metas
            n_metas.append(len(page_metas))
        else:
            n_metas.append(0)
    n = len(uris)
    link_record = np.repeat(np.arange(n, dtype=np.int64), n_links)
    is_img = pc.fill_null(pc.equal(_strings_of(_path, links), IMG_PATH), False).to_numpy(zero_copy_only=False)
    img_record = link_record[is_img]
    per_record = np.bincount(img_record, minlength=n)
    uri = text_strings(uris)[0]
    has_uri = pc.is_valid(uri).to_numpy(zero_copy_only=False)
    kept = (per_record > 0) & has_uri  # the links of a page without a URL cannot be resolved
    found = {
        "non_image_links_ignored": len(links) - len(img_record),
        "record_no_images": no_links + int(np.count_nonzero(per_record == 0)),
        "record_no_target_uri": int(np.count_nonzero((per_record > 0) & ~has_uri)),
        "record_with_images": int(np.count_nonzero(kept)),
    }
    counts.update({k: v for k, v in found.items() if v})
    page_of = np.cumsum(kept) - 1  # page index of each kept record
    img_index = np.flatnonzero(is_img)[kept[img_record]]
    images = _take(links, img_index)
    meta_record = np.repeat(np.arange(n, dtype=np.int64), n_metas)
    meta_index = np.flatnonzero(kept[meta_record])
    keep = pa.array(kept)
    src, src_invalid = text_strings(list(map(_url, images)))
    return LinkBatch(
        page_url=uri.filter(keep),
        page_base=pa.nulls(found["record_with_images"], pa.string()),
        page_lang=_page_langs(found["record_with_images"], text_strings(header_langs)[0].filter(keep),
                              page_of[meta_record[meta_index]], _take(metas, meta_index)),
        link_page=pa.array(page_of[link_record[img_index]], pa.int32()),
        src=src,
        alt=caption_strings(list(map(_alt, images)), counts),
        title=caption_strings(list(map(_title, images)), counts),
        src_invalid=src_invalid,
    )
