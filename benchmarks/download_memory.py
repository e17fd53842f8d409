"""Peak memory of one download shard task against the shard's size (issue #17, streaming shards).

A loopback server (this process) serves `--samples` URLs from a set of generated 512x384 JPEGs
(a gradient plus noise: stored at ~60 KB each after re-encoding at quality 95, like real photos at
image_size 512). A child process runs `download_shard` on one shard of all of them with the default
download settings otherwise (64 fetch threads) and reports its peak resident memory (VmHWM, read
from /proc; ru_maxrss would start at the parent's high-water mark), the resident size after imports
(baseline), the time and the bytes stored.

`--code DIR` runs another checkout's `curate` in the child (e.g. the main branch, to measure the
code before a change) against the same server and settings.

Usage:
    .venv/bin/python benchmarks/download_memory.py --samples 10000 [--output-format webdataset|parquet]
        [--threads 64] [--code /path/to/other/checkout]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from curate.testing.http import Route, serve_routes

_CHILD = r"""
import json, sys, time
from pathlib import Path
import pyarrow as pa
from curate.config import DownloadConfig
from curate.pool import Pool
from curate.stages.download.shard import Segment, download_shard

def hwm():
    return int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) * 1024

root, urls, settings = json.loads(Path(sys.argv[1]).read_text())
config = DownloadConfig(**settings)
pool = Pool(root)
pool.write_parquet("candidates/part-00000.parquet", pa.table({
    "uid": [f"{i:032x}" for i in range(len(urls))], "url": urls, "text": [f"caption {i}" for i in range(len(urls))]}))
base = hwm()
start = time.monotonic()
stats = download_shard(pool, "00000000", [Segment("candidates/part-00000.parquet", 0, len(urls))], config)
seconds = time.monotonic() - start
files = {p.name: p.stat().st_size for p in Path(root, "shards").iterdir()}
print(json.dumps({"base_bytes": base, "peak_bytes": hwm(), "seconds": round(seconds, 1), "counts": stats["counts"],
                  "bytes_stored": stats["bytes_stored"], "files": files}))
"""


def photo_like(rng: np.random.Generator) -> bytes:
    """A 512x384 JPEG whose re-encoding at quality 95 is ~60 KB."""
    base = np.linspace(0, 255, 512, dtype=np.float32)[None, :, None] * rng.uniform(0.3, 1.0, size=(1, 1, 3))
    img = np.clip(base + rng.normal(0, 6, size=(384, 512, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10_000, help="URLs in the one shard")
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--output-format", default="webdataset", choices=("webdataset", "parquet"))
    parser.add_argument("--distinct-images", type=int, default=32)
    parser.add_argument("--code", default=None, help="checkout whose curate the child imports (default: this one)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    bodies = [Route(photo_like(rng), content_type="image/jpeg") for _ in range(args.distinct_images)]

    def route(path: str) -> Route | None:
        stem = path.rsplit("/", 1)[-1].split(".", 1)[0]
        return bodies[int(stem) % len(bodies)] if stem.isdigit() else None

    settings = {"allow_addresses": ["127.0.0.1"], "thread_count": args.threads, "per_host_concurrency": args.threads,
                "per_host_rate": 1e9, "samples_per_shard": args.samples, "output_format": args.output_format}
    code = str(Path(args.code).resolve()) if args.code else str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": code}
    with serve_routes(route) as server, tempfile.TemporaryDirectory(prefix="curate-bench-dlmem-") as work:
        urls = [server.url(f"/img/{i}.jpg") for i in range(args.samples)]
        started = time.monotonic()
        job = Path(work, "job.json")
        job.write_text(json.dumps([work, urls, settings]))
        child = subprocess.run([sys.executable, "-c", _CHILD, str(job)],
                               capture_output=True, text=True, env=env, cwd=work)
        if child.returncode != 0:
            print(child.stdout[-2000:], child.stderr[-3000:])
            sys.exit(f"shard task failed (exit {child.returncode}) after {time.monotonic() - started:.0f} s")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    mib = 2**20
    print(json.dumps({
        "machine": f"{platform.machine()}, {platform.system()}, {os.cpu_count()} CPUs",
        "code": code, "samples": args.samples, "threads": args.threads, "output_format": args.output_format,
        "peak_rss_mib": round(result["peak_bytes"] / mib), "baseline_rss_mib": round(result["base_bytes"] / mib),
        "increase_mib": round((result["peak_bytes"] - result["base_bytes"]) / mib),
        "stored_mib": round(result["bytes_stored"] / mib, 1),
        "stored_kb_per_image": round(result["bytes_stored"] / max(1, result["counts"].get("success", 0)) / 1000, 1),
        "seconds": result["seconds"], "counts": result["counts"], "files": result["files"],
    }, indent=1))


if __name__ == "__main__":
    main()
