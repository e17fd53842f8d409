"""The WAT JSON reader (curate.stages.ingest.watblock, msgspec with typed structs).

Three checks: its output on a fixed corpus of generated WAT (escapes, surrogate pairs, odd link
forms, language metas and headers in any case) equals the output saved from the readers it
replaced (a C scanner and Arrow's JSON reader); on hypothesis records it agrees with a plain
json.loads reading of the documented rules; and hostile records (wrong types, truncated or
trailing data, huge numbers, deep nesting, invalid UTF-8, lone surrogates) are each skipped and
counted by reason without costing the shard or the other records anything.
"""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curate.stages.ingest.candidates import CandidateRules
from curate.stages.ingest.shard import extract_file
from curate.stages.ingest.watblock import parse_wat_block
from curate.testing.watgen import synthetic_pages, warcinfo_record, wat_page_records

EXPECTED = Path(__file__).resolve().parent / "data" / "ingest_wat_expected.json"


def member(body: bytes, uri: str = "https://x.com/") -> bytes:
    """One WAT metadata record, gzip-compressed on its own."""
    head = (f"WARC/1.0\r\nWARC-Type: metadata\r\nWARC-Target-URI: {uri}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return gzip.compress(head.encode() + body + b"\r\n\r\n", mtime=0)


# ------------------------------------------------------------------ the saved corpus
WORDS = ["en", "EN-us, de", " fr ", "", "café", "日本語", "\U0001f600", "a\nb", "\\", '"q"', "x&amp;y", "  sp  ",
         "\u00a0nb", "\t", "de-DE", "pt-BR ,en", "<b>", "/", "ü"]
URLS = ["a.jpg", "/b.png", "//cdn.x/c.gif", "https://h.com/d.jpg", "../e.jpg", "data:image/gif;base64,AA", "",
        "http://", "mailto:x", " https://h.com/sp.jpg ", "x\ty.jpg", "?q", "#f", "HTTP://UP.COM/X.JPG", "é.jpg"]
LANG_KEYS = ["Content-Language", "content-language", "CONTENT-LANGUAGE", "language", "Language", "LaNgUaGe",
             "x-language", "viewport", "", "langue", "description"]


def _text(r: random.Random) -> str:
    if r.random() < 0.6:
        return r.choice(WORDS)
    return "".join(r.choice("abc &;#<>\u00e9\u4e2d ") for _ in range(r.randint(0, 12)))


def _maybe(r: random.Random, d: dict, key: str, value: Any, p: float) -> None:
    if r.random() < p:
        d[key] = value


def varied_record(r: random.Random, i: int) -> bytes:
    """A well-typed WAT response record with any of its fields missing, null or odd."""
    links = []
    for _ in range(r.randint(0, 12)):
        link: dict[str, Any] = {}
        _maybe(r, link, "path", r.choice(["IMG@/src", "IMG@/src", "IMG@/src", "A@/href", "IMG@/srcset", "LINK@/href"]),
               0.95)
        _maybe(r, link, "url", r.choice(URLS) if r.random() < 0.7 else _text(r), 0.9)
        _maybe(r, link, "alt", _text(r), 0.6)
        _maybe(r, link, "title", _text(r) if r.random() < 0.9 else None, 0.3)
        _maybe(r, link, "text", _text(r), 0.3)
        if r.random() < 0.1:
            link["alt"] = None
        links.append(link)
    metas = []
    for _ in range(r.randint(0, 4)):
        meta: dict[str, Any] = {}
        _maybe(r, meta, "name", r.choice(LANG_KEYS), 0.5)
        _maybe(r, meta, "http-equiv", r.choice(LANG_KEYS), 0.4)
        _maybe(r, meta, "content", _text(r) if r.random() < 0.9 else None, 0.9)
        metas.append(meta)
    html: dict[str, Any] = {}
    _maybe(r, html, "Head", {"Title": _text(r), **({"Metas": metas} if r.random() < 0.8 else {})}, 0.8)
    _maybe(r, html, "Links", links, 0.9)
    response: dict[str, Any] = {"Response-Message": {"Status": "200"}}
    headers = {"Server": "x", **({"Content-Language": _text(r)} if r.random() < 0.3 else {})}
    _maybe(r, response, "Headers", headers, 0.8)
    _maybe(r, response, "HTML-Metadata", html, 0.95)
    envelope: dict[str, Any] = {"Format": "WARC"}
    uri = r.choice([f"https://s{i}.com/p/{i}.html", f"http://h.org/{i}", "HTTPS://Up.com", "ftp://x/",
                    f"https://e.com/a/b/{i}/"])
    _maybe(r, envelope, "WARC-Header-Metadata",
           {"WARC-Type": "response", **({"WARC-Target-URI": uri} if r.random() < 0.95 else {})}, 0.97)
    _maybe(r, envelope, "Payload-Metadata", {"HTTP-Response-Metadata": response}, 0.97)
    text = json.dumps({"Container": {"Filename": "f"}, "Envelope": envelope}, ensure_ascii=r.random() < 0.3,
                      separators=(",", ":") if r.random() < 0.7 else (", ", ": "))
    return (text.replace("/", "\\/") if r.random() < 0.1 else text).encode()


def write_corpus(path: Path) -> None:
    """watgen pages (languages on every third) then 600 varied records, in one WAT file."""
    pages = [wat_page_records(url, images, anchors_per_page=5, lang=["en", "de-DE, fr", " PT-br "][n % 3])
             if n % 3 == 0 else wat_page_records(url, images, anchors_per_page=5)
             for n, (url, images) in enumerate(synthetic_pages(60, 6))]
    r = random.Random(17)
    varied = [member(varied_record(r, i)) for i in range(600)]
    path.write_bytes(warcinfo_record("corpus") + b"".join(pages) + b"".join(varied))


def corpus_output(path: Path) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    with open(path, "rb") as fh:
        table, sizes = extract_file(fh, CandidateRules(), "corpus", "CC-MAIN-2024-22", counts)
    columns = ["url", "text", "page_url", "page_lang", "alt_kind"]
    return {"rows": [[row[c] for c in columns] for row in table.select(columns).to_pylist()],
            "counts": dict(sorted(counts.items())), "sizes": sizes}


def test_reader_gives_the_saved_output_of_the_readers_it_replaced(tmp_path):
    path = tmp_path / "corpus.warc.wat.gz"
    write_corpus(path)
    got = corpus_output(path)
    expected = json.loads(EXPECTED.read_text(encoding="utf-8"))
    assert got["counts"] == expected["counts"]
    assert got["sizes"] == expected["sizes"]
    assert len(got["rows"]) == len(expected["rows"])
    for n, (row, saved) in enumerate(zip(got["rows"], expected["rows"], strict=True)):
        assert row == saved, n
    assert len({row[3] for row in got["rows"]}) > 10  # many declared languages are in it


# ------------------------------------------------------------------ against json.loads
def _token(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    return value.split(",")[0].strip().lower() or None


def reference(bodies: list[bytes]) -> tuple[list[tuple], Counter[str]]:
    """The reader's rules, one json.loads per record: per page with images and a URL, (page_url,
    page_lang, [(src, alt, title), ...]); and the record counts."""
    pages, counts = [], Counter()
    for body in bodies:
        envelope = json.loads(body).get("Envelope") or {}
        response = (envelope.get("Payload-Metadata") or {}).get("HTTP-Response-Metadata") or {}
        html = response.get("HTML-Metadata") or {}
        links = html.get("Links") or []
        images = [(x.get("url"), x.get("alt"), x.get("title")) for x in links if x.get("path") == "IMG@/src"]
        counts["non_image_links_ignored"] += len(links) - len(images)
        uri = (envelope.get("WARC-Header-Metadata") or {}).get("WARC-Target-URI")
        if not images:
            counts["record_no_images"] += 1
            continue
        if not isinstance(uri, str):
            counts["record_no_target_uri"] += 1
            continue
        counts["record_with_images"] += 1
        lang = None
        for meta in (html.get("Head") or {}).get("Metas") or []:
            key = meta.get("http-equiv") if meta.get("http-equiv") is not None else meta.get("name")
            if isinstance(key, str) and key.lower() in ("content-language", "language") and _token(meta.get("content")):
                lang = _token(meta.get("content"))
                break
        lang = lang or _token((response.get("Headers") or {}).get("Content-Language"))
        pages.append((uri, lang, images))
    return pages, +counts


def read(bodies: list[bytes]) -> tuple[list[tuple], Counter[str]]:
    """parse_wat_block's pages in the shape of `reference`."""
    counts: Counter[str] = Counter()
    batch = parse_wat_block(bodies, counts)
    links = list(zip(batch.src.to_pylist(), batch.alt.to_pylist(), batch.title.to_pylist(), strict=True))
    per_page: dict[int, list] = {}
    for page, link in zip(batch.link_page.to_pylist(), links, strict=True):
        per_page.setdefault(page, []).append(link)
    urls, langs = batch.page_url.to_pylist(), batch.page_lang.to_pylist()
    return [(urls[p], langs[p], per_page[p]) for p in sorted(per_page)], +counts


# Language values from an alphabet on which Python's and Arrow's lower-casing and trimming agree.
lang_text = st.text(st.sampled_from("abcDEF-, é中\t"), max_size=8)
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["IMG@/src", "A@/href", "café", "\U0001f600", "a\nb", "\\", '"q"', "/x.jpg"])


def _opt(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly `strategy`, sometimes null."""
    return st.integers(0, 9).flatmap(lambda i: st.none() if i == 0 else strategy)


@st.composite
def _dict(draw: st.DrawFn, fields: dict[str, st.SearchStrategy]) -> dict:
    """A JSON object with most of `fields` and sometimes an extra key."""
    out = {key: draw(value) for key, value in fields.items() if draw(st.integers(0, 9)) > 0}
    if draw(st.booleans()):
        out["Extra"] = draw(texts | st.integers() | st.just([{"a": [1]}]))
    return out


def _obj(fields: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    return _dict(fields)


link = _obj({"path": _opt(st.sampled_from(["IMG@/src", "A@/href", "IMG@/srcset"]) | texts), "url": _opt(texts),
             "alt": _opt(texts), "title": _opt(texts), "text": texts})
meta = _obj({"name": _opt(st.sampled_from(LANG_KEYS) | texts), "http-equiv": _opt(st.sampled_from(LANG_KEYS)),
             "content": _opt(lang_text)})
html = _obj({"Head": _opt(_obj({"Title": texts, "Metas": _opt(st.lists(meta, max_size=4))})),
             "Links": _opt(st.lists(link, max_size=6))})
response = _obj({"Headers": _opt(_obj({"Content-Language": _opt(lang_text), "Server": texts})),
                 "HTML-Metadata": _opt(html)})
envelope = _obj({"WARC-Header-Metadata": _opt(_obj({"WARC-Type": texts, "WARC-Target-URI": _opt(texts)})),
                 "Payload-Metadata": _opt(_obj({"HTTP-Response-Metadata": _opt(response)}))})
record = _obj({"Container": _obj({"Filename": texts}), "Envelope": _opt(envelope)})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.tuples(record, st.booleans()), min_size=1, max_size=4))
def test_reader_agrees_with_json_loads(docs):
    bodies = [json.dumps(doc, ensure_ascii=ascii_only).encode() for doc, ascii_only in docs]
    assert read(bodies) == reference(bodies)


# ------------------------------------------------------------------ hostile records
GOOD = (b'{"Envelope":{"WARC-Header-Metadata":{"WARC-Target-URI":"https://site.com/bad"},"Payload-Metadata":'
        b'{"HTTP-Response-Metadata":{"Headers":{"Server":"x"},"HTML-Metadata":{"Head":{"Metas":[]},'
        b'"Links":[{"path":"IMG@/src","url":"/x.jpg","alt":"fine","rel":0}]}}}}}')
DEEP = b"[" * 100_000 + b"]" * 100_000

HOSTILE = {
    # valid JSON of the wrong shape
    "links_a_string": (GOOD.replace(b'"Links":[', b'"Links":"x","L":['), "record_invalid_wat"),
    "link_null": (GOOD.replace(b'"Links":[', b'"Links":[null,'), "record_invalid_wat"),
    "link_a_number": (GOOD.replace(b'"Links":[', b'"Links":[7,'), "record_invalid_wat"),
    "envelope_an_array": (b'{"Envelope":[' + GOOD[len(b'{"Envelope":'):-1] + b"]}", "record_invalid_wat"),
    "metas_an_object": (GOOD.replace(b'"Metas":[]', b'"Metas":{}'), "record_invalid_wat"),
    "headers_a_string": (GOOD.replace(b'"Headers":{"Server":"x"}', b'"Headers":"x"'), "record_invalid_wat"),
    "envelope_a_string": (b'{"Envelope":"IMG@/src"}', "record_invalid_wat"),
    # numbers past what a Python value can take, where ingest reads them
    "huge_integer_url": (GOOD.replace(b'"/x.jpg"', b"1" + b"0" * 5000), "record_invalid_wat"),
    "huge_float_alt": (GOOD.replace(b'"fine"', b"1e400"), "record_invalid_wat"),
    # not JSON
    "truncated": (GOOD[:-3], "record_invalid_json"),
    "trailing_data": (GOOD + b' {"more":1}', "record_invalid_json"),
    "raw_control_character": (GOOD.replace(b'"fine"', b'"fi\x01ne"'), "record_invalid_json"),
    "lone_surrogate_escape": (GOOD.replace(b'"fine"', b'"\\ud800"'), "record_invalid_json"),
    "nan": (GOOD.replace(b'"rel":0', b'"rel":NaN'), "record_invalid_json"),
    "leading_zero": (GOOD.replace(b'"rel":0', b'"rel":01'), "record_invalid_json"),
    # nested past the recursion limit, in a field ingest never reads
    "deep_nesting": (GOOD.replace(b'"rel":0', b'"rel":' + DEEP), "record_too_deep"),
    # invalid UTF-8 in a string ingest reads
    "non_utf8_alt": (GOOD.replace(b'"fine"', b'"caf\xe9 \xff"'), "record_invalid_utf8"),
    "overlong_utf8_url": (GOOD.replace(b'"/x.jpg"', b'"/\xc0\xaf.jpg"'), "record_invalid_utf8"),
    "utf8_surrogate_uri": (GOOD.replace(b"https://site.com/bad", b"https://\xed\xa0\x80.com/"), "record_invalid_utf8"),
}


def _page(i: int) -> bytes:
    return wat_page_records(f"https://site.com/p{i}", [(f"/img/{i}.jpg", f"picture {i}")])


@pytest.mark.fault("ingest", "WAT record of hostile JSON: wrong types, truncated or trailing data, huge numbers, "
                   "nesting 100,000 deep, invalid UTF-8, lone surrogates, NaN",
                   "that record is skipped and counted (record_invalid_wat, _invalid_json, _too_deep, "
                   "_invalid_utf8); every other page is kept")
@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_record_is_skipped_and_counted(tmp_path, kind):
    body, reason = HOSTILE[kind]
    pages = [_page(i) for i in range(5)]
    path = tmp_path / "h.warc.wat.gz"
    path.write_bytes(warcinfo_record("h") + b"".join(pages[:2]) + member(body) + b"".join(pages[2:]))
    counts: Counter[str] = Counter()
    with open(path, "rb") as fh:
        table, _ = extract_file(fh, CandidateRules(), str(path), "", counts)
    assert table.column("page_url").to_pylist() == [f"https://site.com/p{i}" for i in range(5)]
    assert counts[reason] == 1
    assert counts["record_with_images"] == 5


@pytest.mark.fault("ingest", "WAT record with a huge number, invalid UTF-8 or deep nesting in a field ingest does "
                   "not read", "the record is read as usual: skipped fields are never decoded")
@pytest.mark.parametrize("odd", [b"1" + b"0" * 5000, b"1e400", b'"\xff\xfe"', b"[" * 200 + b"]" * 200],
                         ids=["huge_integer", "huge_float", "non_utf8", "nested_200_deep"])
def test_odd_values_in_unread_fields_cost_nothing(odd):
    body = GOOD.replace(b'"rel":0', b'"rel":' + odd)
    assert read([body]) == read([GOOD]) == ([("https://site.com/bad", None, [("/x.jpg", "fine", None)])],
                                            Counter(record_with_images=1))


@st.composite
def hostile_body(draw: st.DrawFn) -> bytes:
    """A record of generated JSON, then maybe damaged: a byte inserted, data appended, a value swapped
    for one of another type."""
    raw = json.dumps(draw(record), ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    damage = draw(st.integers(0, 5))
    if damage == 0 and len(raw) > 2:
        i = draw(st.integers(1, len(raw) - 1))
        insert = draw(st.sampled_from([b"\xff", b"\x01", b"\n", b"\\", b'"', b"}", b"[", b"\xc3", b"1e999"]))
        raw = raw[:i] + insert + raw[i:]
    elif damage == 1:
        raw += draw(st.sampled_from([b" {}", b"x", b"]"]))
    elif damage == 2:
        key = draw(st.sampled_from([b'"Links"', b'"Metas"', b'"Envelope"', b'"Headers"', b'"url"', b'"path"']))
        swap = draw(st.sampled_from([b'"s"', b"1", b"[]", b"{}", b"null", b"true", b"[1]", b"1" + b"0" * 30]))
        raw = raw.replace(key + b": ", key + b": " + swap + b', "was": ', 1)
    return raw


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(hostile_body(), min_size=1, max_size=5))
def test_a_hostile_record_costs_only_itself(bodies):
    counts: Counter[str] = Counter()
    parse_wat_block(bodies, counts)  # never raises
    assert sum(n for reason, n in counts.items() if reason.startswith("record_")) == len(bodies)
    # Each record reads the same alone as in the block: a bad one changes nothing for the others.
    alone = [read([body]) for body in bodies]
    assert read(bodies) == ([page for pages, _ in alone for page in pages], sum((c for _, c in alone), Counter()))
