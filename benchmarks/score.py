"""Benchmark the score stage: batched Ray Data pipeline vs a naive per-sample open_clip loop.

Both read the same tar shards (written with curate.shards.ShardWriter, images at --image-px like the
download stage's output) in the same run. The naive peer does what Data-Juicer's
image_text_similarity op does: for each sample, open the image, preprocess it, tokenise the caption
and encode the pair one at a time. The batched side is `curate.stages.score.run` with one clip
scorer (decode once on CPU tasks, draft-mode JPEG decoding, actor pool, batches).

    # CPU (what RESULTS.md reports for this 2-core machine)
    python benchmarks/score.py --model curate-tiny --size 2000
    python benchmarks/score.py --model ViT-B-32 --size 192
    # GPU machine: end to end from tar shards, random weights, bf16, one actor per GPU; ViT-B-32 needs
    # the JPEGs decoded on the GPU (nvJPEG) to get past what 14 CPU cores of PIL decode
    python benchmarks/score.py --device cuda --model ViT-B-32 --size 100000 --batch-size 1024 --decode-tasks 14 \
        --jpeg-decode-on model --skip-naive
    python benchmarks/score.py --device cuda --model ViT-L-14 --size 50000 --batch-size 512 --decode-tasks 14 \
        --skip-naive

Weights are random ("random" pretrained): speed does not depend on them.

End to end means what a user waits for: each side runs in a fresh Python process, timed from
process start to its last score (imports of torch/open_clip, Ray start, model load included).
Steady state is the rate once started: the naive loop after its model loaded; the pipeline over
the second half of its shards by completion time (the first half absorbs start-up and the decode
backlog that builds up while the actor loads its model).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def write_shards(root: str, size: int, per_shard: int, image_px: int) -> list[str]:
    from curate import layout
    from curate.pool import Pool
    from curate.shards import SampleRow, ShardWriter, shard_name
    from curate.testing.synthetic import encode, make_samples
    from curate.uid import make_uid

    pool = Pool(root)
    base = make_samples(min(size, 512), seed=0, size=image_px)  # drawing is slow; reuse images
    ids = []
    for s in range((size + per_shard - 1) // per_shard):
        sid = shard_name(s)
        writer = ShardWriter(pool, sid)
        for i in range(s * per_shard, min(size, (s + 1) * per_shard)):
            sample = base[i % len(base)]
            url = f"http://bench.test/{i}.jpg"
            writer.add(SampleRow(key=f"{i:09d}", uid=make_uid(url, sample.caption), url=url, caption=sample.caption,
                                 status="success", width=image_px, height=image_px, image=encode(sample.image)))
        writer.close({})
        pool.write_json(layout.download_marker(sid), {})
        ids.append(sid)
    return ids


def naive_loop(root: str, shard_ids: list[str], model: str, device: str,
               limit: int) -> tuple[int, float, float]:
    """Per-sample open_clip scoring, as Data-Juicer's image_text_similarity op does it."""
    import io

    import open_clip
    import torch
    from PIL import Image

    from curate.models.tiny import register_tiny_configs
    from curate.pool import Pool
    from curate.shards import iter_shard_samples

    register_tiny_configs()
    start = time.time()
    net, _, preprocess = open_clip.create_model_and_transforms(model, device=device)
    net.eval()
    tokenizer = open_clip.get_tokenizer(model)
    loaded = time.time()
    pool, n = Pool(root), 0
    with torch.inference_mode():
        for sid in shard_ids:
            for sample in iter_shard_samples(pool, sid):
                image = preprocess(Image.open(io.BytesIO(sample["image"])).convert("RGB")).unsqueeze(0).to(device)
                text = tokenizer([sample["caption"]]).to(device)
                img = torch.nn.functional.normalize(net.encode_image(image), dim=-1)
                txt = torch.nn.functional.normalize(net.encode_text(text), dim=-1)
                float((img * txt).sum())
                n += 1
                if n >= limit:
                    return n, time.time() - start, time.time() - loaded
    return n, time.time() - start, time.time() - loaded


def batched_pipeline(root: str, model: str, device: str, batch_size: int,
                     decode_tasks: int, jpeg_decode_on: str = "tasks") -> dict[str, object]:
    from curate import layout
    from curate.config import ScoreConfig
    from curate.pool import Pool
    from curate.stages.score import run

    gpu = 1 if device == "cuda" else 0
    cfg = ScoreConfig.model_validate({
        "scorers": [{"type": "clip", "name": "bench", "model": model, "pretrained": "random",
                     "batch_size": batch_size, "num_gpus": gpu, "num_cpus": 1}],
        "decode_batch_size": min(batch_size, 256),
        "decode_num_cpus": 1,
        "jpeg_decode_on": jpeg_decode_on,
    })
    start = time.time()
    report = run(Pool(root), cfg, quiet=True, rerun=True)
    seconds = time.time() - start
    markers = Pool(root).read_marker_dir(layout.SCORE_MARKERS)[0]
    done = sorted((float(st["finished_at"]), int(st["samples"])) for st in markers.values())
    half = len(done) // 2
    span = done[-1][0] - done[half][0] if len(done) >= 4 else 0.0
    # Meaningless when shards finish together (one model batch spans several shards): report none then.
    steady = sum(n for _, n in done[half + 1:]) / span if span > 1.0 else None
    return {"images": int(report["totals"]["samples"]), "run_seconds": seconds, "steady_img_per_s": steady,
            "phase_seconds": report.get("phase_seconds", {})}


def run_side(args: argparse.Namespace, side: str, root: str, shard_ids: list[str]) -> dict[str, object]:
    """One side in a fresh process; wall time from process start to exit (a user's end to end)."""
    cmd = [sys.executable, __file__, "--side", side, "--root", root, "--model", args.model, "--device", args.device,
           "--batch-size", str(args.batch_size), "--decode-tasks", str(args.decode_tasks),
           "--threads", str(args.threads), "--naive-limit", str(args.naive_limit or args.size),
           "--jpeg-decode-on", args.jpeg_decode_on,
           "--shard-ids", ",".join(shard_ids)]
    load = os.getloadavg()[0]
    start = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.time() - start
    if out.returncode:
        raise SystemExit(f"{side} side failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {**result, "wall_seconds": wall, "load_before": load, "load_after": os.getloadavg()[0]}


def side_main(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.side == "naive":
        n, seconds, after_load = naive_loop(args.root, args.shard_ids.split(","), args.model, args.device,
                                            args.naive_limit)
        result: dict[str, object] = {"images": n, "run_seconds": seconds, "steady_img_per_s": n / after_load}
    else:
        result = batched_pipeline(args.root, args.model, args.device, args.batch_size, args.decode_tasks,
                                  args.jpeg_decode_on)
    print(json.dumps(result))


ROOT = Path(__file__).resolve().parents[1]


class GpuSampler:
    """Mean GPU utilisation from nvidia-smi, sampled every 0.5 s while the pipeline runs."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout
                self.values.append(float(out.split()[0]))
            except Exception:
                pass
            time.sleep(0.5)

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float | None:
        return round(float(np.mean(self.values)), 1) if self.values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="curate-tiny", help="open_clip architecture (random weights)")
    parser.add_argument("--size", type=int, default=2000, help="images in the benchmark pool")
    parser.add_argument("--per-shard", type=int, default=500, help="images per shard")
    parser.add_argument("--image-px", type=int, default=256, help="side of the stored JPEGs")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--decode-tasks", type=int, default=1, help="CPU decode tasks (Ray CPUs beyond the actor)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--jpeg-decode-on", default="tasks", choices=["tasks", "model"],
                        help="score.jpeg_decode_on: decode JPEGs in CPU tasks, or in the model actor on its device")
    parser.add_argument("--skip-naive", action="store_true", help="run the batched pipeline only")
    parser.add_argument("--naive-limit", type=int, default=0, help="score only this many samples naively (0: all)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the naive loop; the pipeline's actor gets the same (num_cpus=1)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--side", choices=["naive", "batched"], help=argparse.SUPPRESS)  # child process
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--shard-ids", help=argparse.SUPPRESS)
    args = parser.parse_args()

    os.environ.setdefault("CURATE_RAY_NUM_CPUS", str(1 + args.decode_tasks))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if args.side:
        side_main(args)
        return
    root = tempfile.mkdtemp(prefix="curate-score-bench-")
    t = time.time()
    shard_ids = write_shards(root, args.size, args.per_shard, args.image_px)
    print(f"wrote {args.size} images in {len(shard_ids)} shards ({time.time() - t:.1f}s)", flush=True)

    with GpuSampler() as gpu:
        batched = run_side(args, "batched", root, shard_ids)
    print(f"batched: {json.dumps(batched)}", flush=True)
    if args.skip_naive:
        print(json.dumps({"model": args.model, "device": args.device, "images": args.size,
                          "jpeg_decode_on": args.jpeg_decode_on, "batched": batched,
                          "batched_img_per_s": round(batched["images"] / batched["wall_seconds"], 1),
                          "gpu_util_mean_pct": gpu.mean if args.device == "cuda" else None}, indent=2))
        return
    naive = run_side(args, "naive", root, shard_ids)
    print(f"naive: {json.dumps(naive)}", flush=True)
    e2e_b = batched["images"] / batched["wall_seconds"]
    e2e_n = naive["images"] / naive["wall_seconds"]
    steady_b, steady_n = batched["steady_img_per_s"], naive["steady_img_per_s"]
    result = {
        "model": args.model, "device": args.device, "images": args.size, "per_shard": args.per_shard,
        "jpeg_decode_on": args.jpeg_decode_on,
        "image_px": args.image_px,
        "batched_images": batched["images"], "batched_wall_seconds": round(batched["wall_seconds"], 2),
        "batched_img_per_s": round(e2e_b, 1), "batched_phase_seconds": batched["phase_seconds"],
        "naive_images": naive["images"], "naive_wall_seconds": round(naive["wall_seconds"], 2),
        "naive_img_per_s": round(e2e_n, 1),
        "speedup_end_to_end": round(e2e_b / e2e_n, 2),
        "batched_steady_img_per_s": round(steady_b, 1) if steady_b else None,
        "naive_steady_img_per_s": round(steady_n, 1),
        "speedup_steady": round(steady_b / steady_n, 2) if steady_b else None,
        "load_average": [round(batched["load_before"], 1), round(naive["load_after"], 1)],
        "gpu_util_mean_pct": gpu.mean if args.device == "cuda" else None,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, torch threads {args.threads}",
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
