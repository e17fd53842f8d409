"""A generated web for the demo: image files, pages linking them, and the problems planted in it.

Every planted problem is recorded by kind with the (url, caption) it was planted as, so the demo's
report can show which stage caught how many of them.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from curate.testing.synthetic import COLORS, SHAPES, ShapeSample, caption_for, draw_shape, encode, mismatched_caption
from curate.uid import make_uid

# Captions in other languages, so the language scorer and datacomp_basic's English rule have work.
_TRANSLATIONS = {
    "fr": ("une photo d'un {s} {c} sur un fond uni", {
        "red": "rouge", "green": "vert", "blue": "bleu", "yellow": "jaune", "purple": "violet",
        "orange": "orange", "white": "blanc", "black": "noir"},
        {"circle": "cercle", "square": "carré", "triangle": "triangle", "cross": "croix"}),
    "de": ("ein Foto von einem {c}en {s} auf einfarbigem Hintergrund", {
        "red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb", "purple": "lila",
        "orange": "orange", "white": "weiß", "black": "schwarz"},
        {"circle": "Kreis", "square": "Quadrat", "triangle": "Dreieck", "cross": "Kreuz"}),
    "es": ("una foto de un {s} {c} sobre un fondo liso", {
        "red": "rojo", "green": "verde", "blue": "azul", "yellow": "amarillo", "purple": "morado",
        "orange": "naranja", "white": "blanco", "black": "negro"},
        {"circle": "círculo", "square": "cuadrado", "triangle": "triángulo", "cross": "cruz"}),
}
_NSFW_CAPTIONS = ("explicit nude porn photo of a {c} {s}", "xxx nsfw {c} {s} porn", "nude {c} {s} sex video")

PLANTED_KINDS = (
    "mismatched_caption", "exact_duplicate", "near_duplicate", "tiny_image", "extreme_aspect",
    "non_english", "nsfw_caption", "dead_link",
)


@dataclass
class Resource:
    body: bytes
    content_type: str = "image/jpeg"
    status: int = 200


@dataclass
class DemoWeb:
    """Paths served (relative to the server root), pages (page path, [(img path, alt)]), planted problems."""

    resources: dict[str, Resource] = field(default_factory=dict)
    pages: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)
    planted: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # kind -> [(img path, caption)]
    clean: list[tuple[str, str]] = field(default_factory=list)

    def plant(self, kind: str, path: str, caption: str) -> None:
        self.planted.setdefault(kind, []).append((path, caption))


def draw_scene(color: str, shape: str, size: int, rng: np.random.Generator) -> Image.Image:
    """A shape on a cluttered gradient background.

    Plain-background shapes of one colour and kind are near-duplicates of each other to a
    perceptual hash; web photos are not. A random gradient and grey clutter make every clean image
    distinct, so the demo's dedup flags only the copies planted on purpose.
    """
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * x + np.sin(angle) * y + 1.5) / 3.0
    lo, hi = rng.integers(40, 215, size=3), rng.integers(40, 215, size=3)
    bg = lo[None, None, :] * (1 - t[..., None]) + hi[None, None, :] * t[..., None]
    bg += rng.normal(0, 6, size=bg.shape)
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 4))):  # large grey blocks move the low frequencies a hash sees
        g = int(rng.integers(50, 210))
        x0, y0 = (int(v) for v in rng.integers(0, size * 3 // 4, size=2))
        w, h = (int(v) for v in rng.integers(size // 4, size // 2, size=2))
        draw.rectangle([x0, y0, x0 + w, y0 + h], fill=(g, g, g))
    for _ in range(int(rng.integers(4, 9))):  # grey clutter: lines and outlines, never the caption's colour
        g = int(rng.integers(60, 200))
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, size, size=4))
        if rng.random() < 0.5:
            draw.line([x0, y0, x1, y1], fill=(g, g, g), width=int(rng.integers(2, 6)))
        else:
            draw.ellipse([min(x0, x1), min(y0, y1), max(x0, x1) + 4, max(y0, y1) + 4], outline=(g, g, g), width=3)
    fg = draw_shape(color, shape, size, rng, background="gray")
    # Paste only the shape's own pixels: where the foreground differs strongly from its plain background.
    mask = (np.abs(np.asarray(fg, np.int16) - 128).max(axis=2) > 40).astype(np.uint8) * 255
    img.paste(fg, (0, 0), Image.fromarray(mask, "L"))
    return img


def _jpeg(img: Image.Image, quality: int = 90) -> bytes:
    return encode(img, "JPEG", quality)


def build_demo_web(n_clean: int = 1600, seed: int = 0, size: int = 256, links_per_page: int = 8) -> DemoWeb:
    """About n_clean clean pairs plus planted problems, ~1.6 × n_clean candidates in all."""
    rng = np.random.default_rng(seed)
    web = DemoWeb()
    links: list[tuple[str, str]] = []
    colors, shapes = list(COLORS), list(SHAPES)

    def new_sample() -> ShapeSample:
        c, s = colors[int(rng.integers(len(colors)))], shapes[int(rng.integers(len(shapes)))]
        return ShapeSample(c, s, caption_for(c, s, rng), draw_scene(c, s, size, rng))

    def add(path: str, body: bytes, caption: str, kind: str | None = None) -> None:
        web.resources[path] = Resource(body)
        links.append((path, caption))
        if kind:
            web.plant(kind, path, caption)
        else:
            web.clean.append((path, caption))

    clean_samples = []
    for i in range(n_clean):
        s = new_sample()
        clean_samples.append((f"/img/clean/{i:05d}.jpg", s))
        add(f"/img/clean/{i:05d}.jpg", _jpeg(s.image), s.caption)

    n = max(10, n_clean // 16)
    for i in range(n):  # a real image under a caption that describes something else
        s = new_sample()
        add(f"/img/mismatch/{i:05d}.jpg", _jpeg(s.image), mismatched_caption(s, rng), "mismatched_caption")
    for i in range(n):  # byte-identical copies of clean images under new URLs
        path, s = clean_samples[int(rng.integers(len(clean_samples)))]
        add(f"/img/copy/{i:05d}.jpg", web.resources[path].body, s.caption, "exact_duplicate")
    for i in range(n):  # resized and re-encoded copies
        _, s = clean_samples[int(rng.integers(len(clean_samples)))]
        scale = float(rng.uniform(0.7, 0.9))
        resized = s.image.resize((int(size * scale), int(size * scale)), Image.BILINEAR)
        add(f"/img/near/{i:05d}.jpg", _jpeg(resized, quality=75), s.caption, "near_duplicate")
    for i in range(n // 2):  # too small to be useful
        s = new_sample()
        add(f"/img/tiny/{i:05d}.jpg", _jpeg(s.image.resize((48, 48))), s.caption, "tiny_image")
    for i in range(n // 2):  # banners: aspect ratio far above 3
        c, sh = colors[int(rng.integers(len(colors)))], shapes[int(rng.integers(len(shapes)))]
        banner = draw_scene(c, sh, size, rng).resize((1200, 200))
        add(f"/img/banner/{i:05d}.jpg", _jpeg(banner), caption_for(c, sh, rng), "extreme_aspect")
    langs = list(_TRANSLATIONS)
    for i in range(n):
        s = new_sample()
        template, cmap, smap = _TRANSLATIONS[langs[i % len(langs)]]
        caption = template.format(c=cmap[s.color], s=smap[s.shape])
        add(f"/img/intl/{i:05d}.jpg", _jpeg(s.image), caption, "non_english")
    for i in range(max(5, n // 3)):
        s = new_sample()
        caption = _NSFW_CAPTIONS[i % len(_NSFW_CAPTIONS)].format(c=s.color, s=s.shape)
        add(f"/img/nsfw/{i:05d}.jpg", _jpeg(s.image), caption, "nsfw_caption")
    for i in range(n):  # linked but never served: the server answers 404
        s = new_sample()
        links.append((f"/img/dead/{i:05d}.jpg", s.caption))
        web.plant("dead_link", f"/img/dead/{i:05d}.jpg", s.caption)

    order = rng.permutation(len(links))
    shuffled = [links[int(k)] for k in order]
    for p in range(0, len(shuffled), links_per_page):
        web.pages.append((f"/page/{p // links_per_page:05d}.html", shuffled[p : p + links_per_page]))
    return web


def write_training_set(out_dir: str | Path, n: int, seed: int = 1000, size: int = 128, per_shard: int = 1000) -> None:
    """A separate clean, high-quality set for the demo's DFN, drawn like the pool's images (never part
    of the pool): webdataset tars with jpg, txt and json (uid, caption, class) per sample."""
    rng = np.random.default_rng(seed)
    colors, shapes = list(COLORS), list(SHAPES)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for shard, start in enumerate(range(0, n, per_shard)):
        with tarfile.open(out / f"{shard:05d}.tar", "w") as tar:
            for i in range(start, min(n, start + per_shard)):
                c, s = colors[int(rng.integers(len(colors)))], shapes[int(rng.integers(len(shapes)))]
                caption = caption_for(c, s, rng)
                key = f"{i:08d}"
                meta = {"uid": make_uid(f"hq://{seed}/{i}", caption), "caption": caption, "class": f"{c} {s}"}
                for ext, data in (("jpg", _jpeg(draw_scene(c, s, size, rng))), ("txt", caption.encode()),
                                  ("json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
