"""The C scanner of WAT blocks (curate/stages/ingest/_watlinks.c) against Arrow's JSON reader.

Wherever the scanner accepts a block, parse_wat_block must give exactly what the Arrow path
gives (links, languages, counts); wherever it is unsure it must hand the block over. Records are
generated as JSON text with the oddities real crawls and hostile pages have: escapes, surrogate
pairs, lone surrogates, invalid UTF-8, control characters, repeated keys, wrong types, nulls,
newlines between tokens, trailing garbage.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curate.stages.ingest import watblock
from curate.stages.ingest.watblock import BlockRejected, parse_wat_block
from curate.testing.watgen import synthetic_pages, wat_page_records

pytestmark = pytest.mark.skipif(watblock._watlinks is None, reason="the C scanner was not built (no compiler)")


class Obj(list):
    """A JSON object as (key, value) pairs, so a key can repeat."""


def dump(value: Any, *, ascii_only: bool, spaced: bool, slash_escape: bool) -> str:
    sep, colon = (", ", ": ") if spaced else (",", ":")

    def text(s: str) -> str:
        out = json.dumps(s, ensure_ascii=ascii_only)
        return out.replace("/", "\\/") if slash_escape else out

    def go(v: Any) -> str:
        if isinstance(v, Obj):
            return "{" + sep.join(text(k) + colon + go(x) for k, x in v) + "}"
        if isinstance(v, list):
            return "[" + sep.join(go(x) for x in v) + "]"
        if isinstance(v, str):
            return text(v)
        return json.dumps(v)

    return go(value)


def parse_both(bodies: list[bytes]) -> tuple[Any, Any, bool]:
    """(scanner result, Arrow result, whether the scanner accepted); a result is the LinkBatch as
    Python values plus the counts, or the BlockRejected type."""
    accepted = watblock._watlinks.scan(bodies) is not None
    results = []
    for use_scanner in (True, False):
        watblock.USE_SCANNER = use_scanner
        counts: Counter[str] = Counter()
        try:
            batch = parse_wat_block(bodies, counts)
        except BlockRejected:
            results.append(BlockRejected)
            continue
        finally:
            watblock.USE_SCANNER = True
        results.append(({name: getattr(batch, name).to_pylist() for name in
                          ("page_url", "page_lang", "link_page", "src", "alt", "title")}, dict(counts)))
    return results[0], results[1], accepted


def assert_same(bodies: list[bytes]) -> bool:
    scanned, arrow, accepted = parse_both(bodies)
    if accepted:
        assert arrow is not BlockRejected, "the scanner accepted a block Arrow rejects"
        assert scanned == arrow
    return accepted


# ------------------------------------------------------------------ generated WAT (watgen)

@pytest.mark.parametrize("lang_every", [0, 1, 3])
def test_scanner_reads_generated_wat_like_arrow(lang_every):
    bodies = []
    for n, (page_url, images) in enumerate(synthetic_pages(300, 6)):
        lang = ["en", "de-DE, fr", " PT-br "][n % 3] if lang_every and n % lang_every == 0 else None
        records = gzip.decompress(wat_page_records(page_url, images, anchors_per_page=5, lang=lang))
        for chunk in records.split(b"WARC/1.0\r\n")[1:]:
            body = chunk[chunk.index(b"\r\n\r\n") + 4:].strip()
            if b"IMG@" in body:
                bodies.append(body)
    assert len(bodies) == 300
    assert assert_same(bodies), "the scanner should read watgen's records itself"


# ------------------------------------------------------------------ hypothesis

LANG_KEYS = ["Content-Language", "content-language", "CONTENT-LANGUAGE", "language", "Language", "LaNgUaGe",
             "x-language", "viewport", "", "langue"]
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["en", "EN-us, de", " fr ", "", "IMG@/src", "A@/href", "café", "日本語", "\U0001f600", "a\nb", "\\", '"q"'])
odd = st.one_of(st.none(), st.integers(-5, 10**20), st.floats(allow_nan=False, allow_infinity=False),
                st.booleans(), st.just([]), st.builds(Obj, st.just([])))


def maybe(strategy: st.SearchStrategy, percent_odd: int = 3) -> st.SearchStrategy:
    """Mostly `strategy`; `percent_odd` % of the time null or a value of another type."""
    return st.integers(0, 99).flatmap(lambda i: odd if i < percent_odd else strategy)


@st.composite
def obj(draw: st.DrawFn, fields: dict[str, st.SearchStrategy], repeat_keys: bool) -> Obj:
    pairs = [(k, draw(v)) for k, v in fields.items() if draw(st.integers(0, 9)) > 0]  # sometimes missing
    if repeat_keys and pairs and draw(st.integers(0, 19)) == 0:
        pairs.append(draw(st.sampled_from(pairs)))
    if draw(st.booleans()):
        pairs.insert(draw(st.integers(0, len(pairs))), ("Extra", draw(st.one_of(texts, odd))))
    return Obj(draw(st.permutations(pairs)) if draw(st.integers(0, 4)) == 0 else pairs)


def records(percent_odd: int, repeat_keys: bool) -> st.SearchStrategy:
    """WAT response records; with percent_odd 0 and no repeated keys, all of the expected types."""
    def m(strategy: st.SearchStrategy, pct: int = percent_odd) -> st.SearchStrategy:
        return maybe(strategy, pct) if pct else strategy

    def o(fields: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
        return obj(fields, repeat_keys)

    link = o({"path": m(st.sampled_from(["IMG@/src", "IMG@/src", "A@/href", "IMG@/srcset"]) | texts),
              "url": m(texts), "alt": m(texts), "title": m(texts), "text": texts})
    meta = o({"name": m(st.sampled_from(LANG_KEYS) | texts), "http-equiv": m(st.sampled_from(LANG_KEYS)),
              "content": m(texts)})
    html = o({"Head": m(o({"Title": texts, "Metas": m(st.lists(meta, max_size=4))})),
              "Links": m(st.lists(m(link, min(percent_odd, 1)), max_size=6))})
    response = o({"Headers": m(o({"Content-Language": m(texts), "Server": texts})), "HTML-Metadata": m(html)})
    envelope = o({"WARC-Header-Metadata": m(o({"WARC-Type": texts, "WARC-Target-URI": m(texts)})),
                  "Payload-Metadata": m(o({"HTTP-Response-Metadata": m(response)}))})
    return o({"Container": o({"Filename": texts}), "Envelope": m(envelope, min(percent_odd, 1))})


WELL_TYPED = records(0, repeat_keys=False)
HOSTILE = records(3, repeat_keys=True)


@st.composite
def body(draw: st.DrawFn) -> bytes:
    hostile = draw(st.booleans())
    text = dump(draw(HOSTILE if hostile else WELL_TYPED), ascii_only=draw(st.booleans()), spaced=draw(st.booleans()),
                slash_escape=draw(st.integers(0, 5)) == 0)
    raw = text.encode("utf-8", "surrogatepass")  # lone surrogates become invalid UTF-8
    damage = draw(st.integers(0, 30)) if hostile else 99
    if damage == 0 and len(raw) > 2:
        i = draw(st.integers(1, len(raw) - 1))
        raw = raw[:i] + draw(st.sampled_from([b"\xff", b"\x01", b"\n", b"\\", b'"', b"}", b" ", b"\xc3"])) + raw[i:]
    elif damage == 1:
        raw += draw(st.sampled_from([b" {}", b"x", b"\n", b"  "]))
    elif damage == 2:
        raw = raw.replace(b'"Envelope"', b'"Env\\u0065lope"')  # an escaped key
    return raw


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(body(), min_size=1, max_size=3))
def test_scanner_agrees_with_arrow_wherever_it_accepts(bodies):
    assert_same(bodies)


def test_scanner_gives_up_on_what_it_is_not_sure_of():
    good = (b'{"Envelope":{"WARC-Header-Metadata":{"WARC-Target-URI":"https://e.com/"},"Payload-Metadata":'
            b'{"HTTP-Response-Metadata":{"HTML-Metadata":{"Links":[{"path":"IMG@/src","url":"a.jpg","alt":"x"}]}}}}}')
    assert watblock._watlinks.scan([good]) is not None
    for bad in (
        good.replace(b'"x"', b'"\xff"'),                          # invalid UTF-8
        good.replace(b'"x"', b'"a\x01b"'),                        # raw control character
        good.replace(b'"x"', b'"\\ud800"'),                       # lone surrogate
        good.replace(b'"Links"', b'"Li\\u006eks"'),               # escaped key
        good.replace(b'"alt":"x"', b'"alt":"x","alt":"y"'),        # repeated key of interest
        good.replace(b'"alt":"x"', b'"alt":7'),                   # a number where a string belongs
        good.replace(b'"Links":[', b'"Links":[null,'),            # an element that is not an object
        good + b"x",                                              # trailing garbage
        good[:-1],                                                # cut short
        good.replace(b'"Envelope":{', b'"Envelope":{"n":01,'),    # a number JSON does not allow
    ):
        assert watblock._watlinks.scan([bad]) is None, bad
    assert watblock._watlinks.scan([good, b"[]"]) is None  # one odd record hands over the whole block


def test_escapes_and_surrogate_pairs_are_decoded():
    rec = (b'{"Envelope":{"WARC-Header-Metadata":{"WARC-Target-URI":"https:\\/\\/e.com\\/"},"Payload-Metadata":'
           b'{"HTTP-Response-Metadata":{"HTML-Metadata":{"Links":[{"path":"IMG@\\/src","url":"a.jpg",'
           b'"alt":"caf\\u00e9 \\ud83d\\ude00 \\"q\\" \\t\\\\"}]}}}}}')
    scanned, arrow, accepted = parse_both([rec])
    assert accepted and scanned == arrow
    assert scanned[0]["alt"] == ['café \U0001f600 "q" \t\\']
    assert scanned[0]["page_url"] == ["https://e.com/"]
