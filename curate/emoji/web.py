"""A web of real emoji artwork with web-like alt-text noise, in curate.demo.web.DemoWeb's structure.

Each concept gets `per_concept` image links, drawn by OpenMoji or Twemoji over varied backgrounds.
Noise kinds are assigned to exact shares of the links (EmojiNoise's rates); the rest are clean.
Every image that is not a planted copy is kept at least MIN_DISTANCE bits away (pool pHash) from
every other, so the pool's perceptual dedup can flag only the planted duplicates; planted near
copies are kept within NEAR_DISTANCE of their source, so it can flag them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from curate.demo.web import DemoWeb, Resource
from curate.emoji import captions
from curate.emoji.compose import composite, encode
from curate.emoji.concepts import Concept, choose_concepts
from curate.emoji.phash import HashIndex, phash_of
from curate.emoji.vendors import POOL_VENDORS, load_artwork

WEB_STREAM = 1
MIN_DISTANCE = 10  # bits between any two images that are not planted copies: the demo's dedup uses 4, and
# the download stage's resize and re-encoding move a hash by a few bits
NEAR_DISTANCE = 4  # at most this many bits between a planted near copy and its source
MAX_REDRAWS = 50
CAPTION_KINDS = ("mismatched_caption", "wrong_page_caption", "filename_caption", "generic_caption",
                 "boilerplate_caption", "non_english")
IMAGE_KINDS = ("tiny_image", "extreme_aspect")
COPY_KINDS = ("exact_duplicate", "near_duplicate")


class EmojiNoise(BaseModel):
    """Share of the web's image links that carry each problem (each link carries at most one).

    The defaults leave about half the links clean, roughly what filtering studies of Common Crawl
    alt-text find (most pairs fail a CLIP-score or language filter)."""

    model_config = ConfigDict(extra="forbid")

    mismatched_caption: float = Field(0.10, ge=0, le=1, description="the caption of another concept")
    wrong_page_caption: float = Field(0.05, ge=0, le=1, description="the alt text of a neighbouring image on the "
                                      "same page (a CMS that shifted its alt texts)")
    filename_caption: float = Field(0.05, ge=0, le=1, description='a file name: "IMG_2041.jpg", "emoji_1f34e.png"')
    generic_caption: float = Field(0.05, ge=0, le=1, description='"image", "logo", "icon", "photo", ...')
    boilerplate_caption: float = Field(0.05, ge=0, le=1, description='"click here", "share on facebook", "home", ...')
    non_english: float = Field(0.10, ge=0, le=1, description="the concept's name in another language")
    exact_duplicate: float = Field(0.04, ge=0, le=1, description="byte-identical copy of a clean image, new URL")
    near_duplicate: float = Field(0.04, ge=0, le=1, description="resized and re-encoded copy of a clean image")
    tiny_image: float = Field(0.03, ge=0, le=1, description="the image scaled below 32 px")
    extreme_aspect: float = Field(0.03, ge=0, le=1, description="a banner (aspect ratio 5 to 12, e.g. 600x60)")

    @model_validator(mode="after")
    def _at_most_one(self) -> EmojiNoise:
        total = sum(self.model_dump().values())
        if total > 1:
            raise ValueError(f"the noise rates add up to {total:.3f}; each link carries one problem at most, so <= 1")
        return self

    def counts(self, links: int) -> dict[str, int]:
        """Links of each kind: rate x links, rounded; never more than there are links."""
        out, left = {}, links
        for kind, rate in self.model_dump().items():
            out[kind] = min(left, round(rate * links))
            left -= out[kind]
        return out


@dataclass(frozen=True)
class ImageTruth:
    concept: str  # English name of the concept the image shows
    hexcode: str
    vendor: str
    kind: str  # "clean" or a noise kind
    source: str | None = None  # the clean image a planted copy copies
    language: str | None = None  # the caption's language for non_english


@dataclass
class EmojiWeb(DemoWeb):
    """DemoWeb plus what each image really is (truth: img path -> ImageTruth) and the concept list."""

    truth: dict[str, ImageTruth] = field(default_factory=dict)
    concepts: list[Concept] = field(default_factory=list)


@dataclass
class _Link:
    concept: int
    vendor: str
    kind: str
    path: str = ""
    caption: str = ""
    body: bytes = b""
    content_type: str = ""
    source: str | None = None
    language: str | None = None


def _draw(art: Image.Image, kind: str, size: int, rng: np.random.Generator) -> Image.Image:
    if kind == "extreme_aspect":
        height = int(rng.integers(40, 100))
        width = int(height * rng.uniform(5, 12))
        return composite(art, width, height, rng, scale=(0.6, 0.95))
    img = composite(art, size, size, rng)
    if kind == "tiny_image":
        side = int(rng.integers(12, 32))
        img = img.resize((side, max(8, int(side * rng.uniform(0.75, 1.0)))), Image.Resampling.BILINEAR)
    return img


def _near_copy(body: bytes, rng: np.random.Generator, attempt: int) -> bytes:
    img = Image.open(io.BytesIO(body)).convert("RGB")
    mild = min(attempt, 10) / 10  # milder each time the copy lands too far from its source
    scale = rng.uniform(0.7 + 0.25 * mild, 0.95)
    w, h = img.size
    img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(rng.integers(60 + 30 * mild, 91)))
    return buf.getvalue()


def _caption(link: _Link, concepts: list[Concept], rng: np.random.Generator) -> str:
    concept = concepts[link.concept]
    if link.kind == "mismatched_caption":
        other = (link.concept + 1 + int(rng.integers(len(concepts) - 1))) % len(concepts) if len(concepts) > 1 \
            else link.concept
        return captions.clean_caption(concepts[other], rng)
    if link.kind == "filename_caption":
        return captions.filename_caption(concept, rng)
    if link.kind == "generic_caption":
        return captions.generic_caption(rng)
    if link.kind == "boilerplate_caption":
        return captions.boilerplate_caption(rng)
    if link.kind == "non_english":
        link.language, text = captions.non_english_caption(concept, rng)
        return text
    return captions.clean_caption(concept, rng)


def build_emoji_web(concepts: int, per_concept: int, seed: int, noise: EmojiNoise | None = None, size: int = 128,
                    links_per_page: int = 8, cache_dir: str | None = None) -> EmojiWeb:
    """concepts x per_concept image links on pages of links_per_page, with noise planted by kind.

    Deterministic: the same arguments give the same bytes. The concepts are choose_concepts(concepts, seed),
    which the eval set (write_emoji_evalset) and the clean training pairs (write_clean_pairs) share."""
    noise = noise or EmojiNoise()
    chosen = choose_concepts(concepts, seed)
    art = {v: load_artwork(v, [c.emoji for c in chosen], size, cache_dir) for v in POOL_VENDORS}
    rng = np.random.default_rng([seed, WEB_STREAM])
    total = len(chosen) * per_concept
    kinds = np.array(["clean"] * total, dtype=object)
    order = rng.permutation(total)
    start = 0
    for kind, count in noise.counts(total).items():
        kinds[order[start : start + count]] = kind
        start += count
    links = [_Link(i // per_concept, POOL_VENDORS[int(rng.integers(len(POOL_VENDORS)))], str(kinds[i]))
             for i in range(total)]

    index = HashIndex()
    for i, link in enumerate(links):  # every image that is not a copy, each distinct from all the others
        if link.kind in COPY_KINDS:
            continue
        picture = art[link.vendor][chosen[link.concept].emoji]
        for _ in range(MAX_REDRAWS):
            body, ext, ctype = encode(_draw(picture, link.kind, size, rng), rng)
            h = phash_of(body)
            if index.distance(h) > MIN_DISTANCE:
                break
        index.add(h)
        link.path, link.body, link.content_type = f"/img/{i:06d}.{ext}", body, ctype
        link.caption = _caption(link, chosen, rng)

    clean_of: dict[int, list[_Link]] = {}
    for link in links:
        if link.kind == "clean":
            clean_of.setdefault(link.concept, []).append(link)
    every_clean = [x for group in clean_of.values() for x in group]
    for i, link in enumerate(links):  # planted copies of clean images, of their own concept where one exists
        if link.kind not in COPY_KINDS:
            continue
        pool = clean_of.get(link.concept) or every_clean
        if not pool:
            raise ValueError("no clean images to copy: lower the noise rates or add concepts")
        src = pool[int(rng.integers(len(pool)))]
        link.concept, link.vendor, link.source = src.concept, src.vendor, src.path
        if link.kind == "exact_duplicate":
            link.body, link.content_type, link.caption = src.body, src.content_type, src.caption
            link.path = f"/img/{i:06d}.{src.path.rsplit('.', 1)[1]}"
            continue
        want = phash_of(src.body)
        for attempt in range(MAX_REDRAWS):
            body = _near_copy(src.body, rng, attempt)
            if int(np.bitwise_count(np.uint64(phash_of(body)) ^ np.uint64(want))) <= NEAR_DISTANCE:
                break
        link.path, link.body, link.content_type = f"/img/{i:06d}.jpg", body, "image/jpeg"
        link.caption = captions.clean_caption(chosen[link.concept], rng)

    web = EmojiWeb(concepts=chosen)
    shuffled = [links[int(k)] for k in rng.permutation(total)]
    pages = [shuffled[p : p + links_per_page] for p in range(0, total, links_per_page)]
    for page in pages:  # a neighbour's alt text, from an image of another concept on the same page
        for link in page:
            if link.kind != "wrong_page_caption":
                continue
            others = [x for x in page if x.kind != "wrong_page_caption" and x.concept != link.concept]
            if others:
                link.caption = others[int(rng.integers(len(others)))].caption
            else:  # a page of one concept: borrow another concept's caption instead
                link.caption = _caption(_Link(link.concept, link.vendor, "mismatched_caption"), chosen, rng)
    for p, page in enumerate(pages):
        web.pages.append((f"/page/{p:05d}.html", [(x.path, x.caption) for x in page]))
    for link in links:
        web.resources[link.path] = Resource(link.body, link.content_type)
        concept = chosen[link.concept]
        web.truth[link.path] = ImageTruth(concept.name, concept.hexcode, link.vendor, link.kind, link.source,
                                          link.language)
        if link.kind == "clean":
            web.clean.append((link.path, link.caption))
        else:
            web.plant(link.kind, link.path, link.caption)
    return web
