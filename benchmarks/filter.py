"""Benchmark: datacomp_basic + CLIP L/14 top 30% over generated score tables.

curate's filter stage (exact global cut-off, pyarrow-vectorised shards) vs the same rules written
in pandas the way DataComp's baselines/apply_filter.py does (load each shard's metadata into a
DataFrame, compute masks, concatenate scores for a global np.sort threshold, intersect uids).
Both read the same parquet files in the same run; rows/s counts successful samples.

    .venv/bin/python benchmarks/filter.py --size 10000000 --rows-per-shard 250000
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from curate.config import FilterConfig
from curate.pool import Pool
from curate.stages.filter import run
from curate.testing.pool import make_score_pool

SPEC = """name: bench_basic_clip30
description: datacomp_basic + CLIP L/14 top 30% of the pool (DataComp intersection semantics)
conditions:
  - include: {filters}/datacomp_basic.yaml
  - {{column: clip_l14_similarity_score, top_fraction: 0.3}}
"""


def pandas_apply_filter(pool: Pool, shards: list[str]) -> np.ndarray:
    """DataComp-style: per-shard pandas masks, global threshold from concatenated scores, intersect."""
    frames = []
    for sid in shards:
        shard = pool.read_parquet(f"shards/{sid}.parquet", ["uid", "status", "original_width",
                                                              "original_height"]).to_pandas()
        shard = shard[shard.status == "success"]
        for scorer, cols in (("language", ["lang"]), ("text_stats", ["caption_num_words", "caption_num_chars"]),
                             ("l14", ["clip_l14_similarity_score"])):
            shard = shard.merge(pool.read_parquet(f"scores/{scorer}/{sid}.parquet", ["uid", *cols]).to_pandas(),
                                on="uid", how="left")
        frames.append(shard)
    scores = np.concatenate([f.clip_l14_similarity_score.to_numpy() for f in frames])
    n = int(len(scores) * 0.3)
    threshold = -np.sort(-scores)[n - 1]
    basic_uids, clip_uids = [], []
    for df in frames:
        min_dim = np.minimum(df.original_width, df.original_height)
        max_dim = np.maximum(df.original_width, df.original_height)
        mask = ((df.lang == "en") & (df.caption_num_words > 2) & (df.caption_num_chars > 5)
                & (min_dim >= 200) & (max_dim / min_dim <= 3.0))
        basic_uids.append(df.uid[mask].to_numpy())
        clip_uids.append(df.uid[df.clip_l14_similarity_score >= threshold].to_numpy())
    return np.intersect1d(np.concatenate(basic_uids), np.concatenate(clip_uids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=10_000_000, help="candidate rows in the pool (default 10M)")
    parser.add_argument("--rows-per-shard", type=int, default=250_000)
    parser.add_argument("--workdir", default=None, help="where to build the pool (default: a temp dir)")
    parser.add_argument("--local", action="store_true", help="run curate in-process (CURATE_EXECUTOR=local)")
    args = parser.parse_args()
    if args.local:
        os.environ["CURATE_EXECUTOR"] = "local"
    work = Path(args.workdir or tempfile.mkdtemp(prefix="curate-bench-filter-"))
    n_shards = max(1, args.size // args.rows_per_shard)
    t0 = time.time()
    pool = Pool(str(work / "pool"))
    shards = make_score_pool(pool, n_shards, args.rows_per_shard, seed=0, scorers=("l14", "language", "text_stats"),
                             dedup=False)
    print(f"generated {n_shards} shards x {args.rows_per_shard:,} rows in {time.time() - t0:.1f}s at {work}")
    spec = work / "spec.yaml"
    spec.write_text(SPEC.format(filters=Path(__file__).resolve().parent.parent / "filters"))

    print(f"load average (1/5/15 min) at the start: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    t0 = time.time()
    ref = pandas_apply_filter(pool, shards)
    t_pandas = time.time() - t0

    from curate.runtime import ensure_ray

    if not args.local:
        ensure_ray()  # Ray start-up is not part of the filter's time
    t0 = time.time()
    funnel = run(pool, FilterConfig(spec=str(spec)), quiet=True, rerun=True)
    t_curate = time.time() - t0
    kept = pool.read_parquet("subsets/bench_basic_clip30/uids.parquet")["uid"].to_numpy(zero_copy_only=False)
    assert len(kept) == len(ref) and (np.sort(kept) == np.sort(ref)).all(), "curate and pandas disagree"
    rows = funnel["population"]
    print(f"load average (1/5/15 min) at the end: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"{rows:,} successful rows of {args.size:,} candidates; kept {len(kept):,}")
    print(f"pandas (DataComp apply_filter style): {t_pandas:.2f}s  {rows / t_pandas:,.0f} rows/s")
    mode = "in-process" if args.local else "Ray"
    print(f"curate filter ({mode}):                {t_curate:.2f}s  {rows / t_curate:,.0f} rows/s  "
          f"speed-up {t_pandas / t_curate:.2f}x")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
