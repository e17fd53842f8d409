"""Semantic dedup (SemDeDup) benchmark: N x 512 float16 embeddings, next to brute-force all-pairs.

Writes a pool of random unit embeddings (mixture of 2,000 topics, 5% planted near-copies) as
embeddings/bench/*.parquet, runs curate.stages.dedup semantic on Ray (local, this machine's CPUs,
or GPU faiss with --gpu), and in the same run times brute-force all-pairs cosine on a subsample
of --brute-size rows, extrapolated quadratically to N. Peak memory is the highest summed RSS of
this process and its children (Ray workers included; shared pages are counted once per process).

    .venv/bin/python benchmarks/dedup.py --size 1000000 [--shards 100] [--brute-size 20000] [--gpu]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time

import numpy as np
import psutil
import pyarrow as pa

from curate import layout
from curate.config import DedupConfig
from curate.pool import Pool
from curate.shards import shard_name
from curate.stages.dedup import run
from curate.stages.dedup.embeddings import embedding_array
from curate.uid import make_uid

DIM = 512


class PeakRss:
    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.2)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def write_pool(root: str, size: int, shards: int, seed: int) -> Pool:
    pool = Pool(root)
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((2000, DIM)).astype(np.float32)
    per = -(-size // shards)
    for s in range(shards):
        n = min(per, size - s * per)
        if n <= 0:
            break
        vec = topics[rng.integers(0, len(topics), n)] + 0.9 * rng.standard_normal((n, DIM)).astype(np.float32)
        copies = rng.random(n) < 0.05
        src = rng.integers(0, n, int(copies.sum()))
        vec[copies] = vec[src] + 0.01 * rng.standard_normal((len(src), DIM)).astype(np.float32)
        vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        uids = [make_uid(f"http://bench/{s}/{i}", "") for i in range(n)]
        sid = shard_name(s)
        pool.write_parquet(f"embeddings/bench/{sid}.parquet",
                           pa.table({"uid": uids, "image_embedding": embedding_array(vec)}))
        pool.write_json(layout.download_marker(sid), {"samples": n})
    return pool


def brute_force_seconds(pool: Pool, rows: int, eps: float) -> float:
    """All-pairs cosine of `rows` embeddings (blocked matmul, same threshold test), timed."""
    table = pool.read_parquet_dir("embeddings/bench")
    emb = np.asarray(table["image_embedding"].combine_chunks().flatten().to_numpy(), np.float32).reshape(-1, DIM)
    emb = emb[:rows]
    start = time.perf_counter()
    dup = np.zeros(rows, bool)
    for i in range(0, rows, 4096):
        sims = emb[i : i + 4096] @ emb.T
        for r in range(sims.shape[0]):
            sims[r, : i + r + 1] = -1  # only earlier rows count, as in SemDeDup's ordering
        dup[i : i + 4096] |= sims.max(axis=1) > 1 - eps
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000, help="embeddings in the pool")
    parser.add_argument("--shards", type=int, default=0, help="embedding shards (default: size / 10000)")
    parser.add_argument("--brute-size", type=int, default=20_000, help="subsample for the all-pairs baseline")
    parser.add_argument("--eps", type=float, default=0.05)
    parser.add_argument("--clusters", type=int, default=0, help="k-means clusters (default: size / 1000)")
    parser.add_argument("--sample-size", type=int, default=100_000, help="k-means training sample")
    parser.add_argument("--cluster-tasks", type=int, default=16)
    parser.add_argument("--gpu", action="store_true", help="GPU faiss for k-means and assignment")
    parser.add_argument("--workdir", default=None, help="where to write the pool (default: a temp dir)")
    args = parser.parse_args()
    shards = args.shards or max(1, args.size // 10_000)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        t0 = time.perf_counter()
        pool = write_pool(os.path.join(tmp, "pool"), args.size, shards, seed=0)
        print(f"wrote {args.size:,} x {DIM} float16 embeddings in {shards} shards ({time.perf_counter() - t0:.1f}s)")
        method = {"method": "semantic", "embeddings": "bench", "eps": args.eps, "sample_size": args.sample_size,
                  "cluster_tasks": args.cluster_tasks, "use_gpu": "yes" if args.gpu else "no"}
        if args.clusters:
            method["n_clusters"] = args.clusters
        with PeakRss() as mem:
            t0 = time.perf_counter()
            report = run(pool, DedupConfig(methods=[method]), quiet=True)
            wall = time.perf_counter() - t0
        stats = report["methods"]["semantic"]
        brute_rows = min(args.brute_size, args.size)
        brute = brute_force_seconds(pool, brute_rows, args.eps)
        extrapolated = brute * (args.size / brute_rows) ** 2
        cpus = os.cpu_count()
        print(f"machine: {cpus} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, gpu faiss: {args.gpu}")
        print(f"semdedup: {args.size:,} embeddings, wall {wall:.1f}s, peak RSS {mem.peak / 2**30:.2f} GiB, "
              f"removed {stats['samples_removed']:,} ({100 * stats['removed_rate']:.2f}%)")
        print(f"brute-force all-pairs: {brute_rows:,} rows in {brute:.2f}s -> extrapolated to {args.size:,}: "
              f"{extrapolated:,.0f}s ({extrapolated / 3600:.2f} h); speed-up {extrapolated / wall:.1f}x")


if __name__ == "__main__":
    main()
