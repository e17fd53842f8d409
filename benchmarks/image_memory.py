"""Peak memory of one download shard task fed hostile images (issue #15, item 3).

A loopback server (this process) serves images just under max_image_pixels in the formats that
cost most to decode: 16-bit RGBA and 16-bit grey PNG, 8-bit RGBA PNG, palette PNG with
transparency, CMYK JPEG, RGB JPEG, GIF with transparency, animated WebP. Their content is
a checkerboard of 64-pixel squares, so each is small on the wire (under max_image_bytes) and huge decoded. A
child process runs `download_shard` on one shard of `--copies` URLs per format with the default
download settings (64 fetch threads, image_memory_mb) and reports its peak resident memory
(VmHWM; ru_maxrss would start at the parent's high-water mark).

Usage:
    .venv/bin/python benchmarks/image_memory.py [--formats png_rgba16,jpeg_cmyk,...] [--copies 2]
        [--pixels 89478484] [--threads 64] [--budget-mb 1024]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from curate.config import DownloadConfig
from curate.testing.http import Route, serve_routes

FORMATS = ("png_rgba16", "png_grey16", "png_rgba8", "png_palette_transparent", "jpeg_cmyk", "jpeg_rgb",
           "gif_transparent", "webp_animated")


def _save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def hostile(fmt: str, side: int) -> bytes:
    """One image of `side` x `side` pixels; compressible content keeps it small on the wire."""
    blocks = np.arange(side) // 64  # 64-pixel squares: whole JPEG blocks and long GIF/PNG runs
    grey = np.where((blocks[:, None] + blocks[None, :]) % 2, 40, 215).astype(np.uint8)
    grey[:, ::128] = np.arange(side, dtype=np.uint32)[:, None] * 255 // max(1, side - 1)
    if fmt in ("png_rgba16", "png_grey16"):
        wide = grey.astype(np.uint16) * 257
        img = wide if fmt == "png_grey16" else np.dstack([wide, wide.T, wide, wide[::-1]])
        return cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()
    pil = Image.fromarray(grey)
    if fmt == "png_rgba8":
        return _save(Image.merge("RGBA", [pil, pil.transpose(Image.Transpose.TRANSPOSE), pil, pil]), "PNG")
    if fmt == "png_palette_transparent":
        return _save(pil.convert("P"), "PNG", transparency=0)
    if fmt == "jpeg_cmyk":
        return _save(Image.merge("CMYK", [pil, pil, pil, pil]), "JPEG", quality=30)
    if fmt == "jpeg_rgb":
        return _save(Image.merge("RGB", [pil, pil, pil]), "JPEG", quality=30)
    if fmt == "gif_transparent":
        return _save(pil.convert("P"), "GIF", transparency=0)
    if fmt == "webp_animated":
        frame = Image.merge("RGBA", [pil, pil, pil, pil.transpose(Image.Transpose.TRANSPOSE)])
        return _save(frame, "WEBP", save_all=True, append_images=[frame], method=0, quality=10)
    raise ValueError(fmt)


_CHILD = r"""
import json, sys, time
from pathlib import Path
import pyarrow as pa
from curate.config import DownloadConfig
from curate.pool import Pool
from curate.stages.download.shard import Segment, download_shard

def hwm():
    return int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) * 1024

root, urls, settings = json.loads(sys.argv[1])
if "image_memory_mb" not in DownloadConfig.model_fields:
    settings.pop("image_memory_mb", None)  # the code before the fix has no budget
config = DownloadConfig(**settings)
pool = Pool(root)
pool.write_parquet("candidates/part-00000.parquet", pa.table({
    "uid": [f"{i:032x}" for i in range(len(urls))], "url": urls, "text": ["x"] * len(urls)}))
base = hwm()
start = time.monotonic()
stats = download_shard(pool, "00000", [Segment("candidates/part-00000.parquet", 0, len(urls))], config)
print(json.dumps({"base_bytes": base, "peak_bytes": hwm(), "seconds": round(time.monotonic() - start, 1),
                  "counts": stats["counts"], "errors": stats["errors"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = DownloadConfig()
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated, from: " + ", ".join(FORMATS))
    parser.add_argument("--copies", type=int, default=2, help="URLs per format in the shard")
    parser.add_argument("--pixels", type=int, default=defaults.max_image_pixels - 1,
                        help="pixels per image (a square); default: just under max_image_pixels")
    parser.add_argument("--threads", type=int, default=defaults.thread_count)
    parser.add_argument("--budget-mb", type=int, default=getattr(defaults, "image_memory_mb", 0))
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "curate-hostile-images"))
    args = parser.parse_args()

    side = math.isqrt(args.pixels)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    routes = {}
    for fmt in args.formats.split(","):
        path = cache / f"{fmt}-{side}"
        if not path.exists():
            path.write_bytes(hostile(fmt, side))
        routes[f"/{fmt}"] = Route(path.read_bytes(), content_type="image/*")
        print(f"{fmt}: {side}x{side}, {path.stat().st_size / 1024:.0f} KiB", flush=True)
    settings = {"allow_addresses": ["127.0.0.1"], "thread_count": args.threads, "max_image_pixels": side * side,
                "per_host_concurrency": args.threads, "per_host_rate": 1e6, "timeout": 600.0,
                "image_memory_mb": args.budget_mb}
    with serve_routes(routes) as server, tempfile.TemporaryDirectory() as work:
        urls = [server.url(p) for p in routes for _ in range(args.copies)]
        started = time.monotonic()
        child = subprocess.run([sys.executable, "-c", _CHILD, json.dumps([work, urls, settings])],
                               capture_output=True, text=True)
        if child.returncode != 0:
            print(child.stdout[-2000:], child.stderr[-3000:])
            sys.exit(f"shard task failed (exit {child.returncode}) after {time.monotonic() - started:.0f} s")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    mib = 2**20
    print(json.dumps({
        "machine": f"{platform.machine()}, {platform.system()}, {__import__('os').cpu_count()} CPUs",
        "images": len(urls), "threads": args.threads, "budget_mb": args.budget_mb, "pixels": side * side,
        "peak_rss_mib": round(result["peak_bytes"] / mib), "baseline_rss_mib": round(result["base_bytes"] / mib),
        "increase_mib": round((result["peak_bytes"] - result["base_bytes"]) / mib),
        "seconds": result["seconds"], "counts": result["counts"], "errors": result["errors"],
    }, indent=1))


if __name__ == "__main__":
    main()
