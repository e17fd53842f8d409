"""Alt texts as the web writes them: descriptive ones from a concept's name and keywords, and the
kinds of useless or wrong ones that fill Common Crawl (file names, boilerplate, other languages)."""

from __future__ import annotations

import numpy as np

from curate.emoji.concepts import Concept

# {n}: the English name, {N}: capitalised, {k1}..{k3}: keywords (the name's words when it has fewer).
CLEAN_TEMPLATES = (
    "{n} emoji",
    "{n} icon - {k1}, {k2}",
    "{N} emoji | {k1} {k2} icon",
    "{n} clipart, {k1} and {k2}",
    "free {n} icon vector illustration",
    "{N} sticker with {k1}",
    "cute {n} emoji png",
    "{n} symbol for {k1}, {k2} and {k3}",
    "flat {n} icon",
    "{N} - emoji meaning {k1}",
)
GENERIC = ("image", "logo", "icon", "photo", "picture", "img", "thumbnail", "emoji", "untitled", "graphic")
BOILERPLATE = ("click here", "share on facebook", "home", "read more", "subscribe", "back to top",
               "follow us on twitter", "next page", "download", "contact us", "advertisement", "loading...")


def _keywords(concept: Concept, rng: np.random.Generator, k: int) -> list[str]:
    words = list(concept.keywords) or concept.name.split()
    picked = [words[int(i)] for i in rng.permutation(len(words))[:k]]
    return picked + [concept.name.split()[-1]] * (k - len(picked))


def clean_caption(concept: Concept, rng: np.random.Generator) -> str:
    template = CLEAN_TEMPLATES[int(rng.integers(len(CLEAN_TEMPLATES)))]
    k1, k2, k3 = _keywords(concept, rng, 3)
    name = concept.name
    return template.format(n=name, N=name[:1].upper() + name[1:], k1=k1, k2=k2, k3=k3)


def filename_caption(concept: Concept, rng: np.random.Generator) -> str:
    n = int(rng.integers(100, 10000))
    date = f"{2015 + n % 10}-{1 + n % 12:02d}-{1 + n % 28:02d}"
    forms = (f"IMG_{n:04d}.jpg", f"emoji_{concept.codepoint:x}.png", f"DSC{n:05d}.JPG", f"image-{n}.png",
             f"{concept.hexcode}.svg", f"icon_{n}.png", f"Screenshot {date}.png")
    return forms[int(rng.integers(len(forms)))]


def generic_caption(rng: np.random.Generator) -> str:
    return GENERIC[int(rng.integers(len(GENERIC)))]


def boilerplate_caption(rng: np.random.Generator) -> str:
    return BOILERPLATE[int(rng.integers(len(BOILERPLATE)))]


def non_english_caption(concept: Concept, rng: np.random.Generator) -> tuple[str, str]:
    """(language, the concept's name in that language); the emoji package names every concept in several."""
    # A name spelt as in English ("hospital" in Spanish) would not be noise.
    foreign = [(lang, name) for lang, name in concept.names if name.lower() != concept.name.lower()]
    choices = foreign or list(concept.names)
    return choices[int(rng.integers(len(choices)))]
