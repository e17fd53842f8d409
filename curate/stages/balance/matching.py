"""MetaCLIP's substring rule, implemented with Aho-Corasick over whole batches of captions.

The rule (MetaCLIP `substr_matching`, extended as MetaCLIP 2 does for unspaced scripts):
- a caption and an entry are *spaced*: each of PUNCTUATION gets a space on both sides, every run
  of whitespace (anything `str.isspace`) becomes one space, ends are stripped;
- in a language written with spaces, an entry matches when " entry " occurs in " caption " — so a
  match always covers whole space-delimited tokens; in a language written without spaces (zh, ja,
  th, …) there is no padding and the spaced entry is a plain substring of the spaced caption.

Entries are spaced like captions (MetaCLIP spaces only captions, so its entries that contain one
of PUNCTUATION could never match; here "St. Louis" matches "St. Louis"). Matching is
case-sensitive as in MetaCLIP unless `lowercase` is set.

Speed: captions are spaced with pyarrow regex kernels (no Python per caption), joined into one
string with "\n" between them ("\n" is whitespace, so it never survives spacing and no pattern
contains it: a match cannot straddle two captions), and the automaton scans that string once; the
hits' end offsets are mapped back to captions with numpy.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field
from typing import Any

import ahocorasick
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# MetaCLIP's list, plus their full-width forms, which CJK-era captions use in the same role.
PUNCTUATION = ",.;:?!`，。；：？！"
# Exactly the characters Python's str.isspace() accepts, so the reference rule (`str.split`) and
# the RE2 kernel agree.
WHITESPACE = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())

_PUNCT_RE = "([" + "".join(f"\\x{{{ord(c):x}}}" for c in PUNCTUATION) + "])"
_SPACE_RE = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in WHITESPACE) + "]+"
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


# ---------------------------------------------------------------------------- vectorised spacing
def spacing(texts: pa.Array | pa.ChunkedArray, lowercase: bool = False) -> pa.Array:
    """spacing_reference over a whole column with pyarrow kernels; nulls become ""."""
    arr = pc.fill_null(texts.cast(pa.string()), "")
    if lowercase:
        arr = pc.utf8_lower(arr)
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
    spaced: bool
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
    entries: list[str], first_id: int, *, spaced: bool, lowercase: bool = False
) -> LanguageMatcher:
    """Automaton over one language's entries; global ids are first_id + position."""
    spaced_entries = spacing(pa.array(entries, pa.string()), lowercase).to_pylist()
    by_pattern: dict[str, list[int]] = {}
    n_empty = 0
    for i, e in enumerate(spaced_entries):
        if not e:
            n_empty += 1
            continue
        by_pattern.setdefault(f" {e} " if spaced else e, []).append(first_id + i)
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

    def match(self, captions: pa.Array | pa.ChunkedArray, language: str = "*") -> tuple[np.ndarray, np.ndarray]:
        return self.languages[language].match(spacing(captions, self.lowercase))


def build_matcher(
    entries_by_language: dict[str, list[str]],
    *,
    unspaced_languages: tuple[str, ...] | list[str] = DEFAULT_UNSPACED_LANGUAGES,
    lowercase: bool = False,
) -> tuple[Matcher, dict[str, int]]:
    """Build every language's automaton; returns the matcher and each language's first entry id
    (entry ids are global: languages are numbered one after another in the given order)."""
    matcher = Matcher(lowercase=lowercase)
    first_ids: dict[str, int] = {}
    next_id = 0
    for lang, entries in entries_by_language.items():
        first_ids[lang] = next_id
        matcher.languages[lang] = build_language_matcher(
            entries, next_id, spaced=lang not in set(unspaced_languages), lowercase=lowercase
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
