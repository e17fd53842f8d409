"""A seeded multilingual caption benchmark for language rules, built from data that ships in packages.

English captions: the English names (and GitHub shortcode aliases) of the PyPI `emoji` package's
EMOJI_DATA put into the templates emoji and icon sites caption their images with ("red apple emoji",
"apple icon", "emoji of a red apple - apple", ...). Non-English captions: the same emoji's names in
the package's other languages (es ja ko pt it fr de fa id zh ru tr ar; Unicode CLDR annotations),
bare or with that language's word for "emoji" / "icon" / "and". Optionally (`iso_codes=True`) the
English and translated country names of Debian's iso-codes (LGPL-2.1+, read from the system at run
time, nothing copied into curate) join both sides; they are not split into halves.

Every caption has 1 to 10 words (`len(text.split())`, DataComp's count) and is drawn so that each
length bin of LENGTH_BINS holds `per_bin` captions of each side. A non-English caption made only of
words that also occur in English names or templates ("pizza", "taxi", "ok") is left out: no
language identifier can be wrong about it.

`split` keeps tuning and evaluation apart: the emoji are halved by a hash of the emoji itself, so a
rule tuned on split="tune" is evaluated on emoji it never saw (split="eval"), and the seed picks
templates, partners and the sample.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from curate.extras import require

# (low, high) word counts, inclusive; the rows of the measured tables in docs/score.md.
LENGTH_BINS: tuple[tuple[int, int], ...] = ((1, 1), (2, 2), (3, 3), (4, 5), (6, 10))

# English templates of emoji/icon sites. {n}: name, {h}: its last word, {a}: a shortcode alias,
# {m}: a second emoji's name, {art}: "a"/"an".
EN_TEMPLATES: tuple[str, ...] = (
    "{n}", "{h}", "{a}", "{n} emoji", "{n} icon", "{h} icon", "{a} emoji", "emoji of {art} {n}",
    "emoji of {art} {n} - {a}", "{n} emoji png", "{n} emoji icon vector illustration", "cute {n} emoji sticker",
    "{n} emoji on a white background", "{n} and {m} emojis", "free {n} icon download", "{n} emoji meaning",
    "what does the {n} emoji mean", "{n} emoji copy and paste", "{h} icon set", "{n} icon flat design",
)

# Per language: the word for "emoji", for "icon", for "and", and whether words are written
# without spaces (ja, zh), so the template joins them directly.
LANG_WORDS: dict[str, tuple[str, str, str, bool]] = {
    "de": ("Emoji", "Symbol", "und", False),
    "es": ("emoji", "icono", "y", False),
    "fr": ("émoji", "icône", "et", False),
    "it": ("emoji", "icona", "e", False),
    "pt": ("emoji", "ícone", "e", False),
    "ru": ("эмодзи", "значок", "и", False),
    "tr": ("emojisi", "simgesi", "ve", False),
    "id": ("emoji", "ikon", "dan", False),
    "fa": ("ایموجی", "آیکون", "و", False),
    "ar": ("رمز تعبيري", "أيقونة", "و", False),
    "ko": ("이모티콘", "아이콘", "및", False),
    "ja": ("絵文字", "アイコン", "と", True),
    "zh": ("表情符号", "图标", "和", True),
}
OTHER_TEMPLATES: tuple[str, ...] = (
    "{n}", "{n} {E}", "{E} {n}", "{n} {I}", "{I} {n}", "{n} {and} {m}", "{E} {n} {and} {m}",
)

_SKIN_TONES = range(0x1F3FB, 0x1F400)
_WORD = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True)
class BenchCaption:
    text: str
    lang: str  # "en" or the language of the non-English name
    source: Literal["emoji", "iso-codes"]

    @property
    def words(self) -> int:
        return len(self.text.split())


def length_bin(words: int) -> str:
    """The LENGTH_BINS label ("1", "4-5", ...) of a word count, "" outside 1..10."""
    for low, high in LENGTH_BINS:
        if low <= words <= high:
            return str(low) if low == high else f"{low}-{high}"
    return ""


def _clean(name: str) -> str:
    return name.strip(":").replace("_", " ").strip()


def _emoji_names(split: Literal["tune", "eval", "all"]) -> list[dict[str, str | list[str]]]:
    emoji = require("emoji", "emoji", "the multilingual caption benchmark")

    for lang in LANG_WORDS:
        emoji.config.load_language(lang)  # the package loads non-English names on demand
    rows = []
    for char in sorted(emoji.EMOJI_DATA):
        data = emoji.EMOJI_DATA[char]
        # One row per emoji: skin-tone variants would repeat a name hundreds of times.
        if data["status"] != emoji.STATUS["fully_qualified"] or any(ord(c) in _SKIN_TONES for c in char):
            continue
        half = "tune" if hashlib.sha256(char.encode()).digest()[0] % 2 == 0 else "eval"
        if split not in ("all", half):
            continue
        row: dict[str, str | list[str]] = {lang: _clean(data[lang]) for lang in ("en", *LANG_WORDS)}
        row["alias"] = [_clean(a) for a in data.get("alias", [])]
        rows.append(row)
    return rows


def _iso_names() -> list[dict[str, str]]:
    """Country names (common and official) in English and the LANG_WORDS languages, from Debian's iso-codes."""
    import gettext
    import json

    source = Path("/usr/share/iso-codes/json/iso_3166-1.json")
    if not source.is_file():
        return []
    entries = json.loads(source.read_text(encoding="utf-8"))["3166-1"]
    translations = {}
    for lang in LANG_WORDS:
        try:
            translations[lang] = gettext.translation("iso_3166-1", "/usr/share/locale", [lang])
        except OSError:
            continue
    rows = []
    for entry in entries:
        for key in ("name", "official_name"):
            english = entry.get(key)
            if english:
                rows.append({"en": english, **{lang: t.gettext(english) for lang, t in translations.items()}})
    return rows


def _english_vocabulary(rows: list[dict[str, str | list[str]]]) -> set[str]:
    vocab = {w.lower() for t in EN_TEMPLATES for w in _WORD.findall(re.sub(r"\{\w+\}", " ", t))}
    for row in rows:
        for text in [row["en"], *row["alias"]]:
            vocab.update(w.lower() for w in _WORD.findall(str(text)))
    return vocab


def _english(rows: list[dict[str, str | list[str]]], rng: random.Random) -> list[str]:
    out = []
    for row in rows:
        name = str(row["en"])
        alias = list(row["alias"])
        for template in EN_TEMPLATES:
            if "{a}" in template and not alias:
                continue
            partner = str(rng.choice(rows)["en"])
            text = template.format(
                n=name, h=name.split()[-1], a=rng.choice(alias) if alias else "", m=partner,
                art="an" if name[:1].lower() in "aeiou" else "a",
            )
            # Web captions come in every case.
            style = rng.randrange(3)
            out.append(text.lower() if style == 0 else text.title() if style == 1 else text[:1].upper() + text[1:])
    return out


def _other(rows: list[dict[str, str | list[str]]], rng: random.Random, vocab: set[str]) -> list[tuple[str, str]]:
    out = []
    for row in rows:
        for lang, (emoji_word, icon_word, and_word, unspaced) in LANG_WORDS.items():
            name = str(row.get(lang, ""))
            if not name:
                continue
            for template in OTHER_TEMPLATES:
                partner = str(rng.choice(rows).get(lang, ""))
                if "{m}" in template and not partner:
                    continue
                text = template.format(n=name, E=emoji_word, I=icon_word, m=partner, **{"and": and_word})
                if unspaced and rng.random() < 0.5:
                    text = text.replace(" ", "")
                words = {w.lower() for w in _WORD.findall(text)}
                if words and not words <= vocab:
                    out.append((text, lang))
    return out


def benchmark(
    seed: int, per_bin: int = 400, split: Literal["tune", "eval", "all"] = "all", iso_codes: bool = False
) -> list[BenchCaption]:
    """`per_bin` English and `per_bin` non-English captions for each of LENGTH_BINS (fewer where the data
    has fewer), deterministic for a seed, split and emoji package version."""
    rng = random.Random(seed)
    rows = _emoji_names(split)
    vocab = _english_vocabulary(_emoji_names("all"))
    english = [BenchCaption(t, "en", "emoji") for t in _english(rows, rng)]
    other = [BenchCaption(t, lang, "emoji") for t, lang in _other(rows, rng, vocab)]
    if iso_codes:
        iso = _iso_names()
        english += [BenchCaption(r["en"], "en", "iso-codes") for r in iso]
        other += [
            BenchCaption(r[lang], lang, "iso-codes")
            for r in iso
            for lang in LANG_WORDS
            if r.get(lang) and r[lang] != r["en"] and not {w.lower() for w in _WORD.findall(r[lang])} <= vocab
        ]
    out: list[BenchCaption] = []
    for side in (english, other):
        by_bin: dict[str, list[BenchCaption]] = {}
        for caption in dict.fromkeys(side):  # drop repeats, keep order
            by_bin.setdefault(length_bin(caption.words), []).append(caption)
        for low, _ in LENGTH_BINS:
            pool = by_bin.get(length_bin(low), [])
            out += rng.sample(pool, min(per_bin, len(pool)))
    return out
