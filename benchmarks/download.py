"""Download benchmark: images/s from a loopback server, curate vs the plain img2dataset CLI.

Both download the same N URLs (distinct paths; the server answers from a set of generated
640x480 JPEGs) with the same settings (image_size 512, keep_ratio_largest, resize only if
bigger, jpg, retries 2, timeout 10 s, webdataset output), the same number of processes and
threads per process, one after the other in the same run against the same server. The server
runs in its own process so neither downloader shares a GIL with it.

curate's per-host limits are opened up (per_host_concurrency = thread_count, per_host_rate
unlimited) because every URL is on one host and img2dataset has no per-host limit; with the
default 8 concurrent / 50 req/s per host the run would measure politeness, not throughput.

Usage:
    .venv/bin/python benchmarks/download.py --size 20000 --processes 2 --threads 32 [--repeats 2]

Rates are reported twice: end to end (the whole CLI command: interpreter start, imports, Ray or
multiprocessing start, all shards) and for the download phase alone (first shard start to last
shard end, from each tool's own per-shard stats).
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def _serve(port_queue: mp.Queue, stop: mp.Event, distinct: int) -> None:
    import numpy as np
    from PIL import Image

    from curate.testing.http import Route, serve_routes

    rng = np.random.default_rng(0)
    bodies = []
    for _ in range(distinct):
        # A smooth gradient plus mild noise: JPEG sizes (~40-60 KB) like real photos, not like pure noise.
        base = np.linspace(0, 255, 640, dtype=np.float32)[None, :, None] * rng.uniform(0.3, 1.0, size=(1, 1, 3))
        img = np.clip(base + rng.normal(0, 12, size=(480, 640, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=90)
        bodies.append(Route(buf.getvalue(), content_type="image/jpeg"))

    def route(path: str) -> Route | None:
        stem = path.rsplit("/", 1)[-1].split(".", 1)[0]
        return bodies[int(stem) % distinct] if stem.isdigit() else None

    with serve_routes(route) as server:
        port_queue.put(server.port)
        stop.wait()


def _write_inputs(work: Path, port: int, size: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curate.uid import make_uid

    urls = [f"http://127.0.0.1:{port}/img/{i}.jpg" for i in range(size)]
    texts = [f"a benchmark picture number {i}" for i in range(size)]
    table = pa.table({"uid": [make_uid(u, t) for u, t in zip(urls, texts, strict=True)], "url": urls, "text": texts})
    pool = work / "curate_pool"
    (pool / "candidates").mkdir(parents=True)
    pq.write_table(table, pool / "candidates" / "part-00000.parquet")
    pq.write_table(table.select(["url", "text"]), work / "urls.parquet")
    return pool


def run_img2dataset(work: Path, args: argparse.Namespace, shard_size: int) -> dict:
    out = work / "img2dataset_out"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        str(VENV_BIN / "img2dataset"), "--url_list", str(work / "urls.parquet"), "--input_format", "parquet",
        "--url_col", "url", "--caption_col", "text", "--output_format", "webdataset", "--output_folder", str(out),
        "--processes_count", str(args.processes), "--thread_count", str(args.threads), "--image_size", "512",
        "--resize_mode", "keep_ratio_largest", "--resize_only_if_bigger", "True", "--encode_format", "jpg",
        "--encode_quality", "95", "--number_sample_per_shard", str(shard_size), "--retries", "2", "--timeout", "10",
        "--distributor", "multiprocessing", "--enable_wandb", "False",
    ]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"img2dataset failed:\n{proc.stderr[-3000:]}")
    stats = [json.loads(p.read_text()) for p in sorted(out.glob("*_stats.json"))]
    successes = sum(s["successes"] for s in stats)
    phase = max(s["end_time"] for s in stats) - min(s["start_time"] for s in stats)
    return {"tool": "img2dataset", "wall_s": wall, "phase_s": phase, "successes": successes,
            "samples": sum(s["count"] for s in stats)}


def run_curate(work: Path, pool: Path, args: argparse.Namespace, shard_size: int) -> dict:
    for sub in ("shards", "_done", "reports"):
        shutil.rmtree(pool / sub, ignore_errors=True)
    config = work / "pipeline.yaml"
    config.write_text(
        f"pool: {pool}\ndownload:\n  samples_per_shard: {shard_size}\n  thread_count: {args.threads}\n"
        f"  per_host_concurrency: {args.threads}\n  per_host_rate: 1.0e9\n  retries: 2\n  timeout: 10\n"
    )
    cmd = [str(VENV_BIN / "curate"), "download", "--pool", str(pool), "--config", str(config),
           "--allow-address", "127.0.0.1"]
    env = {**os.environ, "CURATE_RAY_NUM_CPUS": str(args.processes), "RAY_USAGE_STATS_ENABLED": "0"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"curate download failed:\n{proc.stderr[-3000:]}")
    stats = [json.loads(p.read_text()) for p in sorted((pool / "shards").glob("*_stats.json"))]
    phase = max(s["end_time"] for s in stats) - min(s["start_time"] for s in stats)
    totals = json.loads((pool / "reports" / "download.json").read_text())["totals"]
    return {"tool": "curate", "wall_s": wall, "phase_s": phase, "successes": totals["successes"],
            "samples": totals["samples"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=20_000, help="number of URLs (the issue's figure: 20000)")
    parser.add_argument("--processes", type=int, default=2, help="processes (img2dataset) = Ray CPUs (curate)")
    parser.add_argument("--threads", type=int, default=32, help="fetch threads per process, both tools")
    parser.add_argument("--shards-per-process", type=int, default=2, help="shards = processes x this")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the two tools this many times")
    parser.add_argument("--distinct-images", type=int, default=64)
    args = parser.parse_args()
    shard_size = -(-args.size // (args.processes * args.shards_per_process))

    ctx = mp.get_context("spawn")
    port_queue, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_serve, args=(port_queue, stop, args.distinct_images), daemon=True)
    server.start()
    port = port_queue.get(timeout=120)
    results = []
    with tempfile.TemporaryDirectory(prefix="curate-bench-download-") as tmp:
        work = Path(tmp)
        pool = _write_inputs(work, port, args.size)
        try:
            for _ in range(args.repeats):
                for runner in (run_img2dataset, run_curate):
                    res = runner(work, args, shard_size) if runner is run_img2dataset else runner(
                        work, pool, args, shard_size)
                    res["rate_wall"] = res["successes"] / res["wall_s"]
                    res["rate_phase"] = res["successes"] / res["phase_s"]
                    results.append(res)
                    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in res.items()}),
                          flush=True)
        finally:
            stop.set()
            server.join(timeout=10)

    def best(tool: str, key: str) -> float:
        return max(r[key] for r in results if r["tool"] == tool)

    print(f"\nmachine: {platform.machine()} {os.cpu_count()} cpus, {platform.python_implementation()} "
          f"{platform.python_version()}; size {args.size} URLs, {args.processes} processes x {args.threads} threads, "
          f"{args.processes * args.shards_per_process} shards of {shard_size}")
    for key, label in (("rate_wall", "end to end"), ("rate_phase", "download phase")):
        cur, ref = best("curate", key), best("img2dataset", key)
        print(f"{label:>15}: curate {cur:8.1f} img/s   img2dataset {ref:8.1f} img/s   ratio {cur / ref:.2f}x")


if __name__ == "__main__":
    main()
