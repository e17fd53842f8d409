"""Pull image links out of one HTML response record; the markers WAT records are sorted by.

WAT JSON records are read a block at a time by curate.stages.ingest.watblock. Both return raw
values (src, alt, title) per <img>; all cleaning and filtering happens later, column-wise, in
curate.stages.ingest.candidates.
"""

from __future__ import annotations

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
