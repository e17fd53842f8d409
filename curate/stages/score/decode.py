"""Decode each image once into every view the configured scorers need, with a reason when it cannot be.

Runs in Ray Data CPU tasks. JPEGs are decoded at reduced size (PIL draft mode: the DCT scales by
1/2, 1/4 or 1/8) when the largest view is smaller than the image, which is most of the decode cost
saved for 224-px models on 512-px downloads. Odd images are repaired where a faithful RGB exists
(CMYK, 16-bit, palette/alpha flattened on white, first frame of an animation) and counted as notes;
those that cannot be decoded get a reason and no image scores, never an exception.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from curate.scorers.base import ImageView

# Reasons (no image scores) and notes (scored after a repair), as counted in shard stats.
TOO_MANY_PIXELS = "too_many_pixels"
TRUNCATED = "truncated_image"
UNDECODABLE = "undecodable_image"
NOTE_CMYK = "converted_cmyk"
NOTE_16BIT = "converted_16bit"
NOTE_ALPHA = "flattened_transparency"
NOTE_ANIMATED = "animated_first_frame"
NOTE_TINY = "tiny_image"  # below 8 px on a side: scored, but rarely a useful sample
TINY_SIDE = 8


@dataclass
class Decoded:
    ok: bool
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    width: int = 0
    height: int = 0
    views: dict[str, np.ndarray] = field(default_factory=dict)


# Pixels rescaled per step for 16/32-bit greyscale: float temporaries of a few MB, not of the image.
_CHUNK_PIXELS = 1 << 20


def _to_rgb(img: Image.Image, notes: list[str]) -> Image.Image:
    """RGB, or L for greyscale (the views convert to their colour after resizing, which is cheaper).

    Nothing here holds more than the decoded image plus one 8-bit RGB(A) copy: a 16-bit RGBA PNG
    just under max_image_pixels is ~360 MB decoded, and each extra full-size copy costs as much."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "CMYK":
        notes.append(NOTE_CMYK)
        return img.convert("RGB")
    if mode.startswith("I") or mode == "F":
        # 16-bit / 32-bit greyscale: PIL's convert clips at 255; rescale the full range instead.
        notes.append(NOTE_16BIT)
        arr = np.asarray(img)
        hi = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        grey = np.empty(arr.shape, np.uint8)
        src, dst = arr.reshape(-1), grey.reshape(-1)
        for i in range(0, src.size, _CHUNK_PIXELS):
            dst[i:i + _CHUNK_PIXELS] = np.clip(src[i:i + _CHUNK_PIXELS] * (255.0 / hi), 0, 255)
        return Image.fromarray(grey, "L")
    if mode == "P" and "transparency" not in img.info:
        return img.convert("RGB")
    if mode in ("RGBA", "LA", "PA", "P", "La", "RGBa"):
        notes.append(NOTE_ALPHA)
        rgba = img if mode == "RGBA" else img.convert("RGBA")
        # Pasting with the image's own alpha as mask blends onto white in place: no full-size
        # RGBA background and composite (alpha_composite needed both).
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, (0, 0), rgba)
        return flat
    return img.convert("RGB")


def _crop(img: Image.Image, size: int) -> Image.Image:
    """Resize the shortest side to `size` and centre-crop, like CLIP's eval transform."""
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def decode_image(data: bytes, views: Iterable[ImageView], max_pixels: int) -> Decoded:
    """Decode `data` into each of `views` (uint8 arrays), or say why not."""
    views = list(views)
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                return Decoded(False, TOO_MANY_PIXELS, width=width, height=height)
            if getattr(img, "is_animated", False):
                notes.append(NOTE_ANIMATED)  # PIL opens on frame 0, which is what is scored
            crop_sizes = [v.size for v in views if v.mode == "crop"]
            biggest = max([v.size for v in views], default=0)
            if img.format == "JPEG" and biggest:
                img.draft("RGB", (max(crop_sizes, default=biggest), max(crop_sizes, default=biggest)))
            img.load()
            rgb = _to_rgb(img, notes)
    except Image.DecompressionBombError:
        return Decoded(False, TOO_MANY_PIXELS)
    except OSError as exc:
        reason = TRUNCATED if "truncated" in str(exc).lower() or "broken data" in str(exc).lower() else UNDECODABLE
        return Decoded(False, reason)
    except Exception:
        return Decoded(False, UNDECODABLE)
    if min(width, height) < TINY_SIDE:
        notes.append(NOTE_TINY)
    out: dict[str, np.ndarray] = {}
    largest_crop = None
    for view in sorted(views, key=lambda v: -v.size):
        if view.mode == "crop":
            # Smaller crops are resized from the largest one: shortest-side resize and centre crop commute.
            if largest_crop is None:
                largest_crop = _crop(rgb, view.size)
                pic = largest_crop
            else:
                pic = largest_crop.resize((view.size, view.size), Image.Resampling.BICUBIC)
        else:
            pic = rgb.resize((view.size, view.size), Image.Resampling.BILINEAR)
        out[view.column] = np.asarray(pic.convert(view.color), dtype=np.uint8)
    return Decoded(True, "", notes, width, height, out)


# Start-of-frame markers of Huffman-coded 8-bit JPEGs, which nvJPEG and libjpeg-turbo both decode:
# baseline, extended sequential, progressive.
_SOF_HUFFMAN = {0xC0, 0xC1, 0xC2}
_SOF_ANY = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # C4/C8/CC are DHT/JPG/DAC, not frames
_NO_LENGTH = {0x01, *range(0xD0, 0xD8)}  # markers without a length field (TEM, RSTn)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a complete, 8-bit, Huffman-coded, greyscale or YCbCr/RGB JPEG, else None.

    Those are the JPEGs a model actor may decode on its own device (`jpeg_decode_on: model`);
    everything else (CMYK, 12-bit, arithmetic coding, a file cut short, not a JPEG) is decoded on
    the CPU with PIL, which repairs what it can and names what it cannot. Reads only the marker
    segments up to the frame header: a few microseconds, against ~120 for PIL's Image.open."""
    if not data.startswith(b"\xff\xd8") or not data.rstrip(b"\x00\r\n").endswith(b"\xff\xd9"):
        return None
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _NO_LENGTH:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker in _SOF_ANY:
            if marker not in _SOF_HUFFMAN or pos + 10 > end or length < 8:
                return None
            precision, height, width, components = data[pos + 4], *(
                int.from_bytes(data[i:i + 2], "big") for i in (pos + 5, pos + 7)), data[pos + 9]
            if precision != 8 or components not in (1, 3) or not width or not height:
                return None
            return width, height
        if marker == 0xDA or length < 2:  # scan data before any frame header: not a valid JPEG
            return None
        pos += 2 + length
    return None


def empty_view(view: ImageView) -> np.ndarray:
    shape = (view.size, view.size) if view.color == "L" else (view.size, view.size, 3)
    return np.zeros(shape, np.uint8)
