"""MetaCLIP's substring rule, implemented with Aho-Corasick over whole batches of captions.

Three rules (`rule`, docs/balance.md "The matching rule"):
- "metaclip" — MetaCLIP's metaclip/substr_matching.py: the caption is wrapped as f" {text} ", each
  of METACLIP_PUNCTUATION gets a space on both sides, tab, newline and carriage return become spaces (nothing else:
  no collapsing of runs, no other whitespace); entries are used raw as f" {entry} ". So an entry
  containing one of that punctuation can never match, and neither can "hot dog" in "hot  dog".
- "metaclip2" — MetaCLIP 2's metaclip/curation/substr_matching.py: the caption is first
  `str.strip()`ped, then spaced as above; an entry gets a space on its left unless its first
  character is CJK-or-similar (CJK ideographs and radicals, Thai, Lao, Burmese, Khmer, Tibetan, or
  punctuation: `string.punctuation` plus MetaCLIP 2's full-width list), and on its right likewise
  for its last character. Kana are not in those ranges: "ねこ" is padded and needs spaces around it.
- "normalized" — curate's own: caption and entry are both spaced with PUNCTUATION (MetaCLIP's plus
  the full-width `，。；：？！`), every whitespace run (`str.isspace`) becomes one space, ends are
  stripped; in a language of `unspaced_languages` there is no padding at all (a plain substring),
  elsewhere " entry " must occur in " caption ".
With the MetaCLIP rules several entries that give the same pattern behave as in pyahocorasick's
`add_word`: the last one replaces the others, which never match; "normalized" counts them all.
Matching is case-sensitive as in MetaCLIP unless `lowercase` is set.

Speed: captions are spaced with pyarrow regex kernels (no Python per caption), joined into one
string with a newline between them (spacing removes newlines from captions and no pattern contains one, so a
match cannot straddle two captions), and the automaton scans that string once; the hits' end
offsets are mapped back to captions with numpy.
"""

from __future__ import annotations

import itertools
import string
import sys
from dataclasses import dataclass, field
from typing import Any, Literal

import ahocorasick
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

Rule = Literal["metaclip", "metaclip2", "normalized"]
RULES: tuple[str, ...] = ("metaclip", "metaclip2", "normalized")

# The characters MetaCLIP (both versions) puts spaces around in captions.
METACLIP_PUNCTUATION = ",.;:?!`"
# "normalized" rule: MetaCLIP's list plus their full-width forms (not MetaCLIP's rule: a deviation).
PUNCTUATION = METACLIP_PUNCTUATION + "，。；：？！"
# MetaCLIP 2's is_punctuation: string.punctuation plus its `additional_punctuation`.
METACLIP2_EXTRA_PUNCTUATION = "，。、；：？！“”‘’（）【】《》〈〉「」『』～—"
# MetaCLIP 2's is_cjk_or_similar code point ranges (inclusive).
METACLIP2_UNSPACED_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF), (0x2CEB0, 0x2EBEF), (0xF900, 0xFAFF), (0x2E80, 0x2EFF), (0x2F00, 0x2FDF),
    (0x2FF0, 0x2FFF),  # CJK
    (0x0E00, 0x0E7F), (0x0E80, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x0F00, 0x0FFF),  # th lo my km bo
)
# Exactly the characters Python's str.isspace() accepts, so the reference rule (`str.split`) and
# the RE2 kernel agree.
WHITESPACE = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())

def _class(chars: str) -> str:
    return "[" + "".join(f"\\x{{{ord(c):x}}}" for c in chars) + "]"


_PUNCT_RE = "(" + _class(PUNCTUATION) + ")"
_METACLIP_PUNCT_RE = "(" + _class(METACLIP_PUNCTUATION) + ")"
_SPACE_RE = _class(WHITESPACE) + "+"
_SEPARATOR = "\n"

# Scripts written without spaces between words (MetaCLIP 2 builds their metadata with word
# segmenters and matches without padding); codes as fastText lid.176 emits them.
DEFAULT_UNSPACED_LANGUAGES = ("zh", "ja", "th", "km", "lo", "my", "bo", "yue", "wuu")


# ------------------------------------------------------------------ the rule, one string at a time
def spacing_reference(text: str, lowercase: bool = False) -> str:
    """The rule written plainly, for tests and the brute-force benchmark peer."""
    if lowercase:
        text = text.lower()
    for p in PUNCTUATION:
        text = text.replace(p, f" {p} ")
    return " ".join(text.split())


def brute_force_match(caption: str, entries: list[str], *, spaced: bool = True, lowercase: bool = False) -> list[int]:
    """MetaCLIP's loop: test every entry against the caption. O(len(entries)) per caption."""
    text = spacing_reference(caption, lowercase)
    out = []
    if spaced:
        text = f" {text} "
        for i, entry in enumerate(entries):
            e = spacing_reference(entry, lowercase)
            if e and f" {e} " in text:
                out.append(i)
    else:
        for i, entry in enumerate(entries):
            e = spacing_reference(entry, lowercase)
            if e and e in text:
                out.append(i)
    return out


def is_cjk_or_similar(char: str) -> bool:
    """MetaCLIP 2's test for an entry's first/last character: no space padding on that side."""
    code = ord(char)
    if any(lo <= code <= hi for lo, hi in METACLIP2_UNSPACED_RANGES):
        return True
    return char in string.punctuation or char in METACLIP2_EXTRA_PUNCTUATION


def entry_pattern(entry: str, rule: Rule, *, spaced: bool = True, lowercase: bool = False) -> str:
    """The string an entry must occur as in the spaced, padded caption ("" if it can never match)."""
    if lowercase:
        entry = entry.lower()
    if rule == "normalized":
        e = spacing_reference(entry)
        return (f" {e} " if spaced else e) if e else ""
    if not entry or "\n" in entry:  # spaced captions hold no "\n"
        return ""
    if rule == "metaclip":
        return f" {entry} "
    left = "" if is_cjk_or_similar(entry[0]) else " "
    right = "" if is_cjk_or_similar(entry[-1]) else " "
    return f"{left}{entry}{right}"


# ---------------------------------------------------------------------------- vectorised spacing
def spacing(texts: pa.Array | pa.ChunkedArray, lowercase: bool = False, rule: Rule = "normalized") -> pa.Array:
    """The caption before padding, over a whole column with pyarrow kernels; nulls become "".
    "normalized": spacing_reference; the MetaCLIP rules: their spacing() of the caption (MetaCLIP 2:
    after str.strip()) without the two pad spaces, which LanguageMatcher.match adds."""
    arr = pc.fill_null(texts.cast(pa.string()), "")
    if lowercase:
        arr = pc.utf8_lower(arr)
    if rule != "normalized":
        if rule == "metaclip2":
            arr = pc.utf8_trim(arr, characters=WHITESPACE)  # Python's str.strip()
        arr = pc.replace_substring_regex(arr, pattern=_METACLIP_PUNCT_RE, replacement=" \\1 ")
        arr = pc.replace_substring_regex(arr, pattern="[\t\n\r]", replacement=" ")
        return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    arr = pc.replace_substring_regex(arr, pattern=_PUNCT_RE, replacement=" \\1 ")
    arr = pc.replace_substring_regex(arr, pattern=_SPACE_RE, replacement=" ")
    arr = pc.utf8_trim(arr, characters=" ")
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr


# -------------------------------------------------------------------------------- the automaton
@dataclass
class LanguageMatcher:
    """One language's automaton. Several entries may space to the same pattern; a pattern's value
    indexes a CSR table (group_offsets, group_entries) of the global entry ids it stands for."""

    automaton: Any
    spaced: bool  # captions are padded with one space each side (always, under the MetaCLIP rules)
    group_offsets: np.ndarray  # int64[n_patterns + 1]
    group_entries: np.ndarray  # int32[sum]
    n_entries: int
    n_empty: int  # entries that space to "" and can never match

    def match(self, spaced_captions: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(caption index, entry id) for every distinct match, sorted by caption then entry."""
        n = len(spaced_captions)
        if n == 0 or self.group_offsets.size <= 1:
            return np.empty(0, np.int64), np.empty(0, np.int32)
        texts = spaced_captions.to_pylist()
        pad = " " if self.spaced else ""
        joined = pad + f"{pad}{_SEPARATOR}{pad}".join(texts) + pad
        # Start offset of each caption (incl. its padding) inside `joined`, in code points.
        lengths = pc.utf8_length(spaced_captions).to_numpy(zero_copy_only=False).astype(np.int64) + 2 * len(pad)
        starts = np.zeros(n, np.int64)
        np.cumsum(lengths[:-1] + len(_SEPARATOR), out=starts[1:])
        flat = np.fromiter(itertools.chain.from_iterable(self.automaton.iter(joined)), dtype=np.int64)
        if flat.size == 0:
            return np.empty(0, np.int64), np.empty(0, np.int32)
        ends, groups = flat[0::2], flat[1::2]
        rows = np.searchsorted(starts, ends, side="right") - 1
        # Expand pattern groups to entry ids (almost always one entry per pattern).
        sizes = self.group_offsets[groups + 1] - self.group_offsets[groups]
        rows = np.repeat(rows, sizes)
        first = np.repeat(self.group_offsets[groups], sizes)
        within = np.arange(rows.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        entries = self.group_entries[first + within].astype(np.int64)
        # An entry occurring twice in a caption counts once, as in MetaCLIP.
        key = np.unique(rows * np.int64(2**31) + entries)
        return key // np.int64(2**31), (key % np.int64(2**31)).astype(np.int32)


def build_language_matcher(
    entries: list[str], first_id: int, *, spaced: bool, lowercase: bool = False, rule: Rule = "normalized"
) -> LanguageMatcher:
    """Automaton over one language's entries; global ids are first_id + position."""
    by_pattern: dict[str, list[int]] = {}
    n_empty = 0
    if rule == "normalized":
        spaced_entries = spacing(pa.array(entries, pa.string()), lowercase).to_pylist()
        for i, e in enumerate(spaced_entries):
            if not e:
                n_empty += 1
                continue
            by_pattern.setdefault(f" {e} " if spaced else e, []).append(first_id + i)
    else:
        spaced = True
        for i, entry in enumerate(entries):
            pattern = entry_pattern(entry, rule, lowercase=lowercase)
            if not pattern:
                n_empty += 1
                continue
            by_pattern[pattern] = [first_id + i]  # as add_word: a repeated pattern keeps the last entry
    automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
    offsets = np.zeros(len(by_pattern) + 1, np.int64)
    flat: list[int] = []
    # Sorted insertion allocates trie nodes that share a prefix next to each other: ~15% faster scans.
    for gid, (pattern, ids) in enumerate(sorted(by_pattern.items())):
        automaton.add_word(pattern, gid)
        flat.extend(ids)
        offsets[gid + 1] = len(flat)
    if by_pattern:
        automaton.make_automaton()
    return LanguageMatcher(automaton, spaced, offsets, np.asarray(flat, np.int32), len(entries), n_empty)


@dataclass
class Matcher:
    """Automata for every metadata language. `languages` maps a language code (or "*" for
    metadata that applies to every caption) to its matcher."""

    languages: dict[str, LanguageMatcher] = field(default_factory=dict)
    lowercase: bool = False
    rule: Rule = "normalized"

    def space(self, captions: pa.Array | pa.ChunkedArray) -> pa.Array:
        return spacing(captions, self.lowercase, self.rule)

    def match(self, captions: pa.Array | pa.ChunkedArray, language: str = "*") -> tuple[np.ndarray, np.ndarray]:
        return self.languages[language].match(self.space(captions))


def build_matcher(
    entries_by_language: dict[str, list[str]],
    *,
    unspaced_languages: tuple[str, ...] | list[str] = DEFAULT_UNSPACED_LANGUAGES,
    lowercase: bool = False,
    rule: Rule = "normalized",
) -> tuple[Matcher, dict[str, int]]:
    """Build every language's automaton; returns the matcher and each language's first entry id
    (entry ids are global: languages are numbered one after another in the given order).
    `unspaced_languages` applies to the "normalized" rule only."""
    matcher = Matcher(lowercase=lowercase, rule=rule)
    first_ids: dict[str, int] = {}
    next_id = 0
    for lang, entries in entries_by_language.items():
        first_ids[lang] = next_id
        matcher.languages[lang] = build_language_matcher(
            entries, next_id, spaced=lang not in set(unspaced_languages), lowercase=lowercase, rule=rule
        )
        next_id += len(entries)
    return matcher, first_ids


# ------------------------------------------------- one automaton per worker process, not per shard
_WORKER_CACHE: dict[str, Matcher] = {}


class SharedMatcher:
    """A handle that travels in a stage's settings. On Ray it carries an ObjectRef to the matcher
    put once in the object store; a worker fetches it on its first shard and keeps it for the
    rest (keyed by fingerprint), so no shard rebuilds or re-fetches the automaton."""

    def __init__(self, matcher: Matcher, fingerprint: str, use_ray: bool) -> None:
        self.fingerprint = fingerprint
        self._local: Matcher | None = None
        self._ref: Any = None
        if use_ray:
            import ray

            self._ref = ray.put(matcher)
        else:
            self._local = matcher
        _WORKER_CACHE.clear()
        _WORKER_CACHE[fingerprint] = matcher

    def get(self) -> Matcher:
        cached = _WORKER_CACHE.get(self.fingerprint)
        if cached is not None:
            return cached
        if self._local is not None:
            matcher = self._local
        else:
            import ray

            matcher = ray.get(self._ref)
        _WORKER_CACHE.clear()  # one metadata set per worker at a time: automata are large
        _WORKER_CACHE[self.fingerprint] = matcher
        return matcher
