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

# One OpenCV thread per call: parallelism comes from the fetch threads and the Ray tasks.
cv2.setNumThreads(1)


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


def _to_bgr8(img: np.ndarray) -> np.ndarray:
    """8-bit, 3-channel BGR: alpha composited over white, grey expanded, 16-bit scaled."""
    if img.dtype != np.uint8:
        img = cv2.convertScaleAbs(img, alpha=255.0 / max(1, np.iinfo(img.dtype).max)) if img.dtype.kind in "ui" \
            else cv2.convertScaleAbs(img, alpha=255.0)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        alpha = img[:, :, 3:4].astype(np.float32) / 255.0
        rgb = img[:, :, :3].astype(np.float32)
        return (rgb * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return img


class ImageProcessor:
    """Checks the declared size before any decode (decompression bombs), then resizes and re-encodes."""

    def __init__(self, config: DownloadConfig) -> None:
        self.size = config.image_size
        self.mode = config.resize_mode
        self.only_if_bigger = config.resize_only_if_bigger
        self.max_pixels = config.max_image_pixels
        self.ext = "." + config.encode_format
        if config.encode_format == "jpg":
            self.params = [cv2.IMWRITE_JPEG_QUALITY, config.encode_quality]
        elif config.encode_format == "webp":
            self.params = [cv2.IMWRITE_WEBP_QUALITY, config.encode_quality]
        else:  # png is lossless: quality maps to compression effort, as in img2dataset
            self.params = [cv2.IMWRITE_PNG_COMPRESSION, max(0, min(9, 9 - config.encode_quality // 10))]

    def header_size(self, data: bytes) -> tuple[int, int]:
        """Width and height from the image header; PIL's open() parses the header, not the pixels."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as img:
                    return img.size
        except Image.DecompressionBombError as exc:
            raise ImageRejected(f"image has more than {self.max_pixels} pixels") from exc
        except Exception as exc:
            raise ImageRejected(f"not a decodable image: {type(exc).__name__}") from exc

    def __call__(self, data: bytes) -> StoredImage:
        width, height = self.header_size(data)
        if width * height > self.max_pixels:
            raise ImageRejected(f"image has more than {self.max_pixels} pixels")
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None or img.size == 0:
            raise ImageRejected("image decoding error")
        img = _to_bgr8(img)
        original_height, original_width = img.shape[:2]
        new = target_size(original_width, original_height, self.size, self.mode, self.only_if_bigger)
        if new is not None:
            shrinking = new[0] * new[1] < original_width * original_height
            img = cv2.resize(img, new, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4)
        img = self._crop_or_pad(img)
        ok, encoded = cv2.imencode(self.ext, img, self.params)
        if not ok:
            raise ImageRejected("image encoding error")
        height, width = img.shape[:2]
        return StoredImage(encoded.tobytes(), width, height, original_width, original_height)

    def _crop_or_pad(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        if self.mode == "center_crop" and (h > self.size or w > self.size):
            top, left = max(0, (h - self.size) // 2), max(0, (w - self.size) // 2)
            return img[top : top + self.size, left : left + self.size]
        if self.mode == "border" and (h < self.size or w < self.size):
            dh, dw = max(0, self.size - h), max(0, self.size - w)
            return cv2.copyMakeBorder(img, dh // 2, dh - dh // 2, dw // 2, dw - dw // 2, cv2.BORDER_CONSTANT,
                                      value=[0, 0, 0])
        return img
