"""Pull image links out of one record: WAT JSON metadata or an HTML response.

Both return raw strings (src, alt, title) per <img>; all cleaning and filtering happens later,
column-wise, in curate.stages.ingest.candidates.
"""

from __future__ import annotations

import json
from typing import Any

from resiliparse.parse.encoding import detect_encoding
from resiliparse.parse.html import HTMLTree

IMG_PATH = "IMG@/src"
IMG_MARK = b'"IMG@/src"'
RESPONSE_MARK = b'"HTTP-Response-Metadata"'

RawLink = tuple[Any, Any, Any]  # (src, alt, title) as found; alt/title None when absent


class RecordSkipped(Exception):
    """A record that yields no links; `reason` names why (counted as record_<reason>)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _lang_token(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    token = value.split(",")[0].strip().lower()
    return token or None


def wat_links(body: bytes) -> tuple[str | None, str | None, list[RawLink], int]:
    """(page_url, page_lang, image links, number of non-image links) of a WAT metadata record.

    The record-by-record path: curate.stages.ingest.watblock parses whole blocks faster and
    falls back to this when a block holds a bad record."""
    # Most WAT records (requests, crawl metadata, pages without images) have no IMG link:
    # a byte search rejects them without paying for a JSON parse.
    if body[:1] != b"{":
        raise RecordSkipped("skipped_metadata")  # a WARC file's crawler metadata (warc-fields), not WAT JSON
    if IMG_MARK not in body:
        raise RecordSkipped("no_images" if RESPONSE_MARK in body else "not_html_response")
    try:
        doc = json.loads(body)
    except UnicodeDecodeError:
        raise RecordSkipped("invalid_utf8") from None
    except ValueError:
        raise RecordSkipped("invalid_json") from None
    try:
        response = doc["Envelope"]["Payload-Metadata"]["HTTP-Response-Metadata"]
        html = response["HTML-Metadata"]
        links = html["Links"]
    except (KeyError, TypeError):
        raise RecordSkipped("no_images") from None
    if not isinstance(links, list):
        raise RecordSkipped("invalid_json")
    try:
        images = [(link.get("url"), link.get("alt"), link.get("title")) for link in links
                  if link.get("path") == IMG_PATH]
    except AttributeError:  # a link that is not a JSON object
        raise RecordSkipped("invalid_json") from None
    try:
        page_url = doc["Envelope"]["WARC-Header-Metadata"]["WARC-Target-URI"]
    except (KeyError, TypeError):
        page_url = None
    page_url = page_url if isinstance(page_url, str) else None
    return page_url, _wat_lang(response, html), images, len(links) - len(images)


def _wat_lang(response: dict, html: dict) -> str | None:
    """Declared page language: <meta http-equiv=content-language> or the HTTP header."""
    head = html.get("Head")
    metas = head.get("Metas") if isinstance(head, dict) else None
    if isinstance(metas, list):
        for meta in metas:
            if not isinstance(meta, dict):
                continue
            key = (meta.get("http-equiv") or meta.get("name") or "")
            if isinstance(key, str) and key.lower() in ("content-language", "language"):
                lang = _lang_token(meta.get("content"))
                if lang:
                    return lang
    headers = response.get("Headers")
    if isinstance(headers, dict):
        for key, value in headers.items():
            if key.lower() == "content-language":
                return _lang_token(value)
    return None


def html_links(
    body: bytes, charset: str | None, content_language: str | None
) -> tuple[str | None, str | None, list[RawLink]]:
    """(base href, page_lang, image links) of an HTML document."""
    encoding = charset or detect_encoding(body)
    try:
        tree = HTMLTree.parse_from_bytes(body, encoding)
    except Exception:
        raise RecordSkipped("unparsable_html") from None
    document = tree.document
    if document is None:
        raise RecordSkipped("unparsable_html")
    base = None
    head = tree.head
    if head is not None:
        base_el = head.query_selector("base[href]")
        if base_el is not None:
            base = base_el.getattr("href")
    lang = None
    html_el = document.query_selector("html")
    if html_el is not None:
        lang = _lang_token(html_el.getattr("lang"))
    lang = lang or _lang_token(content_language)
    images = [
        (img.getattr("src"), img.getattr("alt"), img.getattr("title")) for img in document.query_selector_all("img")
    ]
    return base, lang, images
