"""Generated image-caption data: coloured shapes with captions that describe them.

Tests, the demo and benchmarks need image-text pairs whose match is learnable by a tiny CLIP in
seconds, so a matched caption measurably outscores a mismatched one. Everything is seeded.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "purple": (140, 40, 170),
    "orange": (250, 140, 20),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle", "cross")
BACKGROUNDS = ("gray", "pale", "dark")
_BG_RGB = {"gray": (128, 128, 128), "pale": (200, 190, 170), "dark": (50, 50, 60)}


@dataclass(frozen=True)
class ShapeSample:
    color: str
    shape: str
    caption: str
    image: Image.Image


def draw_shape(color: str, shape: str, size: int = 64, rng: np.random.Generator | None = None,
               background: str | None = None) -> Image.Image:
    """One RGB image of a `color` `shape` at a random position and scale on a plain background."""
    rng = rng or np.random.default_rng(0)
    bg = background or BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    base = np.array(_BG_RGB[bg], dtype=np.int16)
    noise = rng.integers(-12, 13, size=(size, size, 3), dtype=np.int16)
    img = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    r = int(size * rng.uniform(0.22, 0.38))
    cx = int(rng.integers(r, size - r + 1))
    cy = int(rng.integers(r, size - r + 1))
    fill = COLORS[color]
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    elif shape == "cross":
        w = max(2, r // 3)
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return img


def caption_for(color: str, shape: str, rng: np.random.Generator | None = None) -> str:
    templates = ("a photo of a {c} {s}", "a {c} {s}", "an image showing a {c} {s}", "{c} {s} on a plain background")
    t = templates[int(rng.integers(len(templates)))] if rng is not None else templates[0]
    return t.format(c=color, s=shape)


def make_samples(n: int, seed: int = 0, size: int = 64) -> list[ShapeSample]:
    """`n` matched pairs covering every colour and shape."""
    rng = np.random.default_rng(seed)
    colors = list(COLORS)
    out = []
    for i in range(n):
        color = colors[i % len(colors)] if i < len(colors) * len(SHAPES) else colors[int(rng.integers(len(colors)))]
        shape = SHAPES[(i // len(colors)) % len(SHAPES)] if i < len(colors) * len(SHAPES) else SHAPES[
            int(rng.integers(len(SHAPES)))]
        out.append(ShapeSample(color, shape, caption_for(color, shape, rng), draw_shape(color, shape, size, rng)))
    return out


def mismatched_caption(sample: ShapeSample, rng: np.random.Generator) -> str:
    """A caption naming a different colour and a different shape than the image shows."""
    colors = [c for c in COLORS if c != sample.color]
    shapes = [s for s in SHAPES if s != sample.shape]
    return caption_for(colors[int(rng.integers(len(colors)))], shapes[int(rng.integers(len(shapes)))], rng)


def encode(image: Image.Image, fmt: str = "JPEG", quality: int = 92) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, quality=quality) if fmt.upper() in ("JPEG", "WEBP") else image.save(buf, format=fmt)
    return buf.getvalue()
