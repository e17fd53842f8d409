"""Ingest: record reading, link extraction and the candidate rules, on real and generated files."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path
from urllib.parse import urljoin

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curate.stages.ingest.candidates import (
    CandidateRules,
    FirstSeen,
    LinkBuffer,
    build_candidates,
    hex_uids,
    uid_digests,
)
from curate.stages.ingest.shard import WAT_BLOCK, extract_file
from curate.stages.ingest.watblock import parse_wat_block
from curate.testing.watgen import synthetic_pages, warcinfo_record, wat_page_records, write_wat
from curate.uid import make_uid

FIXTURES = Path("/work/shared/fixtures/commoncrawl")
if not FIXTURES.exists():  # CI clones the repo with shared/ beside it
    FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "commoncrawl"
PAGE = "https://an.wikipedia.org/wiki/Escopete"


def extract(path: Path, rules: CandidateRules | None = None) -> tuple[list[dict], Counter[str]]:
    counts: Counter[str] = Counter()
    with open(path, "rb") as fh:
        table, _ = extract_file(fh, rules or CandidateRules(), str(path), "CC-MAIN-2024-22", counts)
    return table.to_pylist(), counts


# ------------------------------------------------------------------ real Common Crawl fixtures
ESCOPETE_EXPECTED = [
    ("https://an.wikipedia.org/static/images/mobile/copyright/wikipedia-wordmark-an.svg", "Biquipedia"),
    ("https://an.wikipedia.org/static/images/mobile/copyright/wikipedia-tagline-an.svg", "A enciclopedia libre"),
    (
        "https://upload.wikimedia.org/wikipedia/commons/thumb/0/0a/Escudo_de_Escopete_%28Guadalajara%29.svg/"
        "70px-Escudo_de_Escopete_%28Guadalajara%29.svg.png",
        "Escudo d'armas",
    ),
    (
        "https://upload.wikimedia.org/wikipedia/commons/thumb/9/9c/Castilla-La_Mancha-loc.svg/"
        "250px-Castilla-La_Mancha-loc.svg.png",
        "Escopete ubicada en Castiella-La Mancha",
    ),
    ("https://upload.wikimedia.org/wikipedia/commons/thumb/d/d2/Map_pointer.svg/12px-Map_pointer.svg.png", "Escopete"),
    ("https://an.wikipedia.org/static/images/footer/wikimedia-button.png", "Wikimedia Foundation"),
    ("https://an.wikipedia.org/static/images/footer/poweredby_mediawiki_88x31.png", "Powered by MediaWiki"),
]


def test_whirlwind_warc_gives_exact_candidates():
    rows, counts = extract(FIXTURES / "whirlwind.warc.gz")
    assert [(r["url"], r["text"]) for r in rows] == ESCOPETE_EXPECTED
    for r in rows:
        assert r["uid"] == make_uid(r["url"], r["text"])
        assert r["page_url"] == PAGE
        assert r["page_lang"] == "an"  # <html lang="an">
        assert r["alt_kind"] == "alt"
        assert r["crawl"] == "CC-MAIN-2024-22"
    # 13 <img>: 4 without alt (Wikimedia thumbnails) and 2 with alt="" are dropped as empty captions.
    assert counts["link_empty_caption"] == 6
    assert counts["link_kept"] == 7
    assert counts["record_with_images"] == 1
    assert counts["record_skipped_request"] == 1 and counts["record_skipped_metadata"] == 1


def test_whirlwind_warc_keep_empty_captions():
    rows, counts = extract(FIXTURES / "whirlwind.warc.gz", CandidateRules(keep_empty_captions=True))
    assert len(rows) == 13 and "link_empty_caption" not in counts
    empty = [r for r in rows if r["text"] == ""]
    assert len(empty) == 6
    # Protocol-relative thumbnails resolve against the page's scheme.
    assert "https://upload.wikimedia.org/wikipedia/commons/thumb/9/9a/Flag_of_Spain.svg/18px-Flag_of_Spain.svg.png" in {
        r["url"] for r in empty
    }
    assert {r["alt_kind"] for r in empty} == {"alt", None}  # alt="" vs no alt attribute at all


def test_whirlwind_wat_and_wet_are_read_and_counted():
    rows, counts = extract(FIXTURES / "whirlwind.warc.wat.gz")
    # The fixture's only page record describes the HTTP request, which carries no links.
    assert rows == [] and counts["record_not_html_response"] == 1 and counts["record_skipped_warcinfo"] == 1
    rows, counts = extract(FIXTURES / "whirlwind.warc.wet.gz")
    assert rows == [] and counts["record_wet_text_no_images"] == 1


# ------------------------------------------------------------------- generated WAT files
def test_generated_wat_rules(tmp_path):
    page = "https://example.com/blog/post.html"
    path = tmp_path / "a.warc.wat.gz"
    write_wat(
        path,
        [
            (
                page,
                [
                    ("https://img.example.com/a.jpg", "A  red\tcircle "),
                    ("../img/b.png", "Caf&eacute; &amp; bar"),
                    ("//cdn.example.net/c.webp", None, "title only"),
                    ("/d.jpg", "", "empty alt uses title"),
                    ("e.jpg", ""),  # empty caption: dropped
                    ("data:image/gif;base64,R0lGOD", "pixel"),  # data URI: dropped
                    ("javascript:void(0)", "js"),  # not http(s): dropped
                    ("https://img.example.com/a.jpg", "A red circle"),  # same (url, text) after normalising
                    ("ftp://files.example.com/f.jpg", "ftp"),
                ],
            ),
            ("http://other.org", [("x.jpg", "root page")]),
        ],
    )
    rows, counts = extract(path)
    got = [(r["url"], r["text"], r["alt_kind"], r["page_url"]) for r in rows]
    assert got == [
        ("https://img.example.com/a.jpg", "A red circle", "alt", page),
        ("https://example.com/img/b.png", "Café & bar", "alt", page),
        ("https://cdn.example.net/c.webp", "title only", "title", page),
        ("https://example.com/d.jpg", "empty alt uses title", "title", page),
        ("http://other.org/x.jpg", "root page", "alt", "http://other.org"),
    ]
    assert counts["link_duplicate"] == 1
    assert counts["link_data_uri"] == 1
    assert counts["link_unsupported_scheme"] == 2
    assert counts["link_empty_caption"] == 1
    assert counts["link_kept"] == 5
    assert counts["non_image_links_ignored"] == 4  # two <a href> per generated page
    assert counts["record_not_html_response"] == 4  # request + crawl-metadata records of 2 pages
    n_links = 10
    assert sum(v for k, v in counts.items() if k.startswith("link_")) == n_links


def test_title_fallback_can_be_disabled_and_captions_are_capped(tmp_path):
    path = tmp_path / "a.warc.wat.gz"
    write_wat(path, [("https://e.com/", [("a.jpg", None, "title"), ("b.jpg", "word " * 50)])])
    rows, counts = extract(path, CandidateRules(use_title_without_alt=False, max_caption_chars=12))
    assert [(r["url"], r["text"]) for r in rows] == [("https://e.com/b.jpg", "word word wo")]
    assert counts["link_empty_caption"] == 1 and counts["caption_truncated"] == 1


def test_page_language_from_wat_meta(tmp_path):
    path = tmp_path / "a.warc.wat.gz"
    with open(path, "wb") as fh:
        fh.write(warcinfo_record(path.name))
        fh.write(wat_page_records("https://e.de/", [("a.jpg", "Bild")], lang="de-DE, en"))
        fh.write(wat_page_records("https://e.com/", [("a.jpg", "image")]))
    rows, _ = extract(path)
    assert [r["page_lang"] for r in rows] == ["de-de", None]


# ------------------------------------------------------------------ corrupted input
def _pages(n: int, start: int = 0) -> list[bytes]:
    return [wat_page_records(f"https://site.com/p{i}", [(f"/img/{i}.jpg", f"picture {i}")]) for i in range(start, n)]


def _member(body: bytes, uri: str = "https://site.com/bad") -> bytes:
    head = (
        f"WARC/1.0\r\nWARC-Type: metadata\r\nWARC-Target-URI: {uri}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return gzip.compress(head.encode() + body + b"\r\n\r\n")


CORRUPTIONS = {
    "truncated_gzip_member": (lambda p: p[: len(p) // 2], "record_corrupt"),
    "garbage_bytes": (lambda p: b"\x00garbage\xff" * 40, "record_corrupt"),
    "invalid_json": (lambda p: _member(b'{"Envelope": {"IMG@/src": [1, 2'), "record_invalid_json"),
    "non_utf8": (
        lambda p: _member(
            b'{"Envelope":{"WARC-Header-Metadata":{"WARC-Target-URI":"https://site.com/bad"},"Payload-Metadata":'
            b'{"HTTP-Response-Metadata":{"HTML-Metadata":{"Links":[{"path":"IMG@/src","url":"/x.jpg",'
            b'"alt":"caf\xe9 \xff"}]}}}}}'
        ),
        "record_invalid_utf8",
    ),
}


@pytest.mark.fault("ingest", "WAT file with a truncated gzip member, garbage bytes, a record of invalid JSON or "
                   "non-UTF-8 text", "that record is skipped and counted by reason; every other page is kept")
@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_record_is_skipped_and_the_rest_kept(tmp_path, kind):
    make, reason = CORRUPTIONS[kind]
    pages = _pages(6)
    bad = make(pages[3])
    path = tmp_path / "c.warc.wat.gz"
    path.write_bytes(warcinfo_record("c") + b"".join(pages[:3]) + bad + b"".join(pages[4:]))
    rows, counts = extract(path)
    # Page 3 was replaced by the bad bytes; every other page survives.
    assert [r["page_url"] for r in rows] == [f"https://site.com/p{i}" for i in (0, 1, 2, 4, 5)]
    assert counts[reason] == 1


@pytest.mark.fault("ingest", "WAT file cut off in the middle of its last record",
                   "the cut record is counted as record_truncated; the pages before it are kept")
def test_truncated_file_end(tmp_path):
    data = warcinfo_record("t") + b"".join(_pages(4))
    path = tmp_path / "t.warc.wat.gz"
    cut = data[:-40]
    path.write_bytes(cut)
    rows, counts = extract(path)
    assert [r["page_url"] for r in rows] == [f"https://site.com/p{i}" for i in range(4)]
    assert counts["record_truncated"] + counts["record_corrupt"] >= 1


@pytest.mark.fault("ingest", "a WAT record declaring 16x max_record_bytes (a 1.5 GB record is 1.5 MB gzipped)",
                   "skipped unread and counted as record_too_large; every other page is kept")
@pytest.mark.parametrize("compressed", [True, False], ids=["gzip (fast reader)", "plain (careful reader)"])
def test_oversized_record_is_skipped_and_counted(tmp_path, compressed):
    from curate.config import IngestConfig
    from curate.stages.ingest import rules_from_config

    cap = 64 * 1024
    rules = rules_from_config(IngestConfig(max_record_bytes=cap))
    assert rules.max_record_bytes == cap
    pages = _pages(5)
    # Its response record holds a 1 MiB title: 16x the cap.
    pages[2] = wat_page_records("https://site.com/p2", [("https://img.site.com/p2.jpg", "big")], title="x" * (1 << 20))
    data = warcinfo_record("big") + b"".join(pages)
    path = tmp_path / ("big.warc.wat.gz" if compressed else "big.warc.wat")
    path.write_bytes(data if compressed else gzip.decompress(data))
    rows, counts = extract(path, rules)
    assert [r["page_url"] for r in rows] == [f"https://site.com/p{i}" for i in (0, 1, 3, 4)]
    assert counts["record_too_large"] == 1
    assert counts["record_corrupt"] == counts["record_truncated"] == 0


@pytest.mark.fault("ingest", "an input that is a FIFO, a directory or a device (/dev/zero), named or globbed",
                   "refused before any task starts, one line; never opened, so nothing blocks")
def test_non_regular_inputs_are_refused_up_front(tmp_path):
    import os

    from curate.errors import ConfigError
    from curate.stages.ingest.fetch import open_input
    from curate.stages.ingest.inputs import resolve_inputs

    fifo = tmp_path / "in.warc.wat.gz"
    os.mkfifo(fifo)
    # Hold both ends, so that even a reader that wrongly opened it would not block (the old failure).
    keep = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        cases = [(str(fifo), "a FIFO (named pipe)"), (f"file://{fifo}", "a FIFO (named pipe)"),
                 (str(tmp_path / "*.gz"), "a FIFO (named pipe)"),
                 (str(tmp_path), "a directory"), ("/dev/zero", "a character device")]
        for item, kind in cases:
            with pytest.raises(ConfigError) as info:
                resolve_inputs([item], 1, "https://data.commoncrawl.org")
            message = str(info.value)
            assert message.startswith("ingest: ") and f"is {kind}, not a regular file" in message
            assert "\n" not in message
        # The shard task checks again (its input may have been replaced since planning).
        with pytest.raises(OSError, match="is a FIFO"), open_input(str(fifo)):  # NotARegularFile
            pass
    finally:
        os.close(keep)


def _careful(path: Path) -> tuple[pa.Table, Counter[str]]:
    """What the careful (FastWARC, member-restarting) reader alone makes of a file."""
    from curate.stages.ingest.records import iter_records
    from curate.stages.ingest.shard import _extract_records

    counts: Counter[str] = Counter()
    with open(path, "rb") as fh:
        table, _ = _extract_records(iter_records(fh, counts), CandidateRules(), str(path), "CC-MAIN-2024-22", counts)
    return table, counts


@pytest.mark.parametrize("kind", ["intact", "garbage_in_a_gzip_member", *sorted(CORRUPTIONS)])
def test_fast_gzip_reader_gives_the_careful_readers_result(tmp_path, kind):
    from curate.stages.ingest.records import DamagedStream, iter_gzip_stream_records

    pages = _pages(6)
    if kind == "garbage_in_a_gzip_member":  # intact gzip, but what it holds is no WARC record
        pages[3] = gzip.compress(b"\x00garbage\xff" * 40)
    elif kind != "intact":
        pages[3] = CORRUPTIONS[kind][0](pages[3])
    path = _write(tmp_path / "f.warc.wat.gz", warcinfo_record("f") + b"".join(pages))
    damaged = kind in ("truncated_gzip_member", "garbage_bytes", "garbage_in_a_gzip_member")
    with open(path, "rb") as fh:
        if damaged:  # the fast reader gives up, and extract_file starts over with the careful one
            with pytest.raises(DamagedStream):
                list(iter_gzip_stream_records(fh))
        else:
            assert len(list(iter_gzip_stream_records(fh))) >= 1 + 3 * 5  # warcinfo + request/response/metadata
    counts: Counter[str] = Counter()
    with open(path, "rb") as fh:
        table, _ = extract_file(fh, CandidateRules(), str(path), "CC-MAIN-2024-22", counts)
    careful, careful_counts = _careful(path)
    assert table.equals(careful) and counts == careful_counts
    assert table.num_rows > 0


def test_number_typed_caption_costs_only_its_link(tmp_path):
    pages = _pages(5)
    odd = _member(
        b'{"Envelope":{"WARC-Header-Metadata":{"WARC-Target-URI":"https://site.com/odd"},"Payload-Metadata":'
        b'{"HTTP-Response-Metadata":{"HTML-Metadata":{"Links":[{"path":"IMG@/src","url":"/n.jpg","alt":42},'
        b'{"path":"IMG@/src","url":"/s.jpg","alt":"fine"}]}}}}}'
    )
    clean, _ = extract(_write(tmp_path / "clean.wat.gz", b"".join(pages)))
    mixed, counts = extract(_write(tmp_path / "mixed.wat.gz", b"".join(pages[:2]) + odd + b"".join(pages[2:])))
    # The odd record's number-typed alt is not text: that link is counted, the rest kept in order.
    assert [(r["url"], r["text"]) for r in mixed] == [(r["url"], r["text"]) for r in clean[:2]] + [
        ("https://site.com/s.jpg", "fine")
    ] + [(r["url"], r["text"]) for r in clean[2:]]
    assert counts["caption_invalid_unicode"] == 1 and counts["link_empty_caption"] == 1


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_an_invalid_record_in_a_block_costs_only_itself(tmp_path):
    path = tmp_path / "s.warc.wat.gz"
    write_wat(path, synthetic_pages(60))
    from curate.stages.ingest.records import iter_records

    with open(path, "rb") as fh:
        bodies = [b for _, b in iter_records(fh, Counter()) if b'"IMG@/src"' in b]
    clean_counts: Counter[str] = Counter()
    clean = build_candidates(parse_wat_block(bodies, clean_counts), CandidateRules(), "s", "", clean_counts)
    mixed_counts: Counter[str] = Counter()
    # A record of invalid JSON in the middle of the block.
    mixed_batch = parse_wat_block([*bodies[:30], b'{"IMG@/src": [', *bodies[30:]], mixed_counts)
    mixed = build_candidates(mixed_batch, CandidateRules(), "s", "", mixed_counts)
    assert clean.equals(mixed)
    assert mixed_counts.pop("record_invalid_json") == 1
    assert +clean_counts == +mixed_counts
    assert len(bodies) < WAT_BLOCK


# ------------------------------------------------------------------ URL and text rules
RELATIVE = ["img.jpg", "./img.jpg", "../img.jpg", "../../../../img.jpg", "./../a/img.jpg", "/r.jpg", "//cdn.x/i.png",
            "a/b/../c.jpg", "?q=2", "#x", "../", "..", ".", "x/./y.jpg", ".../x.jpg", "..x/y.jpg", "a\\b.jpg"]
PAGES = ["https://a.com/x/y/page.html?q=1#f", "https://b.com", "http://c.com/", "https://d.com/a/b/", "HTTPS://E.com/a"]


def test_relative_urls_resolve_like_urljoin():
    buf = LinkBuffer()
    for page in PAGES:
        buf.add_page(page, None, None, [(rel, f"{page} {rel}", None) for rel in RELATIVE])
    counts: Counter[str] = Counter()
    table = build_candidates(buf.to_batch(counts), CandidateRules(), "", "", counts)
    assert table.num_rows == len(PAGES) * len(RELATIVE)
    for row in table.to_pylist():
        page, rel = row["text"].split(" ", 1)
        assert row["url"] == urljoin(page, rel), (page, rel)


def test_base_href_is_honoured():
    buf = LinkBuffer()
    buf.add_page("https://a.com/x/page.html", "/static/", None, [("i.jpg", "one", None), ("../j.jpg", "two", None)])
    buf.add_page("https://a.com/x/page.html", "https://cdn.com/b/", None, [("k.jpg", "three", None)])
    counts: Counter[str] = Counter()
    urls = build_candidates(buf.to_batch(counts), CandidateRules(), "", "", counts)["url"].to_pylist()
    assert urls == ["https://a.com/static/i.jpg", "https://a.com/j.jpg", "https://cdn.com/b/k.jpg"]


def test_odd_values_are_counted_not_crashing():
    buf = LinkBuffer()
    buf.add_page("https://a.com/", None, None, [
        (None, "no src", None), ("", "empty", None), (5, "number", None), ("\ud800.jpg", "surrogate", None),
        ("ok.jpg", "\udc00", "title instead"), ("http://", "no host", None), ("mailto:x@y", "mail", None),
    ])
    counts: Counter[str] = Counter()
    rows = build_candidates(buf.to_batch(counts), CandidateRules(), "", "", counts).to_pylist()
    assert [(r["url"], r["text"]) for r in rows] == [("https://a.com/ok.jpg", "title instead")]
    assert counts == Counter(link_missing_src=1, link_empty_src=1, link_invalid_unicode=2, link_invalid_url=1,
                             link_unsupported_scheme=1, caption_invalid_unicode=1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1), st.text()), min_size=1, max_size=20))
def test_column_uids_match_make_uid(pairs):
    pairs = [(u, t) for u, t in pairs if not any(0xD800 <= ord(c) <= 0xDFFF for c in u + t)]
    if not pairs:
        return
    urls, texts = zip(*pairs, strict=True)
    got = hex_uids(uid_digests(pa.array(urls), pa.array(texts))).to_pylist()
    assert got == [make_uid(u, t) for u, t in pairs]


def _warc_response(url: str, html: str, content_type: str = "text/html; charset=utf-8") -> bytes:
    payload = html.encode()
    http_part = (f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(payload)}\r\n\r\n"
                 ).encode() + payload
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: {url}\r\n"
            f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(http_part)}\r\n\r\n")
    return gzip.compress(head.encode() + http_part + b"\r\n\r\n")


def test_warc_html_honours_base_href_and_entities(tmp_path):
    html = (
        '<html lang="fr-FR"><head><base href="https://static.example.org/assets/"></head><body>'
        '<img src="a.jpg" alt="Caf&eacute;  au&nbsp;lait">'
        '<img src="../b.png" title="Titre">'
        '<img src="//cdn.example.org/c.gif" alt="">'
        '<img alt="no src">'
        "</body></html>"
    )
    path = _write(tmp_path / "p.warc.gz", _warc_response("http://example.org/x/page.html", html)
                  + _warc_response("http://example.org/data.json", "{}", "application/json"))
    rows, counts = extract(path)
    assert [(r["url"], r["text"], r["alt_kind"], r["page_lang"]) for r in rows] == [
        ("https://static.example.org/assets/a.jpg", "Café au lait", "alt", "fr-fr"),
        ("https://static.example.org/b.png", "Titre", "title", "fr-fr"),
    ]
    assert counts["link_missing_src"] == 1 and counts["link_empty_caption"] == 1
    assert counts["record_not_html_response"] == 1


def test_first_seen_keeps_first_row_of_each_digest_across_batches():
    seen = FirstSeen()
    assert seen.first_rows([b"a", b"b"]) is None  # all new: no index list to build
    assert seen.first_rows([b"c", b"a", b"c", b"d"]) == [0, 3]
    assert seen.first_rows([b"d", b"b"]) == []
    assert seen.first_rows([b"e"]) is None


def test_repeats_across_wat_blocks_keep_their_first_row(tmp_path):
    # More pages than one block holds, with (url, alt) pairs repeating within and across blocks.
    n_pages = 2 * WAT_BLOCK + 50
    pages = [(f"https://site.example.com/{p}.html",
              [(f"https://img.example.com/{p % 1500}.jpg", f"caption {p % 1500}"),
               (f"https://img.example.com/{p % 1500}.jpg", f"caption {p % 1500}"),
               (f"https://img.example.com/{p % 7}.jpg", "shared")])
             for p in range(n_pages)]
    path = tmp_path / "repeats.warc.wat.gz"
    write_wat(path, pages)
    rows, counts = extract(path)
    expected: dict[tuple[str, str], str] = {}
    for page_url, images in pages:
        for src, alt in images:
            expected.setdefault((src, alt), page_url)
    assert [(r["url"], r["text"], r["page_url"]) for r in rows] == [(u, t, p) for (u, t), p in expected.items()]
    assert counts["link_duplicate"] == 3 * n_pages - len(expected)
    assert len({r["uid"] for r in rows}) == len(rows)
