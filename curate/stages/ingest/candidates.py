"""Turn raw image links into candidate rows, column-wise with pyarrow.

Rules (docs/ingest.md): resolve relative and protocol-relative URLs against the page's base URL,
keep http(s) only, drop data: URIs, unescape HTML entities and collapse whitespace in captions,
take alt (then title, when configured), drop empty captions unless kept, cap caption length,
drop exact (url, text) repeats within a shard. Every dropped link is counted by reason.
"""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any
from urllib.parse import urljoin

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CANDIDATE_SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("url", pa.string()),
        ("text", pa.string()),
        ("page_url", pa.string()),
        ("source", pa.string()),
        ("crawl", pa.string()),
        ("page_lang", pa.string()),
        ("alt_kind", pa.string()),
    ]
)

# Rows needing whitespace work: leading/trailing/double spaces, or any non-space whitespace,
# control or invisible character (non-ASCII rows are checked too, for NBSP and friends).
_NEEDS_SPACING = r"^ | $|  |[^ -~]"
_INVISIBLE = r"[\p{Cc}\x{200b}\x{feff}]"
# (entity, text) pairs that html.unescape maps one to one; '&amp;' must stay last.
_SIMPLE_ENTITIES = (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#39;", "'"), ("&apos;", "'"),
                    ("&nbsp;", "\xa0"), ("&amp;", "&"))
_ENTITY = r"&(#[0-9]+|#[xX][0-9a-fA-F]+|[a-zA-Z][a-zA-Z0-9]*);?"


@dataclass(frozen=True)
class CandidateRules:
    """The rule settings of IngestConfig, as a small picklable value for Ray tasks."""

    keep_empty_captions: bool = False
    max_caption_chars: int = 2000
    max_url_chars: int = 2048
    use_title_without_alt: bool = True
    # A record is read into memory whole; gzip makes a 1.5 GB record 1.5 MB on disk.
    max_record_bytes: int = 32 * 1024 * 1024


@dataclass
class LinkBatch:
    """Raw image links of many pages as arrow columns: per page (page_*) and per link."""

    page_url: pa.Array
    page_base: pa.Array  # <base href> as found; null: the page URL is the base
    page_lang: pa.Array
    link_page: pa.Array  # int32 index into the page columns
    src: pa.Array
    alt: pa.Array
    title: pa.Array
    src_invalid: pa.Array | None = None  # src values that were not text (dropped as invalid_unicode)

    def __len__(self) -> int:
        return len(self.src)


@dataclass
class LinkBuffer:
    """Raw links of many pages gathered in Python lists (HTML pages, odd WAT records)."""

    page_url: list[Any] = field(default_factory=list)
    page_base: list[Any] = field(default_factory=list)  # base href as found (None: the page url)
    page_lang: list[Any] = field(default_factory=list)
    link_page: list[int] = field(default_factory=list)
    src: list[Any] = field(default_factory=list)
    alt: list[Any] = field(default_factory=list)
    title: list[Any] = field(default_factory=list)

    def add_page(self, page_url: Any, base: Any, lang: Any, links: list[tuple[Any, Any, Any]]) -> None:
        if not links:
            return
        page = len(self.page_url)
        self.page_url.append(page_url)
        self.page_base.append(base)
        self.page_lang.append(lang)
        srcs, alts, titles = zip(*links, strict=True)
        self.src.extend(srcs)
        self.alt.extend(alts)
        self.title.extend(titles)
        self.link_page.extend([page] * len(srcs))

    def __len__(self) -> int:
        return len(self.src)

    def to_batch(self, counts: Counter[str]) -> LinkBatch:
        src, src_invalid = text_strings(self.src)
        return LinkBatch(
            page_url=text_strings(self.page_url)[0],
            page_base=text_strings(self.page_base)[0],
            page_lang=text_strings(self.page_lang)[0],
            link_page=pa.array(self.link_page, pa.int32()),
            src=src,
            alt=caption_strings(self.alt, counts),
            title=caption_strings(self.title, counts),
            src_invalid=src_invalid,
        )


def text_strings(values: list[Any]) -> tuple[pa.Array, pa.Array | None]:
    """A string array and a mask of values that were not valid text (numbers from odd JSON,
    lone surrogates), which become null; the mask is None when every value was fine."""
    try:
        return pa.array(values, pa.string()), None
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError):
        pass
    clean: list[str | None] = []
    bad: list[bool] = []
    for v in values:
        ok = isinstance(v, str)
        if ok:
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                ok = False
        clean.append(v if ok else None)
        bad.append(not ok and v is not None)
    return pa.array(clean, pa.string()), pa.array(bad, pa.bool_())


def caption_strings(values: list[Any], counts: Counter[str]) -> pa.Array:
    """Caption attributes that are not valid text count as absent (caption_invalid_unicode)."""
    arr, invalid = text_strings(values)
    if invalid is not None:
        counts["caption_invalid_unicode"] += pc.sum(invalid).as_py() or 0
    return arr


_PAGE_PARTS = r"^(?P<scheme>[hH][tT][tT][pP][sS]?)://(?P<host>[^/?#\s]+)(?P<path>[^?#]*)"


def _page_bases(page_url: pa.Array, page_base: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array]:
    """Per page: the effective base URL (<base href> resolved against the page), its scheme,
    origin ('https://host') and directory path ('/a/'); null where it is not http(s)."""
    bases = page_url
    has_base = pc.fill_null(pc.is_valid(page_base), False)
    if pc.any(has_base).as_py():
        # Only WARC pages with a <base href> (rare) need the general join.
        effective = page_url.to_pylist()
        for i, base in zip(np.flatnonzero(has_base.to_numpy(zero_copy_only=False)),
                           page_base.filter(has_base).to_pylist(), strict=True):
            try:
                effective[i] = urljoin(effective[i], base.strip()) if effective[i] is not None else None
            except ValueError:
                effective[i] = None
        bases = pa.array(effective, pa.string())
    parts = pc.extract_regex(bases, _PAGE_PARTS)
    # Schemes are case-insensitive; urljoin writes them lower-case, and so do we.
    scheme = pc.utf8_lower(parts.field("scheme"))
    origin = pc.binary_join_element_wise(scheme, parts.field("host"), "://")
    path = parts.field("path")
    # A page without a path ('https://host') has '/' as its directory.
    dir_path = pc.if_else(pc.equal(path, ""), "/", pc.replace_substring_regex(path, r"[^/]*$", ""))
    valid = pc.is_valid(origin)
    return pc.if_else(valid, bases, pa.nulls(len(bases), pa.string())), scheme, origin, dir_path


def _where(mask: pa.Array) -> np.ndarray:
    return np.flatnonzero(pc.fill_null(mask, False).to_numpy(zero_copy_only=False))


def _patch(arr: pa.Array, idx: np.ndarray, values: pa.Array) -> pa.Array:
    """`arr` with the rows at `idx` replaced by `values` (in that order)."""
    mask = np.zeros(len(arr), dtype=bool)
    mask[idx] = True
    return pc.replace_with_mask(arr, pa.array(mask), values.cast(arr.type))


def _unescape(arr: pa.Array) -> pa.Array:
    """html.unescape of every row. Rows whose every '&' starts one of the common entities are
    rewritten column-wise; the rest (numeric, rare or semicolon-less references) go through
    html.unescape. '&amp;' is replaced last, so '&amp;lt;' stays '&lt;' as html.unescape leaves it."""
    ampersands = pc.count_substring(arr, "&")
    known = pc.count_substring(arr, _SIMPLE_ENTITIES[0][0])
    for entity, _ in _SIMPLE_ENTITIES[1:]:
        known = pc.add(known, pc.count_substring(arr, entity))
    slow = _where(pc.not_equal(ampersands, known))
    out = arr
    for entity, char in _SIMPLE_ENTITIES:
        out = pc.replace_substring(out, entity, char)
    if len(slow):
        rows = [html.unescape(v) for v in arr.take(pa.array(slow)).to_pylist()]
        out = _patch(out, slow, pa.array(rows, pa.string()))
    return out


def normalise_text(arr: pa.Array) -> pa.Array:
    """Unescape HTML entities and collapse whitespace (incl. NBSP, zero-width) to one space.

    The expensive rewrites run only on the rows a cheap scan flags; most captions are clean."""
    idx = _where(pc.match_substring(arr, "&"))
    if len(idx):
        arr = _patch(arr, idx, _unescape(arr.take(pa.array(idx))))
    idx = _where(pc.match_substring_regex(arr, _NEEDS_SPACING))
    if len(idx):
        subset = pc.utf8_trim_whitespace(pc.replace_substring_regex(arr.take(pa.array(idx)), _INVISIBLE, " "))
        arr = _patch(arr, idx, pc.binary_join(pc.utf8_split_whitespace(subset), " "))
    return arr


class _Dropper:
    """Applies drop reasons in order: a link is counted under the first reason that hits it."""

    def __init__(self, n: int, counts: Counter[str]) -> None:
        self.alive = pa.array(np.ones(n, dtype=bool))
        self.counts = counts

    def drop(self, reason: str, condition: pa.Array) -> None:
        hit = pc.and_(self.alive, pc.fill_null(condition, False))
        n = pc.sum(hit).as_py() or 0
        if n:
            self.counts[f"link_{reason}"] += n
            self.alive = pc.and_not(self.alive, hit)


def _climb(dir_path: pa.Array, ups: pa.Array) -> pa.Array:
    """Remove `ups` trailing segments from each directory path ('/a/b/' -1-> '/a/'), never above '/'."""
    most = pc.max(ups).as_py() or 0
    for k in range(1, most + 1):
        dir_path = pc.if_else(pc.greater_equal(ups, k), pc.replace_substring_regex(dir_path, r"[^/]+/$", ""), dir_path)
    return dir_path


_SPECIAL = r"(^|/)\.\.?(/|$)|^[?#]|\\"


def _resolve_leading_dots(url: pa.Array, origin: pa.Array, dir_path: pa.Array) -> tuple[pa.Array, pa.Array]:
    """For links starting with './' or '../' and no other special part: (mask, resolved URL)."""
    n = len(url)
    mask = pa.array(np.zeros(n, dtype=bool))
    resolved = pa.nulls(n, pa.string())
    idx = _where(pc.or_(pc.starts_with(url, "./"), pc.starts_with(url, "../")))
    if not len(idx):
        return mask, resolved
    take = pa.array(idx)
    lead = pc.extract_regex(url.take(take), r"^(?P<dots>(?:\.\.?/)+)(?P<rest>.*)$")
    ups = pc.count_substring(lead.field("dots"), "../")
    rest = lead.field("rest")
    simple = pc.fill_null(pc.and_not(pc.less_equal(ups, 16), pc.match_substring_regex(rest, _SPECIAL + "|^/")), False)
    joined = pc.binary_join_element_wise(origin.take(take), _climb(dir_path.take(take), ups), rest, "")
    return _patch(mask, idx, simple), _patch(resolved, idx, joined)


def _spread(idx: np.ndarray, values: pa.Array, n: int) -> pa.Array:
    """A length-n boolean mask that is `values` at `idx` and False elsewhere."""
    out = np.zeros(n, dtype=bool)
    out[idx] = pc.fill_null(values, False).to_numpy(zero_copy_only=False)
    return pa.array(out)


def _resolve_relative(url: pa.Array, base: pa.Array, scheme: pa.Array, origin: pa.Array, dir_path: pa.Array
                      ) -> tuple[pa.Array, pa.Array]:
    """(resolved URL, has-another-scheme mask) for links that are not absolute http(s) URLs."""
    protocol_relative = pc.starts_with(url, "//")
    root_relative = pc.and_not(pc.starts_with(url, "/"), protocol_relative)
    other_scheme = pc.match_substring_regex(url, r"^[a-zA-Z][a-zA-Z0-9+.\-]*:")
    leading_dots, dots_resolved = _resolve_leading_dots(url, origin, dir_path)
    # Other dot segments, query/fragment-only and backslashes need the full RFC 3986 join.
    needs_urljoin = pc.and_not(pc.and_not(pc.match_substring_regex(url, _SPECIAL), protocol_relative), leading_dots)
    resolved = pc.case_when(
        pc.make_struct(other_scheme, protocol_relative, leading_dots, needs_urljoin, root_relative),
        pa.nulls(len(url), pa.string()),
        pc.binary_join_element_wise(scheme, url, ":"),
        dots_resolved,
        pa.nulls(len(url), pa.string()),
        pc.binary_join_element_wise(origin, url, ""),
        pc.binary_join_element_wise(origin, dir_path, url, ""),
    )
    idx = _where(pc.and_not(needs_urljoin, other_scheme))
    if len(idx):
        take = pa.array(idx)
        joined = [urljoin(b, r) if b is not None else None
                  for r, b in zip(url.take(take).to_pylist(), base.take(take).to_pylist(), strict=True)]
        resolved = _patch(resolved, idx, pa.array(joined, pa.string()))
    return resolved, other_scheme


def resolve_urls(src: pa.Array, link_page: pa.Array, page_base: pa.Array, page_scheme: pa.Array,
                 page_origin: pa.Array, page_dir: pa.Array, drop: _Dropper) -> pa.Array:
    """Absolute http(s) URLs for every link (null where the link is dropped).

    Absolute links pass through; only the others look up their page's base URL."""
    n = len(src)
    url = src
    # Browsers ignore tabs and newlines inside URLs and surrounding spaces.
    idx = _where(pc.match_substring_regex(url, r"[\t\n\r]|^ | $"))
    if len(idx):
        url = _patch(url, idx, pc.utf8_trim_whitespace(pc.replace_substring_regex(url.take(pa.array(idx)),
                                                                                   r"[\t\n\r]", "")))
    drop.drop("missing_src", pc.is_null(url))
    drop.drop("empty_src", pc.equal(url, ""))
    drop.drop("data_uri", pc.starts_with(url, "data:", ignore_case=True))
    absolute = pc.or_(pc.starts_with(url, "http://", ignore_case=True),
                      pc.starts_with(url, "https://", ignore_case=True))
    resolved = url
    rel_idx = _where(pc.and_not(drop.alive, absolute))
    if len(rel_idx):
        take = pa.array(rel_idx)
        pages = link_page.take(take)
        rel_resolved, other_scheme = _resolve_relative(
            url.take(take), page_base.take(pages), page_scheme.take(pages), page_origin.take(pages),
            page_dir.take(pages),
        )
        drop.drop("unsupported_scheme", _spread(rel_idx, other_scheme, n))
        resolved = _patch(resolved, rel_idx, rel_resolved)
    valid = pc.match_substring_regex(resolved, r"^https?://[^/?#\s]+([/?#]|$)", ignore_case=True)
    drop.drop("invalid_url", pc.invert(pc.fill_null(valid, False)))
    return resolved


def build_candidates(buf: LinkBatch, rules: CandidateRules, source: str, crawl: str,
                     counts: Counter[str], seen: FirstSeen | None = None) -> pa.Table:
    """Candidate rows of the links in `buf`; counts drops. With `seen`, rows whose (url, text)
    it has met already (in this batch or an earlier one) are dropped as link_duplicate."""
    n = len(buf)
    if n == 0:
        return CANDIDATE_SCHEMA.empty_table()
    link_page = buf.link_page
    bases, schemes, origins, dirs = _page_bases(buf.page_url, buf.page_base)
    drop = _Dropper(n, counts)
    if buf.src_invalid is not None:
        drop.drop("invalid_unicode", buf.src_invalid)
    url = resolve_urls(buf.src, link_page, bases, schemes, origins, dirs, drop)
    drop.drop("url_too_long", pc.greater(pc.utf8_length(url), rules.max_url_chars))

    alt_raw = buf.alt
    alt = normalise_text(alt_raw)
    has_alt = pc.fill_null(pc.greater(pc.utf8_length(alt), 0), False)
    title = pa.nulls(n, pa.string())
    has_title = pa.array(np.zeros(n, dtype=bool))
    # Titles matter only where alt is empty: normalise just those.
    title_idx = _where(pc.and_(pc.and_not(drop.alive, has_alt), pc.is_valid(buf.title))) \
        if rules.use_title_without_alt else np.zeros(0, dtype=np.int64)
    if len(title_idx):
        title = _patch(title, title_idx, normalise_text(buf.title.take(pa.array(title_idx))))
        has_title = pc.fill_null(pc.greater(pc.utf8_length(title), 0), False)
    text = pc.case_when(pc.make_struct(has_alt, has_title), alt, title, pa.scalar("", pa.string()))
    alt_kind = pc.case_when(
        pc.make_struct(has_alt, has_title, pc.is_valid(alt_raw)),
        pa.scalar("alt"), pa.scalar("title"), pa.scalar("alt"), pa.scalar(None, pa.string()),
    )
    if not rules.keep_empty_captions:
        drop.drop("empty_caption", pc.equal(text, ""))
    too_long = pc.and_(drop.alive, pc.greater(pc.utf8_length(text), rules.max_caption_chars))
    truncated = pc.sum(too_long).as_py() or 0
    if truncated:
        counts["caption_truncated"] += truncated
        capped = pc.utf8_trim_whitespace(pc.utf8_slice_codeunits(text, 0, rules.max_caption_chars))
        text = pc.if_else(too_long, capped, text)

    keep = drop.alive
    page_url = buf.page_url.take(link_page)
    page_lang = buf.page_lang.take(link_page)
    kept = pa.table(
        {"url": url, "text": text, "page_url": page_url, "page_lang": page_lang, "alt_kind": alt_kind}
    ).filter(keep)
    digests = uid_digests(kept["url"], kept["text"])
    if seen is not None:
        first = seen.first_rows(digests)
        if first is not None:
            counts["link_duplicate"] += len(digests) - len(first)
            kept = kept.take(pa.array(first, pa.int64()))
            digests = [digests[i] for i in first]
    uids = hex_uids(digests)
    m = kept.num_rows
    return pa.table(
        {
            "uid": uids,
            "url": kept["url"],
            "text": kept["text"],
            "page_url": kept["page_url"],
            "source": pa.repeat(pa.scalar(source, pa.string()), m),
            "crawl": pa.repeat(pa.scalar(crawl, pa.string()), m),
            "page_lang": kept["page_lang"],
            "alt_kind": kept["alt_kind"],
        },
        schema=CANDIDATE_SCHEMA,
    )


def uid_digests(url: pa.ChunkedArray | pa.Array, text: pa.ChunkedArray | pa.Array) -> list[bytes]:
    """The 16-byte blake2b digest of url, NUL, text for every row (curate.uid.make_uid before hex):
    one C-level join per column, then one hash call per row."""
    joined = pc.binary_join_element_wise(pc.cast(url, pa.binary()), pc.cast(text, pa.binary()), b"\x00")
    return [blake2b(b, digest_size=16).digest() for b in joined.to_pylist()]


def hex_uids(digests: list[bytes]) -> pa.Array:
    """Lower-case hex strings of 16-byte digests, built as one buffer."""
    hexed = b"".join(digests).hex().encode("ascii")
    offsets = np.arange(0, len(hexed) + 1, 32, dtype=np.int32)
    return pa.StringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(hexed))


class FirstSeen:
    """The uid digests met so far in one shard, so each exact (url, text) pair is kept once, at its
    first row in input order, while batches stream through (no shard-wide group-by at the end)."""

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def first_rows(self, digests: list[bytes]) -> list[int] | None:
        """Rows of `digests` not met before, in order; None when that is every row (the common case)."""
        seen = self._seen
        distinct = dict.fromkeys(digests)
        if len(distinct) == len(digests) and seen.isdisjoint(distinct):
            seen.update(distinct)
            return None
        first: list[int] = []
        for i, d in enumerate(digests):
            if d not in seen:
                seen.add(d)
                first.append(i)
        return first
