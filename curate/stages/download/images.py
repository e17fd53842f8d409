"""Turn fetched bytes into the stored image: pixel cap from the header, decode, resize, re-encode.

Resize semantics are img2dataset's (same mode names, resize_only_if_bigger, INTER_AREA when
shrinking and Lanczos when enlarging, alpha composited on white), implemented on OpenCV directly:
importing img2dataset.resizer pulls in img2dataset's package (webdataset, torch) and
albumentations, ~10-20 s per Ray worker process on this machine for code it does not use here.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from curate.config import DownloadConfig
from curate.stages.download.membudget import MemoryBudget, return_freed_images_to_the_os

# One OpenCV thread per call: parallelism comes from the fetch threads and the Ray tasks.
cv2.setNumThreads(1)
return_freed_images_to_the_os()


@dataclass
class StoredImage:
    data: bytes
    width: int
    height: int
    original_width: int
    original_height: int


class ImageRejected(Exception):
    """Bytes that cannot become a stored image; the message is the sample's error."""


def target_size(width: int, height: int, size: int, mode: str, only_if_bigger: bool) -> tuple[int, int] | None:
    """(w, h) to resize to before any crop/pad, or None to keep the decoded size."""
    if mode == "no":
        return None
    # keep_ratio_largest/border fit the larger side to `size`; keep_ratio/center_crop the smaller one.
    side = max(width, height) if mode in ("keep_ratio_largest", "border") else min(width, height)
    if side == size or (only_if_bigger and side <= size):
        return None
    scale = size / side
    return max(1, round(width * scale)), max(1, round(height * scale))


# Pixels converted per step when scaling 16-bit samples or compositing alpha: the temporaries are
# a few MB whatever the image size, instead of several float copies of the whole image.
_CHUNK_PIXELS = 1 << 20
_REDUCED_JPEG = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
# A JPEG is decoded reduced only while it keeps this many times the target size: the area resize
# after a reduction averages reduced pixels whose blocks straddle the output pixels' edges, which
# blurs more the fewer there are. Reduced down to the target itself (a gap of 1) the stored pixels
# were up to 6 levels off on average (100 at worst) from img2dataset's full decode on a real photo;
# at 3, within tests/test_resizer_parity.py's tolerance (Pillow's reducing_gap makes the same trade).
JPEG_REDUCING_GAP = 3


def _pixels(img: np.ndarray) -> np.ndarray:
    """A (pixels, channels) view of a decoded image (imdecode returns contiguous arrays)."""
    return img.reshape(img.shape[0] * img.shape[1], -1)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    """16-bit samples scaled to 8 bits (floats from 0..1), a chunk at a time."""
    if img.dtype == np.uint8:
        return img
    scale = 255.0 / max(1, np.iinfo(img.dtype).max) if img.dtype.kind in "ui" else 255.0
    out = np.empty(img.shape, np.uint8)
    src, dst = _pixels(img), _pixels(out)
    for i in range(0, len(src), _CHUNK_PIXELS):
        dst[i:i + _CHUNK_PIXELS] = cv2.convertScaleAbs(src[i:i + _CHUNK_PIXELS], alpha=scale).reshape(-1, src.shape[1])
    return out


def _composite_on_white(img: np.ndarray) -> None:
    """Alpha-composites a BGRA uint8 image over white in place, in integer arithmetic, a chunk at a time.

    The alpha channel is left as it is (and dropped after resizing, on the small image)."""
    px = _pixels(img)
    for i in range(0, len(px), _CHUNK_PIXELS):
        chunk = px[i:i + _CHUNK_PIXELS]
        alpha = chunk[:, 3:4].astype(np.uint16)
        bgr = chunk[:, :3].astype(np.uint16)
        # (c·a + 255·(255 − a)) / 255, rounded: at most 65025 + 127, within uint16
        bgr *= alpha
        bgr += 255 * (255 - alpha) + 127
        bgr //= 255
        chunk[:, :3] = bgr


def _to_bgr(img: np.ndarray) -> np.ndarray:
    """3-channel BGR of a (resized) 8-bit image: grey expanded, the composited image's alpha dropped."""
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    format: str
    sample_bytes: int  # bytes per decoded sample: 1, 2 (16-bit) or 4 (32-bit int/float)


# Peak bytes per pixel of one decode, per byte of sample width. OpenCV's imdecode holds two copies
# of the decoded image at its peak (measured with OpenCV 4.14 at 4000x4000: 8.5 B/px for 8-bit RGBA
# PNG, palette PNG and animated WebP, 9.3 for GIF, 6.4 for JPEG, 16.5 for 16-bit RGBA PNG); a wide
# image's 8-bit copy (4 B/px) is made after imdecode's own temporary is freed, so stays below that.
DECODE_BYTES_PER_PIXEL = 10


def decode_cost(header: Header, reduction: int = 1) -> int:
    """Estimated peak bytes of decoding and converting one image, from its header (docs/download.md).

    Compositing and grey/alpha conversions work in place or on the resized image, so nothing else
    is proportional to the full size; a JPEG decoded at 1/reduction scale costs that much less."""
    pixels = -(-header.width // reduction) * -(-header.height // reduction)
    return pixels * DECODE_BYTES_PER_PIXEL * header.sample_bytes


class ImageProcessor:
    """Checks the declared size before any decode (decompression bombs), then resizes and re-encodes."""

    def __init__(self, config: DownloadConfig) -> None:
        self.size = config.image_size
        self.mode = config.resize_mode
        self.only_if_bigger = config.resize_only_if_bigger
        self.max_pixels = config.max_image_pixels
        self.budget = MemoryBudget(config.image_memory_mb * 1024 * 1024)
        self.ext = "." + config.encode_format
        if config.encode_format == "jpg":
            self.params = [cv2.IMWRITE_JPEG_QUALITY, config.encode_quality]
        elif config.encode_format == "webp":
            self.params = [cv2.IMWRITE_WEBP_QUALITY, config.encode_quality]
        else:  # png is lossless: quality maps to compression effort, as in img2dataset
            self.params = [cv2.IMWRITE_PNG_COMPRESSION, max(0, min(9, 9 - config.encode_quality // 10))]

    def header(self, data: bytes) -> Header:
        """Size, format and sample width from the image header; PIL's open() parses the header, not the pixels."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as img:
                    rawmode = img.tile[0].args if img.tile else ""
                    rawmode = rawmode[0] if isinstance(rawmode, tuple) and rawmode else rawmode
                    wide = "16" in str(rawmode) or img.mode.startswith("I;16")
                    sample_bytes = 2 if wide else 4 if img.mode in ("I", "F") else 1
                    return Header(img.width, img.height, img.format or "", sample_bytes)
        except Image.DecompressionBombError as exc:
            raise ImageRejected(f"image has more than {self.max_pixels} pixels") from exc
        except Exception as exc:
            raise ImageRejected(f"not a decodable image: {type(exc).__name__}") from exc

    def jpeg_reduction(self, header: Header, new: tuple[int, int] | None) -> int:
        """Largest JPEG DCT scaling (1/2, 1/4, 1/8) that leaves the image JPEG_REDUCING_GAP times the target size."""
        if header.format != "JPEG" or new is None:
            return 1
        for factor in (8, 4, 2):
            if (-(-header.width // factor) >= JPEG_REDUCING_GAP * new[0]
                    and -(-header.height // factor) >= JPEG_REDUCING_GAP * new[1]):
                return factor
        return 1

    def __call__(self, data: bytes) -> StoredImage:
        header = self.header(data)
        if header.width * header.height > self.max_pixels:
            raise ImageRejected(f"image has more than {self.max_pixels} pixels")
        new = target_size(header.width, header.height, self.size, self.mode, self.only_if_bigger)
        reduction = self.jpeg_reduction(header, new)
        # Decoding is the only step whose memory grows with the image: the budget keeps the fetch
        # threads from holding more full-size images at once than it allows.
        with self.budget.hold(decode_cost(header, reduction)):
            # A JPEG reduced by libjpeg at 1/2, 1/4 or 1/8 scale (colour, EXIF orientation ignored as
            # with IMREAD_UNCHANGED); the resize below then shrinks the rest of the way.
            flags = (_REDUCED_JPEG[reduction] | cv2.IMREAD_IGNORE_ORIENTATION) if reduction > 1 \
                else cv2.IMREAD_UNCHANGED
            img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
            if img is None or img.size == 0:
                raise ImageRejected("image decoding error")
            if reduction > 1:
                original_width, original_height = header.width, header.height
            else:
                original_height, original_width = img.shape[:2]
                new = target_size(original_width, original_height, self.size, self.mode, self.only_if_bigger)
            img = _to_uint8(img)
            if img.ndim == 3 and img.shape[2] == 4:
                _composite_on_white(img)
            if new is not None:
                shrinking = new[0] * new[1] < original_width * original_height
                img = cv2.resize(img, new, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4)
            img = _to_bgr(self._crop_or_pad(img, original_width, original_height))
        ok, encoded = cv2.imencode(self.ext, img, self.params)
        if not ok:
            raise ImageRejected("image encoding error")
        height, width = img.shape[:2]
        return StoredImage(encoded.tobytes(), width, height, original_width, original_height)

    def _crop_or_pad(self, img: np.ndarray, original_width: int, original_height: int) -> np.ndarray:
        # As img2dataset: only an image that takes the resize step is cropped or padded, so with
        # resize_only_if_bigger an image no bigger than the target is stored as it is; padding is white.
        side = min if self.mode == "center_crop" else max
        if self.only_if_bigger and side(original_width, original_height) <= self.size:
            return img
        h, w = img.shape[:2]
        if self.mode == "center_crop" and (h > self.size or w > self.size):
            top, left = max(0, (h - self.size) // 2), max(0, (w - self.size) // 2)
            return img[top : top + self.size, left : left + self.size]
        if self.mode == "border" and (h < self.size or w < self.size):
            dh, dw = max(0, self.size - h), max(0, self.size - w)
            return cv2.copyMakeBorder(img, dh // 2, dh - dh // 2, dw // 2, dw - dw // 2, cv2.BORDER_CONSTANT,
                                      value=[255, 255, 255, 255])
        return img
