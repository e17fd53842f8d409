"""Emoji artwork composited onto web-like backgrounds, and encoded the way web images are.

Every draw varies the background (solid, gradients, texture, stripes, blurred blobs), the artwork's
scale, position and rotation, and sometimes a card or a shadow behind it: the low frequencies a
perceptual hash sees differ from image to image, as they do between photos on the web.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

BACKGROUNDS = ("solid", "linear", "radial", "texture", "stripes", "blobs")


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=3).astype(np.float32)


def background(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    x /= max(width, height)
    y /= max(width, height)
    a, b = _colour(rng), _colour(rng)
    if rng.random() < 0.25:  # many sites show icons on white or a light tint
        a = 255 - (255 - a) * rng.uniform(0, 0.25)
        b = 255 - (255 - b) * rng.uniform(0, 0.4)
    if kind == "solid":
        t = np.zeros((height, width), np.float32)
    elif kind == "linear":
        angle = rng.uniform(0, 2 * np.pi)
        t = np.cos(angle) * x + np.sin(angle) * y
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    elif kind == "radial":
        cx, cy = rng.uniform(0, width / max(width, height)), rng.uniform(0, height / max(width, height))
        t = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        t = np.clip(t / rng.uniform(0.4, 1.2), 0, 1)
    elif kind == "texture":
        grid = rng.random((int(rng.integers(3, 9)), int(rng.integers(3, 9)))).astype(np.float32)
        t = np.asarray(Image.fromarray((grid * 255).astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC),
                       np.float32) / 255
    elif kind == "stripes":
        angle, freq = rng.uniform(0, np.pi), rng.uniform(3, 14)
        t = (np.sin((np.cos(angle) * x + np.sin(angle) * y) * freq * 2 * np.pi) > 0).astype(np.float32)
    else:  # blobs: soft shapes like an out-of-focus photo behind the artwork
        t = np.zeros((height, width), np.float32)
    img = a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]
    pic = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    if kind == "blobs":
        draw = ImageDraw.Draw(pic)
        side = max(width, height)
        for _ in range(int(rng.integers(3, 8))):
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            r = rng.uniform(0.1, 0.45) * side
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=tuple(int(v) for v in _colour(rng)))
        pic = pic.filter(ImageFilter.GaussianBlur(side * rng.uniform(0.04, 0.12)))
    noise = rng.standard_normal((height, width, 1), dtype=np.float32) * np.float32(rng.uniform(1, 8))
    return Image.fromarray(np.clip(np.asarray(pic, np.float32) + noise, 0, 255).astype(np.uint8), "RGB")


def composite(art: Image.Image, width: int, height: int, rng: np.random.Generator,
              scale: tuple[float, float] = (0.35, 0.85), max_rotation: float = 20.0) -> Image.Image:
    """`art` (RGBA) at a random scale, rotation and position over a random background, as RGB."""
    img = background(width, height, rng)
    side = max(8, round(min(width, height) * rng.uniform(*scale)))
    glyph = art.resize((side, side), Image.Resampling.BILINEAR)
    angle = rng.uniform(-max_rotation, max_rotation)
    if abs(angle) > 1:
        glyph = glyph.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    gw, gh = glyph.size
    # Centre anywhere that keeps at least ~80% of the artwork in the frame.
    x = int(rng.uniform(-0.1 * gw, max(-0.1 * gw, width - 0.9 * gw)))
    y = int(rng.uniform(-0.1 * gh, max(-0.1 * gh, height - 0.9 * gh)))
    decoration = rng.random()
    if decoration < 0.2:  # an icon tile: a rounded card behind the artwork
        pad = int(side * 0.12)
        fill = (255, 255, 255) if rng.random() < 0.6 else tuple(int(v) for v in _colour(rng))
        ImageDraw.Draw(img).rounded_rectangle([x - pad, y - pad, x + gw + pad, y + gh + pad],
                                              radius=max(2, side // 6), fill=fill)
    elif decoration < 0.45:  # a drop shadow
        alpha = glyph.getchannel("A").filter(ImageFilter.GaussianBlur(max(1, side // 20)))
        offset = max(1, side // 16)
        img.paste(Image.new("RGB", glyph.size, (20, 20, 20)), (x + offset, y + offset),
                  alpha.point(lambda v: v * 0.5))
    img.paste(glyph, (x, y), glyph)
    return img


def encode(img: Image.Image, rng: np.random.Generator, png_fraction: float = 0.25,
           quality: tuple[int, int] = (70, 96)) -> tuple[bytes, str, str]:
    """(bytes, extension, content type): mostly JPEG at a random quality, sometimes PNG."""
    buf = io.BytesIO()
    if rng.random() < png_fraction:
        img.save(buf, "PNG", compress_level=3)  # noisy backgrounds barely compress; level 6 costs 3x the time
        return buf.getvalue(), "png", "image/png"
    img.save(buf, "JPEG", quality=int(rng.integers(*quality)))
    return buf.getvalue(), "jpg", "image/jpeg"
