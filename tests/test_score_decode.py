"""Decoding once into views: every bad-image case is scored after a repair or given a reason."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from curate.scorers.base import ImageView
from curate.stages.score import decode as d
from curate.testing.synthetic import draw_shape, encode

CLIP_VIEW = ImageView(64, "crop", "RGB")
HASH_VIEW = ImageView(32, "squash", "L")
VIEWS = [CLIP_VIEW, HASH_VIEW]
CAP = 10_000_000


def _png(img: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _check_views(out: d.Decoded) -> None:
    assert out.ok, out.reason
    assert out.views[CLIP_VIEW.column].shape == (64, 64, 3)
    assert out.views[CLIP_VIEW.column].dtype == np.uint8
    assert out.views[HASH_VIEW.column].shape == (32, 32)


def test_plain_jpeg_is_decoded_into_every_view() -> None:
    out = d.decode_image(encode(draw_shape("red", "circle", 200)), VIEWS, CAP)
    _check_views(out)
    assert (out.width, out.height, out.notes) == (200, 200, [])


def test_large_jpeg_uses_draft_mode_and_keeps_colour() -> None:
    img = Image.new("RGB", (1600, 1200), (200, 20, 20))
    out = d.decode_image(encode(img), [CLIP_VIEW], CAP)
    _check_views_single = out.views[CLIP_VIEW.column]
    assert _check_views_single.shape == (64, 64, 3)
    assert abs(int(_check_views_single[..., 0].mean()) - 200) < 6
    assert (out.width, out.height) == (1600, 1200)  # the real size, not the draft's


@pytest.mark.fault("score", "a truncated JPEG", "scored from what decodes, or given a counted reason")
def test_truncated_jpeg_gets_a_reason() -> None:
    data = encode(draw_shape("blue", "square", 256))
    out = d.decode_image(data[: len(data) // 2], VIEWS, CAP)
    assert not out.ok and out.reason == d.TRUNCATED


def test_garbage_bytes_get_a_reason() -> None:
    assert d.decode_image(b"not an image at all", VIEWS, CAP).reason == d.UNDECODABLE
    assert d.decode_image(b"", VIEWS, CAP).reason == d.UNDECODABLE


@pytest.mark.fault("score", "a CMYK image", "converted to RGB and scored; noted in the counts")
def test_cmyk_is_converted_and_noted() -> None:
    cmyk = draw_shape("green", "cross", 96).convert("CMYK")
    out = d.decode_image(encode(cmyk), VIEWS, CAP)
    _check_views(out)
    assert d.NOTE_CMYK in out.notes
    green = out.views[CLIP_VIEW.column].reshape(-1, 3).astype(int)
    assert (green[:, 1] - green[:, 0]).max() > 60  # still green somewhere, not inverted


def test_16bit_greyscale_keeps_its_range() -> None:
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    out = d.decode_image(_png(Image.fromarray(ramp)), VIEWS, CAP)
    _check_views(out)
    assert d.NOTE_16BIT in out.notes
    grey = out.views[HASH_VIEW.column]
    assert grey.min() < 20 and grey.max() > 235  # not clipped to white


def test_palette_with_transparency_is_flattened_on_white() -> None:
    img = Image.new("P", (40, 40), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.paste(1, (10, 10, 30, 30))
    out = d.decode_image(_png(img, transparency=0), VIEWS, CAP)
    _check_views(out)
    assert d.NOTE_ALPHA in out.notes
    view = out.views[CLIP_VIEW.column]
    assert tuple(view[0, 0]) == (255, 255, 255)  # transparent corner became white, not black
    assert tuple(view[32, 32]) == (255, 0, 0)


def test_rgba_is_flattened() -> None:
    img = Image.new("RGBA", (20, 20), (0, 0, 255, 0))
    out = d.decode_image(_png(img), VIEWS, CAP)
    assert out.ok and d.NOTE_ALPHA in out.notes


@pytest.mark.fault("score", "an animated GIF", "its first frame is scored")
def test_animated_gif_scores_its_first_frame() -> None:
    frames = [Image.new("RGB", (30, 30), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    out = d.decode_image(buf.getvalue(), VIEWS, CAP)
    _check_views(out)
    assert d.NOTE_ANIMATED in out.notes
    r, g, b = out.views[CLIP_VIEW.column][15, 15]
    assert r > 200 and g < 50 and b < 50


def test_one_by_one_image_is_scored_and_noted() -> None:
    out = d.decode_image(_png(Image.new("RGB", (1, 1), (9, 9, 9))), VIEWS, CAP)
    _check_views(out)
    assert d.NOTE_TINY in out.notes


@pytest.mark.parametrize("cap", [100 * 100 - 1, 1])
def test_image_above_the_pixel_cap_is_refused(cap: int) -> None:
    out = d.decode_image(encode(Image.new("RGB", (100, 100))), VIEWS, cap)
    assert not out.ok and out.reason == d.TOO_MANY_PIXELS
    assert (out.width, out.height) == (100, 100)


@pytest.mark.fault("score", "a decompression bomb", "refused from its header, never decoded")
def test_decompression_bomb_is_refused_without_decoding() -> None:
    # A PNG header claiming 30000x30000 pixels: refused from the header alone.
    big = Image.new("1", (30000, 30000))
    out = d.decode_image(_png(big), VIEWS, CAP)
    assert out.reason == d.TOO_MANY_PIXELS


def test_jpeg_size_accepts_what_a_device_decoder_takes_and_refuses_the_rest() -> None:
    def jpeg(mode: str, **kw: object) -> bytes:
        buf = io.BytesIO()
        Image.new(mode, (37, 21)).save(buf, format="JPEG", **kw)
        return buf.getvalue()

    assert d.jpeg_size(jpeg("RGB")) == (37, 21)
    assert d.jpeg_size(jpeg("RGB", progressive=True)) == (37, 21)
    assert d.jpeg_size(jpeg("L")) == (37, 21)
    assert d.jpeg_size(jpeg("CMYK")) is None  # PIL converts CMYK faithfully; left to it
    assert d.jpeg_size(jpeg("RGB")[:-300]) is None  # cut short: PIL names it truncated
    assert d.jpeg_size(_png(Image.new("RGB", (4, 4)))) is None
    assert d.jpeg_size(b"\xff\xd8" + b"\x00" * 50 + b"\xff\xd9") is None
    assert d.jpeg_size(b"") is None


@pytest.mark.fault("score", "jpeg_decode_on: model — a JPEG whose headers pass but whose image data is garbage",
                   "the device decoder rejects it: image scores null, reason undecodable_image; the batch goes on")
def test_device_decoding_rejects_garbage_jpeg_and_keeps_the_rest() -> None:
    import torch

    from curate.scorers.base import ImageView
    from curate.stages.score.device_decode import device_views

    good = encode(draw_shape("red", "circle", 96))
    sof = good.index(b"\xff\xc0")
    header_end = sof + 2 + int.from_bytes(good[sof + 2:sof + 4], "big")
    garbage = good[:header_end] + bytes(range(256)) * 4 + b"\xff\xd9"
    assert d.jpeg_size(garbage) == (96, 96)
    view = ImageView(32)
    cpu_view = np.full((32, 32, 3), 7, np.uint8).tobytes()
    raw = np.array([good, garbage, b"", good], dtype=object)
    cpu = np.array([b"", b"", cpu_view, b""], dtype=object)
    pixels, ok = device_views(raw, cpu, np.array([True, True, True, True]), view, torch.device("cpu"))
    assert ok.tolist() == [True, False, True, True]
    assert pixels.shape == (3, 3, 32, 32) and pixels.dtype == torch.uint8
    assert int(pixels[1].float().mean()) == 7  # the CPU-decoded view, in row order
    reference = d.decode_image(good, [view], 10**9).views[view.column].astype(np.float32)
    assert np.abs(pixels[0].permute(1, 2, 0).float().numpy() - reference).mean() < 3.0  # same crop, torch vs PIL


_MEMORY_CHILD = r"""
import json, sys
from pathlib import Path
from curate.scorers.base import ImageView
from curate.stages.score.decode import decode_image

def hwm():
    return int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) * 1024

decode_image(Path(sys.argv[2]).read_bytes(), [ImageView(224), ImageView(8, "squash", "L")], 10**8)  # warm-up
data = Path(sys.argv[1]).read_bytes()
base = hwm()
out = decode_image(data, [ImageView(224), ImageView(8, "squash", "L")], 10**8)
print(json.dumps({"ok": out.ok, "pixels": out.width * out.height, "peak": hwm() - base}))
"""
# Peak bytes per decoded pixel above which decoding one image is a memory hazard: the image
# decoded (up to 4 B/px) plus one 8-bit RGB(A) copy, plus slack. Before the fix a 16-bit RGBA PNG
# took 20 B/px, 16-bit grey 26, a palette PNG with transparency 17.
SCORE_DECODE_BYTES_PER_PIXEL = 12


@pytest.mark.fault("score", "a 16-bit RGBA PNG, a 16-bit greyscale PNG or a palette PNG with transparency, "
                   "4 megapixels", f"decoded within {SCORE_DECODE_BYTES_PER_PIXEL} bytes per pixel: composited "
                   "in place on white, 16-bit rescaled a chunk at a time")
@pytest.mark.parametrize("kind", ["rgba16", "grey16", "palette_transparent"])
def test_wide_and_transparent_images_decode_in_bounded_memory(kind: str, tmp_path: Path) -> None:
    side = 2000
    noise = np.random.default_rng(3).integers(0, 256, (side, side), dtype=np.uint8)
    wide = noise.astype(np.uint16) * 257
    if kind == "rgba16":
        data = cv2.imencode(".png", np.dstack([wide, wide, wide, wide[::-1]]), [cv2.IMWRITE_PNG_COMPRESSION, 1])[1]
    elif kind == "grey16":
        data = cv2.imencode(".png", wide, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1]
    else:
        data = _png(Image.fromarray(noise).convert("P"), transparency=3, compress_level=1)
    (tmp_path / "big").write_bytes(bytes(data))
    (tmp_path / "warm").write_bytes(_png(Image.new("RGBA", (16, 16))))
    proc = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(tmp_path / "big"), str(tmp_path / "warm")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"] and result["pixels"] == side * side
    per_pixel = result["peak"] / result["pixels"]
    assert per_pixel < SCORE_DECODE_BYTES_PER_PIXEL, f"{per_pixel:.1f} bytes per pixel"
