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
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.stages.ingest.candidates import LinkBatch, caption_strings, text_strings
from curate.stages.ingest.extract import IMG_PATH

# <meta http-equiv|name=...> keys that declare the page language (compared lower-cased).
_LANG_KEYS = frozenset(("content-language", "language"))


# gc=False everywhere: decoded JSON holds no reference cycles, and objects the collector does not
# track keep its passes short while a block's links are alive.
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
_url, _alt, _title = attrgetter("url"), attrgetter("alt"), attrgetter("title")


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


def _lang_tokens(values: pa.Array) -> pa.Array:
    """'en-US, de' → 'en-us'; empty → null."""
    token = pc.utf8_lower(pc.utf8_trim_whitespace(pc.extract_regex(values, r"^(?P<t>[^,]*)").field("t")))
    return pc.if_else(pc.equal(token, ""), pa.nulls(len(token), pa.string()), token)


def _page_langs(n: int, header: list[Any], meta_page: list[int], meta_content: list[Any]) -> pa.Array:
    """Declared language of n pages: the content of the first of its language <meta>s that has one,
    else its HTTP Content-Language header. The language metas of all pages come flat, with the
    index of their page in `meta_page`."""
    header_lang = _lang_tokens(text_strings(header)[0])
    if not meta_page:
        return header_lang
    lang = _lang_tokens(text_strings(meta_content)[0])
    hit_rows = np.flatnonzero(pc.is_valid(lang).to_numpy(zero_copy_only=False))
    if not len(hit_rows):
        return header_lang
    pages, first = np.unique(np.asarray(meta_page)[hit_rows], return_index=True)
    row = np.full(n, -1, dtype=np.int64)
    row[pages] = hit_rows[first]
    missing = row < 0
    return pc.coalesce(lang.take(pa.array(np.where(missing, 0, row), mask=missing)), header_lang)


def parse_wat_block(bodies: list[bytes], counts: Counter[str]) -> LinkBatch:
    """Image links of WAT response records (each a JSON document), with their pages' URL and
    language; every record is counted by what it held or why it was skipped.

    Python touches each record once and each of its links once (a comprehension picks the image
    links: cheaper than handing every link's path to Arrow); the rest is column-wise."""
    page_url: list[str] = []  # per page kept: a record with image links and a URL
    header_lang: list[Any] = []
    meta_page: list[int] = []  # per language <meta> of a kept page
    meta_content: list[Any] = []
    images: list[_Link] = []  # the image links of the kept pages, flat
    per_page: list[int] = []
    n_links = n_images = no_images = no_uri = 0
    for body in bodies:
        record = decode_record(body)
        if isinstance(record, str):
            counts[f"record_{record}"] += 1
            continue
        envelope = record.envelope
        payload = envelope.payload if envelope is not None else None
        response = payload.response if payload is not None else None
        html = response.html if response is not None else None
        links = html.links if html is not None else None
        if not links:
            no_images += 1
            continue
        n_links += len(links)
        page_images = [link for link in links if link.path == IMG_PATH]
        if not page_images:
            no_images += 1
            continue
        n_images += len(page_images)
        header = envelope.header
        uri = header.target_uri if header is not None else None
        if not isinstance(uri, str):
            no_uri += 1  # its links cannot be resolved
            continue
        page = len(page_url)
        page_url.append(uri)
        images += page_images
        per_page.append(len(page_images))
        headers = response.headers
        header_lang.append(headers.content_language if headers is not None else None)
        head = html.head
        metas = head.metas if head is not None else None
        if metas:
            for meta in metas:
                key = meta.equiv if meta.equiv is not None else meta.name
                if isinstance(key, str) and key.lower() in _LANG_KEYS:
                    meta_page.append(page)
                    meta_content.append(meta.content)
    found = {
        "non_image_links_ignored": n_links - n_images,
        "record_no_images": no_images,
        "record_no_target_uri": no_uri,
        "record_with_images": len(page_url),
    }
    counts.update({k: v for k, v in found.items() if v})
    src, src_invalid = text_strings(list(map(_url, images)))
    return LinkBatch(
        page_url=pa.array(page_url, pa.string()),
        page_base=pa.nulls(len(page_url), pa.string()),
        page_lang=_page_langs(len(page_url), header_lang, meta_page, meta_content),
        link_page=pa.array(np.repeat(np.arange(len(per_page), dtype=np.int32), per_page), pa.int32()),
        src=src,
        alt=caption_strings(list(map(_alt, images)), counts),
        title=caption_strings(list(map(_title, images)), counts),
        src_invalid=src_invalid,
    )
