"""Export throughput: curate export vs a hand-written webdataset filter-and-reshard, same pool, same run.

The pool: `--size` successful samples of `--image-size` px JPEGs (curate.testing.synthetic shapes) in
`--shards` download shards, a clip score table, and a subset of `--keep` of the uids. The peer is
what one writes by hand with webdataset 0.2: wds.WebDataset over the download tars, keep samples whose
uid is in the subset, wds.ShardWriter into new tars. curate additionally writes the metadata parquet
with every score column. Both outputs are checked to hold the same uids.

    .venv/bin/python benchmarks/export.py --size 8000 --shards 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import webdataset as wds

from curate import layout
from curate.config import ExportConfig, StatsConfig
from curate.pool import Pool
from curate.shards import SampleRow, ShardWriter, shard_name
from curate.testing.synthetic import COLORS, SHAPES, draw_shape, encode
from curate.uid import make_uid


def build_pool(root: Path, size: int, shards: int, image_size: int, keep: float, seed: int) -> tuple[Pool, list[str]]:
    pool = Pool(str(root))
    rng = np.random.default_rng(seed)
    per = size // shards
    colors, shapes = list(COLORS), list(SHAPES)
    subset: list[str] = []
    for s in range(shards):
        sid = shard_name(s)
        writer = ShardWriter(pool, sid)
        uids, scores = [], []
        for i in range(per):
            c, sh = colors[int(rng.integers(len(colors)))], shapes[int(rng.integers(len(shapes)))]
            caption = f"a photo of a {c} {sh} number {s * per + i}"
            url = f"http://127.0.0.1/{s}/{i}.jpg"
            uid = make_uid(url, caption)
            jpg = encode(draw_shape(c, sh, image_size, rng), quality=90)
            writer.add(SampleRow(f"{sid}{i:05d}", uid, url, caption, "success", width=image_size,
                                 height=image_size, original_width=image_size, original_height=image_size, image=jpg))
            uids.append(uid)
            scores.append(float(rng.random()))
        writer.close({"count": per})
        pool.write_json(layout.download_marker(sid), {"samples": per})
        pool.write_parquet(f"scores/clip_b32/{sid}.parquet",
                           pa.table({"uid": uids, "clip_b32_similarity_score": pa.array(scores, pa.float32())}))
        subset += [u for u, sc in zip(uids, scores, strict=True) if sc < keep]
    pool.write_parquet("subsets/bench/uids.parquet", pa.table({"uid": subset}))
    return pool, subset


def peer_webdataset(pool: Pool, subset: set[str], out: Path, per_shard: int) -> int:
    out.mkdir(parents=True, exist_ok=True)
    urls = [pool.path(f"shards/{n}") for n in pool.listdir("shards") if n.endswith(".tar")]
    written = 0
    with wds.ShardWriter(str(out / "%08d.tar"), maxcount=per_shard, verbose=0) as sink:
        for sample in wds.WebDataset(urls, shardshuffle=False):
            meta = json.loads(sample["json"])
            if meta["uid"] in subset:
                sink.write({"__key__": f"{meta['uid']}-0", "jpg": sample["jpg"], "txt": sample["txt"],
                            "json": sample["json"]})
                written += 1
    return written


def written_uids(tars: list[str]) -> set[str]:
    return {s["__key__"].rsplit("-", 1)[0] for s in wds.WebDataset(tars, shardshuffle=False)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=8000, help="successful samples in the pool")
    ap.add_argument("--shards", type=int, default=8, help="download shards")
    ap.add_argument("--image-size", type=int, default=256, help="image side, pixels")
    ap.add_argument("--keep", type=float, default=0.5, help="fraction of uids in the subset")
    ap.add_argument("--samples-per-shard", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from curate.runtime import ensure_ray
    from curate.stages import export
    from curate.stats import write_report

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        pool, subset = build_pool(Path(tmp) / "pool", args.size, args.shards, args.image_size, args.keep, args.seed)
        build_s = time.perf_counter() - t0
        tar_mb = sum(os.path.getsize(pool.path(f"shards/{n}")) for n in pool.listdir("shards")
                     if n.endswith(".tar")) / 1e6
        print(f"pool: {args.size:,} samples, {args.shards} shards, {tar_mb:.1f} MB of tars, subset {len(subset):,} "
              f"({build_s:.1f}s to build)")
        rows = []

        t0 = time.perf_counter()
        n_peer = peer_webdataset(pool, set(subset), Path(tmp) / "peer", args.samples_per_shard)
        rows.append(("webdataset filter + ShardWriter (1 process)", n_peer, time.perf_counter() - t0))

        os.environ["CURATE_EXECUTOR"] = "local"
        t0 = time.perf_counter()
        rep = export.run(pool, ExportConfig(subset="bench", name="local", samples_per_shard=args.samples_per_shard),
                         quiet=True)
        rows.append(("curate export, in-process (CURATE_EXECUTOR=local)", rep["samples_written"],
                     time.perf_counter() - t0))
        del os.environ["CURATE_EXECUTOR"]

        ensure_ray()  # started outside the timing, as a long-running pipeline has it up already
        t0 = time.perf_counter()
        rep = export.run(pool, ExportConfig(subset="bench", name="ray", samples_per_shard=args.samples_per_shard),
                         quiet=True)
        rows.append(("curate export, Ray (local, all cores)", rep["samples_written"], time.perf_counter() - t0))

        peer_uids = written_uids([str(p) for p in sorted((Path(tmp) / "peer").glob("*.tar"))])
        ours = written_uids([pool.path(f"exports/ray/{n}") for n in rep["output_shards"]])
        assert peer_uids == ours == set(subset), "outputs differ"

        t0 = time.perf_counter()
        write_report(pool, StatsConfig(), quiet=True)
        stats_s = time.perf_counter() - t0

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}")
    print("| implementation | samples written | seconds | samples/s |\n|---|---|---|---|")
    for name, n, s in rows:
        print(f"| {name} | {n:,} | {s:.2f} | {n / s:,.0f} |")
    print(f"curate stats on the same pool (after the exports): {stats_s:.2f} s")


if __name__ == "__main__":
    main()
