"""Write WAT files shaped like Common Crawl's, for tests, the demo and the benchmark.

Common Crawl's WAT files hold, per crawled page, three `metadata` WARC records (for the
request, the response and the crawler's metadata record), each its own gzip member, after one
`warcinfo` record. Only the response record carries
`Envelope.Payload-Metadata.HTTP-Response-Metadata.HTML-Metadata` with `Head` and `Links`;
images are links with `"path": "IMG@/src"` and their `alt`/`title` attributes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

# (src, alt) or (src, alt, title); alt/title None means the attribute is absent.
ImageSpec = tuple[str, str | None] | tuple[str, str | None, str | None]
PageSpec = tuple[str, Sequence[ImageSpec]]


def _member(warc_headers: dict[str, str], body: bytes) -> bytes:
    """One WARC record, gzip-compressed on its own (CC's per-record gzip members)."""
    headers = {"WARC-Type": "metadata", **warc_headers, "Content-Length": str(len(body))}
    head = "WARC/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return gzip.compress(head.encode() + body + b"\r\n\r\n", compresslevel=1, mtime=0)


def _record_id(seed: str) -> str:
    return f"<urn:uuid:{uuid.UUID(hashlib.md5(seed.encode()).hexdigest())}>"


def _links(images: Sequence[ImageSpec], page_url: str, anchors: int) -> list[dict[str, str]]:
    links: list[dict[str, str]] = []
    for i in range(anchors):
        links.append({"path": "A@/href", "url": f"/link/{i}", "text": f"anchor {i}"})
    for spec in images:
        link = {"path": "IMG@/src", "url": spec[0]}
        if spec[1] is not None:
            link["alt"] = spec[1]
        if len(spec) > 2 and spec[2] is not None:
            link["title"] = spec[2]
        links.append(link)
    return links


def wat_page_records(
    page_url: str,
    images: Sequence[ImageSpec],
    *,
    date: str = "2024-05-18T01:58:10Z",
    container: str = "CC-MAIN-20240517233122-20240518023122-00000.warc.gz",
    anchors_per_page: int = 2,
    lang: str | None = None,
    title: str | None = None,
) -> bytes:
    """The three gzip members Common Crawl writes to a WAT file for one HTML page."""
    request_id, response_id = _record_id(page_url + "#req"), _record_id(page_url + "#resp")
    base = {"WARC-Target-URI": page_url, "WARC-Date": date, "Content-Type": "application/json"}

    def envelope(warc_type: str, payload: dict) -> bytes:
        doc = {
            "Container": {"Filename": container, "Compressed": True, "Offset": "0"},
            "Envelope": {
                "Format": "WARC",
                "WARC-Header-Metadata": {"WARC-Type": warc_type, "WARC-Target-URI": page_url, "WARC-Date": date},
                "Payload-Metadata": payload,
            },
        }
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()

    request = envelope(
        "request",
        {
            "Actual-Content-Type": "application/http; msgtype=request",
            "HTTP-Request-Metadata": {"Request-Message": {"Method": "GET", "Path": "/", "Version": "HTTP/1.1"}},
        },
    )
    head: dict = {"Title": title if title is not None else page_url.rsplit("/", 1)[-1]}
    metas = [{"name": "viewport", "content": "width=device-width"}]
    if lang is not None:
        metas.append({"http-equiv": "Content-Language", "content": lang})
    head["Metas"] = metas
    response = envelope(
        "response",
        {
            "Actual-Content-Type": "application/http; msgtype=response",
            "HTTP-Response-Metadata": {
                "Response-Message": {"Version": "HTTP/1.1", "Status": "200", "Reason": "OK"},
                "Headers": {"Content-Type": "text/html; charset=UTF-8"},
                "HTML-Metadata": {"Head": head, "Links": _links(images, page_url, anchors_per_page)},
            },
        },
    )
    crawl_meta = envelope("metadata", {"Actual-Content-Type": "application/warc-fields"})
    return b"".join(
        [
            _member({**base, "WARC-Record-ID": request_id, "WARC-Refers-To": request_id}, request),
            _member({**base, "WARC-Record-ID": response_id, "WARC-Refers-To": response_id}, response),
            _member({**base, "WARC-Record-ID": _record_id(page_url + "#meta")}, crawl_meta),
        ]
    )


def warcinfo_record(filename: str) -> bytes:
    body = f"software: curate watgen\r\nformat: WARC File Format 1.0\r\nfilename: {filename}\r\n".encode()
    return _member(
        {"WARC-Type": "warcinfo", "WARC-Filename": filename, "Content-Type": "application/warc-fields",
         "WARC-Record-ID": _record_id(filename)},
        body,
    )


_LANGS = ("en", "de-DE", "fr")


def write_wat(path: str | Path, pages: Iterable[PageSpec], *, anchors_per_page: int = 2, lang_every: int = 0) -> int:
    """Write a .warc.wat.gz holding one page per (page_url, [(img_src, alt[, title]), ...]).

    With `lang_every` k > 0, every k-th page declares its language (a Content-Language meta).
    Returns the number of pages written.
    """
    path = Path(path)
    n = 0
    with path.open("wb") as fh:
        fh.write(warcinfo_record(path.name))
        for page_url, images in pages:
            lang = _LANGS[n % len(_LANGS)] if lang_every and n % lang_every == 0 else None
            fh.write(wat_page_records(page_url, images, anchors_per_page=anchors_per_page, lang=lang))
            n += 1
    return n


def synthetic_pages(n_pages: int, images_per_page: int = 4, host: str = "http://127.0.0.1:8000") -> list[PageSpec]:
    """Pages with a realistic mix of image links: absolute, relative, protocol-relative,
    title-only, empty alt, entity-escaped alt, data: URIs and repeats within a page."""
    pages: list[PageSpec] = []
    for p in range(n_pages):
        page_url = f"https://site{p % 97}.example.com/articles/{p}/index.html"
        images: list[ImageSpec] = []
        for i in range(images_per_page):
            kind = (p + i) % 8
            if kind == 0:
                images.append((f"{host}/img/{p}_{i}.jpg", f"a red circle number {p} {i}"))
            elif kind == 1:
                images.append((f"../images/{i}.png", f"photo &amp; caption  {p}"))
            elif kind == 2:
                images.append((f"//cdn.example.net/{p}/{i}.webp", None, f"title only {p} {i}"))
            elif kind == 3:
                images.append((f"/static/{p}-{i}.jpg", ""))
            elif kind == 4:
                images.append(("data:image/gif;base64,R0lGODlhAQABAAAAACw=", "pixel"))
            elif kind == 5:
                images.append((f"{host}/img/{p}_{i}.jpg", f"a red circle number {p} {i}"))
            elif kind == 6:
                images.append((f"https://img.example.org/{p}/{i}.jpg", f"  blue\tsquare\n on white {i} "))
            else:
                images.append((f"thumb_{i}.jpg", f"green triangle {p}"))
        pages.append((page_url, images))
    return pages
