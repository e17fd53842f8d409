"""Decode memory of the download resizer under hostile images: 64 fetch threads, worst formats.

Peak memory is measured in a fresh subprocess (VmHWM of its own address space), so neither the
pytest process nor earlier tests pollute it. ru_maxrss is not used: on Linux a child started from a
large parent reports the parent's high-water mark as its own from the start.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from curate.config import DownloadConfig
from curate.stages.download.images import DECODE_BYTES_PER_PIXEL, ImageProcessor
from curate.stages.download.membudget import MemoryBudget

SIDE = 1000  # 1,000,000 pixels: just under the test's max_image_pixels
BUDGET_MB = 16
THREADS = DownloadConfig().thread_count  # the default, 64
# Below the budget (or the largest single image's estimate), the fixed cost of the threads and
# their small outputs; the old float32 compositing needed ~52 B/px, 50 MB for one such image alone.
ALLOWANCE_MB = 24


def _save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def hostile_images(side: int) -> dict[str, bytes]:
    """Each format at its most memory-hungry: 16-bit, alpha, palette+transparency, CMYK, GIF, animated WebP."""
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, (side, side), dtype=np.uint8)
    grey = Image.fromarray(noise)
    rgba = Image.merge("RGBA", [grey, grey.transpose(Image.Transpose.FLIP_LEFT_RIGHT), grey, grey])
    wide = noise.astype(np.uint16) * 257
    return {
        "png_rgba16": cv2.imencode(".png", np.dstack([wide, wide, wide, wide[::-1]]),
                                   [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes(),
        "png_grey16": cv2.imencode(".png", wide, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes(),
        "png_rgba8": _save(rgba, "PNG", compress_level=1),
        "png_palette_transparent": _save(grey.convert("P"), "PNG", transparency=3, compress_level=1),
        "jpeg_cmyk": _save(Image.merge("CMYK", [grey, grey, grey, grey]), "JPEG", quality=50),
        "jpeg_rgb": _save(rgba.convert("RGB"), "JPEG", quality=50),
        "gif_transparent": _save(grey.convert("P"), "GIF", transparency=3),
        "webp_animated": _save(rgba, "WEBP", save_all=True, append_images=[rgba.rotate(90)], method=0, quality=10),
    }


_CHILD = r"""
import json, sys, threading, concurrent.futures as cf
from pathlib import Path
from curate.config import DownloadConfig
from curate.stages.download.images import ImageProcessor

def hwm():
    return int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) * 1024

files, settings, threads = json.loads(sys.argv[1])
datas = [Path(f).read_bytes() for f in files]
proc = ImageProcessor(DownloadConfig(**settings))
for small in Path(files[0]).parent.glob("warm_*"):  # library initialisation is not the images' cost
    proc(small.read_bytes())
barrier = threading.Barrier(threads)

def one(data):
    barrier.wait()  # every thread holds its image and starts decoding at the same moment
    return proc(data).width

base = hwm()
with cf.ThreadPoolExecutor(threads) as pool:
    widths = list(pool.map(one, datas))
print(json.dumps({"peak_bytes": hwm() - base, "widths": widths,
                  "budget_peak": getattr(getattr(proc, "budget", None), "peak", None)}))
"""


@pytest.fixture(scope="module")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("hostile")
    for name, data in hostile_images(64).items():
        (folder / f"warm_{name}").write_bytes(data)
    files = []
    for name, data in hostile_images(SIDE).items():
        path = folder / name
        path.write_bytes(data)
        files.append(path)
    return files


def test_hostile_images_decode(image_files: list[Path]) -> None:
    proc = ImageProcessor(DownloadConfig(max_image_pixels=SIDE * SIDE, image_size=256))
    for path in image_files:
        stored = proc(path.read_bytes())
        assert (stored.original_width, stored.original_height) == (SIDE, SIDE), path.name
        assert (stored.width, stored.height) == (256, 256), path.name
        pixels = cv2.imdecode(np.frombuffer(stored.data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert pixels.shape == (256, 256, 3), path.name


def test_alpha_composited_on_white() -> None:
    """Transparent pixels become white, opaque ones keep their colour, half-transparent ones blend."""
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[:, :16] = (0, 0, 255, 255)  # opaque red (BGRA)
    rgba[:, 16:32] = (0, 0, 0, 0)  # transparent
    rgba[:, 32:] = (0, 0, 0, 128)  # half-transparent black
    png = cv2.imencode(".png", rgba)[1].tobytes()
    proc = ImageProcessor(DownloadConfig(encode_format="png", resize_mode="no"))
    out = cv2.imdecode(np.frombuffer(proc(png).data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert out[0, 0].tolist() == [0, 0, 255]
    assert out[0, 20].tolist() == [255, 255, 255]
    assert out[0, 40].tolist() == [127, 127, 127]


def _wait_until(check: Callable[[], bool]) -> None:
    """Polls a state the code under test sets (no timing assumption: it only waits longer when slow)."""
    while not check():
        time.sleep(0.001)


def test_budget_admits_a_larger_image_alone_in_order() -> None:
    budget = MemoryBudget(100)
    admitted: list[int] = []
    release_big = threading.Event()

    def take(cost: int, release: threading.Event | None) -> None:
        with budget.hold(cost):
            admitted.append(cost)
            if release is not None:
                release.wait()

    with budget.hold(60), budget.hold(40):  # fits together
        assert budget.in_use == 100
    with budget.hold(60):
        big = threading.Thread(target=take, args=(500, release_big))
        big.start()
        _wait_until(lambda: len(budget._queue) == 1)
        small = threading.Thread(target=take, args=(10, None))
        small.start()  # fits beside the 60, but waits behind the big one: first come, first served
        _wait_until(lambda: len(budget._queue) == 2 or bool(admitted))
        assert admitted == []
    _wait_until(lambda: admitted == [500])  # bigger than the whole budget: admitted once nothing is held
    assert budget.in_use == 500 and len(budget._queue) == 1  # alone: the small one still waits
    release_big.set()
    big.join()
    small.join()
    assert admitted == [500, 10] and budget.in_use == 0 and budget.peak == 500


@pytest.mark.fault("download", "64 hostile images at once (16-bit RGBA/grey PNG, palette+transparency, CMYK "
                   "JPEG, GIF, animated WebP), each just under max_image_pixels",
                   "decodes within image_memory_mb, a larger image alone: peak memory bounded, all stored")
def test_peak_memory_of_hostile_images_on_64_threads(image_files: list[Path]) -> None:
    files = [str(image_files[i % len(image_files)]) for i in range(THREADS)]
    settings = {"max_image_pixels": SIDE * SIDE, "image_size": 256, "image_memory_mb": BUDGET_MB}
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps([files, settings, THREADS])],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["widths"] == [256] * THREADS
    largest = SIDE * SIDE * DECODE_BYTES_PER_PIXEL * 2  # a 16-bit image's estimate
    bound = max(BUDGET_MB * 2**20, largest) + ALLOWANCE_MB * 2**20
    assert result["peak_bytes"] < bound, f"peak {result['peak_bytes'] / 2**20:.0f} MiB, bound {bound / 2**20:.0f} MiB"
