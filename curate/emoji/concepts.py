"""Emoji concepts drawn by every vendor: one codepoint each, with an English name, keywords and
names in other languages, and the seeded choice of N of them that the pool and the eval set share.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

from curate.emoji import vendors
from curate.extras import require

OTHER_LANGUAGES = ("es", "fr", "de", "it", "pt", "ru", "ja", "ko", "zh", "tr", "ar", "fa", "id")
CONCEPT_STREAM = 0  # the seed's sub-stream that picks concepts; other uses of the seed take other streams
# OpenMoji's own additions and Unicode's unassigned extras are not emoji the other vendors draw.
_SKIP_GROUPS = {"extras-openmoji", "extras-unicode", "component", "flags"}
_WORDY = re.compile(r"[^\W\d_]{2}")  # a tag worth captioning has two letters in a row ("c", "!!" are not)


@dataclass(frozen=True)
class Concept:
    emoji: str  # fully-qualified form (may end in U+FE0F)
    name: str  # CLDR short name in English, e.g. "red apple"
    keywords: tuple[str, ...]  # CLDR and OpenMoji tags, without the words of the name
    names: tuple[tuple[str, str], ...]  # (language, name) from the emoji package

    @property
    def codepoint(self) -> int:
        return ord(self.emoji[0])

    @property
    def hexcode(self) -> str:
        return f"{self.codepoint:04X}"

    def codepoints(self) -> list[str]:
        return [f"U+{ord(ch):04X}" for ch in self.emoji]


def _emoji_names(text: str, data: dict) -> tuple[tuple[str, str], ...]:
    out = []
    for lang in OTHER_LANGUAGES:
        name = data.get(lang)
        if name:
            out.append((lang, name.strip(":").replace("_", " ")))
    return tuple(out)


@functools.lru_cache(maxsize=4)
def _eligible(roots: tuple[str, ...], noto: str) -> tuple[Concept, ...]:
    emoji = require("emoji", "emoji", "naming emoji concepts in other languages")
    emoji.config.load_language(list(OTHER_LANGUAGES))
    openmoji = {e["hexcode"]: e for e in vendors.openmoji_data()}
    font = vendors.noto_font_object()
    qualified = emoji.STATUS["fully_qualified"]
    out = []
    for text, data in emoji.EMOJI_DATA.items():
        base = text.removesuffix("\ufe0f")
        if data.get("status") != qualified or len(base) != 1:
            continue  # sequences (ZWJ, flags, keycaps, skin tones) are not single concepts
        cp = ord(base)
        om = openmoji.get(f"{cp:04X}")
        if om is None or om.get("skintone") or om.get("group") in _SKIP_GROUPS:
            continue
        if not (vendors.svg_path("openmoji", cp).is_file() and vendors.svg_path("twemoji", cp).is_file()):
            continue
        if not vendors.noto_has(font, text):
            continue
        name = om["annotation"].strip()
        words = set(name.lower().split())
        tags = [t.strip() for t in f"{om.get('tags', '')},{om.get('openmoji_tags', '')}".split(",")]
        keywords = tuple(dict.fromkeys(t for t in tags if _WORDY.search(t) and t.lower() not in words))
        names = _emoji_names(text, data)
        if names:
            out.append(Concept(text, name, keywords, names))
    out.sort(key=lambda c: c.codepoint)
    # CLDR names are unique, but keep the class list unambiguous whatever the data says.
    seen: set[str] = set()
    return tuple(c for c in out if not (c.name in seen or seen.add(c.name)))


def eligible_concepts() -> list[Concept]:
    """Every single-codepoint, fully-qualified emoji that OpenMoji, Twemoji and Noto all draw, by codepoint."""
    noto = str(vendors.noto_font())
    roots = tuple(str(vendors.package_dir(v)) for v in vendors.POOL_VENDORS)
    return list(_eligible(roots, noto))


def choose_concepts(n: int | None, seed: int) -> list[Concept]:
    """n concepts picked by `seed` (all of them for None), in codepoint order: class i is the i-th."""
    pool = eligible_concepts()
    if n is None:
        return pool
    if not 1 <= n <= len(pool):
        raise ValueError(f"concepts must be between 1 and {len(pool)}, got {n}")
    rng = np.random.default_rng([seed, CONCEPT_STREAM])
    picked = np.sort(rng.choice(len(pool), size=n, replace=False))
    return [pool[int(i)] for i in picked]
