"""Benchmark: filtering a generated DataComp metadata pool (no download) — curate vs DataComp's approach.

curate: `curate import --language` (schemas, uid check, parts; fastText lid.176 `lang` once) then
`curate filter` with filters/datacomp_basic.yaml and filters/clip_l14_top30.yaml over every row.
Peer: a re-implementation, written for this benchmark, of the approach of DataComp's
baselines/apply_filter.py (load_uids_with_basic_filter / load_uids_with_clip_score): pandas, one
DataFrame per parquet for the basic filter (fastText language per caption, word/char counts,
image sides) and, for the CLIP cut, every file's scores loaded into memory for one global
`-np.sort(-scores)[n]` threshold, then per-file masks; uids as DataComp's u8,u8 arrays. It is not
DataComp's code; it follows the same steps with the same rules.

Each phase runs in a child process whose peak resident memory (the process and all its
descendants, Ray's included, sampled every 0.1 s) is reported with its rows/s.

    PYTHONPATH=. .venv/bin/python benchmarks/metapool.py --rows 10000000 [--peer-rows N] [--ray]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def measured(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Run a command; (seconds, peak RSS of its process tree in bytes, stdout)."""
    started = time.time()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc = psutil.Process(child.pid)
    peak = 0
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(child.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    while child.poll() is None:
        try:
            peak = max(peak, tree_rss(proc))
        except psutil.Error:
            pass
        time.sleep(0.1)
    reader.join()
    seconds = time.time() - started
    text = "".join(out)
    if child.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({child.returncode}):\n{text[-3000:]}")
    return seconds, peak, text


# ----------------------------------------------------------------------------- the peer (child process)


def peer(files: list[str], model_path: str, out: str) -> None:
    """DataComp-style basic filter and L/14 top-30% cut, pandas, in memory (see the module docstring)."""
    import fasttext
    import numpy as np
    import pandas as pd

    def uid_array(uids: pd.Series) -> np.ndarray:
        as_int = uids.apply(int, base=16)
        return np.array(list(zip((as_int // 2**64).astype("uint64"), (as_int % 2**64).astype("uint64"),
                                 strict=True)), "u8,u8")

    model = fasttext.load_model(model_path)
    started = time.time()
    basic = []
    for path in files:
        df = pd.read_parquet(path, columns=["uid", "text", "original_width", "original_height"])
        lang = df.text.apply(lambda x: model.predict(x.replace("\n", " "))[0][0].split("__label__")[1])
        words = df.text.apply(lambda x: len(x.split()))
        chars = df.text.apply(len)
        short = np.minimum(df.original_width, df.original_height)
        ratio = np.maximum(df.original_width, df.original_height) / short
        mask = (lang == "en") & (words > 2) & (chars > 5) & (short >= 200) & (ratio <= 3.0)
        basic.append(uid_array(df.uid[mask]))
    basic_uids = np.concatenate(basic)
    basic_s = time.time() - started

    started = time.time()
    key = "clip_l14_similarity_score"
    scores = pd.concat([pd.read_parquet(p, columns=[key]) for p in files])[key].to_numpy()
    n = int(len(scores) * 0.3)
    threshold = -np.sort(-scores)[n]
    clip = []
    for path in files:
        df = pd.read_parquet(path, columns=["uid", key])
        clip.append(uid_array(df.uid[df[key] >= threshold]))
    clip_uids = np.concatenate(clip)
    clip_s = time.time() - started
    np.save(out + ".basic.npy", np.sort(basic_uids))
    np.save(out + ".clip.npy", np.sort(clip_uids))
    Path(out + ".json").write_text(json.dumps({"basic_s": basic_s, "clip_s": clip_s, "rows": len(scores)}))


# ----------------------------------------------------------------------------- driver


def generate(meta: Path, rows: int, rows_per_file: int) -> list[Path]:
    from curate.testing.metadata import write_metadata_dir

    files = max(1, rows // rows_per_file)
    marker = meta / f"_generated_{rows}_{rows_per_file}"
    if marker.exists():
        return sorted(meta.glob("*.parquet"))
    shutil.rmtree(meta, ignore_errors=True)
    started = time.time()
    for i in range(files):  # one file at a time: bounded memory for any --rows
        write_metadata_dir(meta / f"tmp{i}", 1, rows_per_file, seed=i, npz=False)
        (meta / f"tmp{i}" / "00000000.parquet").rename(meta / f"{i:08d}.parquet")
        (meta / f"tmp{i}").rmdir()
    marker.touch()
    print(f"generated {files} files x {rows_per_file:,} rows in {time.time() - started:.0f}s at {meta}", flush=True)
    return sorted(meta.glob("*.parquet"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000, help="metadata rows (default 10M)")
    parser.add_argument("--rows-per-file", type=int, default=1_000_000)
    parser.add_argument("--peer-rows", type=int, default=None,
                        help="rows the pandas peer reads (a prefix of the files; default: all)")
    parser.add_argument("--workdir", default=None, help="where to build (default: a temp dir, removed after)")
    parser.add_argument("--ray", action="store_true", help="run curate filter on local Ray (default: in-process)")
    parser.add_argument("--peer-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_child:
        files, model, out = args.peer_child
        peer(files.split(","), model, out)
        return

    from curate.scorers.language import bundled_model_path

    work = Path(args.workdir or tempfile.mkdtemp(prefix="curate-bench-metapool-"))
    files = generate(work / "meta", args.rows, args.rows_per_file)
    rows = args.rows_per_file * len(files)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if not args.ray:
        env["CURATE_EXECUTOR"] = "local"
    pool = work / "pool"
    shutil.rmtree(pool, ignore_errors=True)
    curate = [sys.executable, "-m", "curate"]
    print(f"load average at the start: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    results: list[tuple[str, int, float, int]] = []

    def record(name: str, n: int, secs: float, peak: int) -> None:
        results.append((name, n, secs, peak))
        print(f"done: {name}: {n:,} rows, {secs:.1f}s, {n / secs:,.0f} rows/s, peak {peak / 2**30:.2f} GiB", flush=True)

    t, mem, _ = measured([*curate, "import", str(work / "meta"), "--pool", str(pool), "--language",
                          "--scratch-dir", str(work)], env)
    record("curate import --language", rows, t, mem)
    for spec in ("datacomp_basic", "clip_l14_top30"):
        t, mem, _ = measured([*curate, "filter", "--pool", str(pool), "--spec", str(REPO / "filters" / f"{spec}.yaml")],
                             env)
        record(f"curate filter {spec}", rows, t, mem)

    peer_files = files[: max(1, (args.peer_rows or rows) // args.rows_per_file)]
    out = str(work / "peer")
    t, mem, _ = measured([sys.executable, __file__, "--peer-child", ",".join(map(str, peer_files)),
                          str(bundled_model_path()), out], env)
    info = json.loads(Path(out + ".json").read_text())
    record("peer: pandas basic + L/14 top 30% (DataComp approach)", info["rows"], t, mem)
    print(f"load average at the end: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB; curate filter {'on Ray' if args.ray else 'in-process'}")
    print("| step | rows | seconds | rows/s | peak RSS (process tree) |\n|---|---|---|---|---|")
    for name, n, secs, peak in results:
        print(f"| {name} | {n:,} | {secs:.1f} | {n / secs:,.0f} | {peak / 2**30:.2f} GiB |")
    print(f"(peer phases inside its run: basic {info['basic_s']:.1f}s, clip cut {info['clip_s']:.1f}s)")

    if len(peer_files) == len(files):
        import numpy as np

        from curate.pool import Pool

        p = Pool(str(pool))
        for name, suffix in (("datacomp_basic", "basic"), ("clip_l14_top30", "clip")):
            ours = np.sort(np.load(p.path(f"subsets/{name}/uids.npy")))
            theirs = np.load(out + f".{suffix}.npy")
            both = len(np.intersect1d(ours, theirs))
            print(f"{name}: curate kept {len(ours):,}, peer kept {len(theirs):,}, in both {both:,}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
