"""curate's download resizer stores the same pixels as img2dataset's Resizer, mode by mode, on real images.

curate reimplements img2dataset's resize semantics on OpenCV (docs/download.md, "Images"); this is
the check that it does. Every resize mode x target sizes below and above each image's sides x
resize_only_if_bigger both ways x png/jpg/webp: both outputs are decoded and compared pixel by pixel,
with the stored and original sizes.

Tolerance (also in docs/download.md): wherever curate decodes the image at full size, as img2dataset
always does, the decoded pixels are identical (max difference 0, every format). A JPEG at least
JPEG_REDUCING_GAP (3) times the target size on both sides is decoded at 1/2, 1/4 or 1/8 scale by
libjpeg, then area-resized: there the stored pixels may differ by at most a mean of 1 level and 16 at
one pixel. Measured on these images: worst mean 0.90, worst pixel 12 (40 px targets). That bound is
checked on png output, where the resize alone differs: a lossy encoder re-quantises whatever it is
given, so on 40-64 px outputs a sub-level input difference becomes ~2 levels after jpg/webp at q95.

The images ship with matplotlib (a runtime dependency), so no download: grace_hopper.jpg, the
official U.S. Navy portrait of Grace Hopper (a work of the U.S. federal government, public domain),
512x600; Minduka_Present_Blue_Pack.png, public-domain clip art (openclipart), 128x128 RGBA; and
matplotlib's logo2.png (matplotlib's own licence), 542x130 RGBA. A landscape crop of the photo is
re-encoded as JPEG, and a greyscale crop as PNG (the grey path, and a photo that is not a JPEG).
"""

from __future__ import annotations

import io
import itertools
import os
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib import cbook
from PIL import Image

from curate.config import DownloadConfig
from curate.stages.download.images import ImageProcessor, target_size

MODES = ("no", "keep_ratio", "keep_ratio_largest", "center_crop", "border")
# Below, at and above the images' sides (40 and 64 take the reduced-JPEG path on the 512-600 px photos;
# 128 and 512 equal a side, where only a resize that is not only_if_bigger crops or pads).
SIZES = (40, 64, 128, 150, 512, 700)
REDUCED_MEAN, REDUCED_MAX = 1.0, 16


def _sample(name: str) -> bytes:
    return Path(cbook.get_sample_data(name, asfileobj=False)).read_bytes()


def _reencoded(data: bytes, box: tuple[int, int, int, int], fmt: str, mode: str | None = None) -> bytes:
    img = Image.open(io.BytesIO(data)).crop(box)
    img = img.convert(mode) if mode else img
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


@cache
def real_images() -> dict[str, bytes]:
    photo = _sample("grace_hopper.jpg")
    return {
        "photo_portrait_jpeg": photo,
        "photo_landscape_jpeg": _reencoded(photo, (0, 100, 512, 388), "JPEG"),
        "photo_grey_png": _reencoded(photo, (40, 60, 440, 360), "PNG", "L"),
        "clipart_rgba_png": _sample("Minduka_Present_Blue_Pack.png"),
        "logo_wide_rgba_png": _sample("logo2.png"),
    }


@cache
def _resizer_class() -> Any:
    # albumentations (imported by img2dataset.resizer) would otherwise ask PyPI for a newer version.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from img2dataset.resizer import Resizer

    return Resizer


def _rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
@pytest.mark.parametrize("only_if_bigger", [True, False], ids=["only_if_bigger", "always"])
@pytest.mark.parametrize("mode", MODES)
def test_same_pixels_as_img2dataset(mode: str, only_if_bigger: bool, fmt: str) -> None:
    failures, reduced_cases = [], 0
    for (name, data), size in itertools.product(real_images().items(), SIZES if mode != "no" else SIZES[:1]):
        config = DownloadConfig(image_size=size, resize_mode=mode, resize_only_if_bigger=only_if_bigger,
                                encode_format=fmt, encode_quality=95 if fmt != "png" else 100)
        processor = ImageProcessor(config)
        ours = processor(data)
        # img2dataset's png quality is the compression level (0-9, 0 the fastest); png is lossless either way.
        theirs, width, height, original_width, original_height, error = _resizer_class()(
            size, mode, only_if_bigger, encode_format=fmt, encode_quality=0 if fmt == "png" else 95)(io.BytesIO(data))
        case = f"{name} size {size}"
        assert error is None, f"{case}: img2dataset: {error}"
        sizes_ours = (ours.width, ours.height, ours.original_width, ours.original_height)
        assert sizes_ours == (width, height, original_width, original_height), case
        a, b = _rgb(ours.data), _rgb(theirs)
        assert a.shape == b.shape == (height, width, 3), case
        diff = np.abs(a - b)
        header = processor.header(data)
        reduction = processor.jpeg_reduction(header, target_size(header.width, header.height, size, mode,
                                                                  only_if_bigger))
        if reduction == 1:
            if diff.max() != 0:
                failures.append(f"{case}: full-size decode, mean {diff.mean():.3f} max {diff.max()} (want 0)")
        else:
            reduced_cases += 1
            if fmt == "png" and (diff.mean() > REDUCED_MEAN or diff.max() > REDUCED_MAX):
                failures.append(f"{case}: JPEG decoded at 1/{reduction}, mean {diff.mean():.3f} max {diff.max()} "
                                f"(want <= {REDUCED_MEAN} and <= {REDUCED_MAX})")
    assert failures == []
    # The reduced path is exercised wherever a resize shrinks a JPEG JPEG_REDUCING_GAP-fold or more.
    assert (reduced_cases > 0) == (mode != "no"), reduced_cases


def test_images_are_what_the_docstring_says() -> None:
    """Landscape and portrait, smaller and larger than the targets, alpha and grey: the grid covers them."""
    shapes = {name: Image.open(io.BytesIO(data)) for name, data in real_images().items()}
    assert {n: (im.size, im.mode) for n, im in shapes.items()} == {
        "photo_portrait_jpeg": ((512, 600), "RGB"),
        "photo_landscape_jpeg": ((512, 288), "RGB"),
        "photo_grey_png": ((400, 300), "L"),
        "clipart_rgba_png": ((128, 128), "RGBA"),
        "logo_wide_rgba_png": ((542, 130), "RGBA"),
    }
