"""Training samples/s of the loop `curate eval` trains each arm with (curate.dfn.train_dfn, the same loop
as `curate train-dfn`) against open_clip's own training loop (open_clip_train.main.main), same run.

Both train curate-tiny from scratch on the same webdataset shards (generated scenes, JPEGs of
--image-size px), fp32 on the CPU, with the same batch size, number of samples, torch threads,
DataLoader workers, AdamW settings, warmup + cosine schedule and seed; one checkpoint per epoch
(open_clip's --save-frequency 1, curate's checkpoint.every_steps = steps per epoch), no eval, no
wandb/tensorboard. Each run is a fresh child process (imports not timed); the arms alternate
(A B, B A, ...) because the machine is shared and its load drifts.

Steady-state samples/s: both loops log every step (open_clip --log-every-n-steps 1, curate
log_every 1); the child stamps each step's log line as it is emitted and the rate is
batch × (steps after the first --warmup-steps) / (time from the end of step --warmup-steps to the end
of the last step). That excludes data loading, model construction, the loaders' first batches and
the final checkpoint / model save, and includes any mid-run checkpoint for both arms alike.
Wall time is the training call from start to return (curate: read the shards into memory, build,
train, checkpoints, final hf-hub model dir; open_clip: build, stream the shards, train, checkpoints).
Also printed, to tell the loop from its data pipeline: the training process's own CPU time per step
(excludes loader workers), open_clip's share of steady time spent waiting for a batch (its
"Data (t)"), and each arm's data pipeline timed alone in one process (--pipeline-repeats).

Differences that are not equalised: open_clip_train trains on its augmenting transform
(RandomResizedCrop, scale 0.9-1) and a sample shuffle buffer, curate on the deterministic eval
transform (Resize + CenterCrop) in a (seed, step)-determined order (exact resume needs both);
open_clip tokenizes per sample in the worker, curate per batch in the collate; curate reads the
shards into memory before its loop, open_clip streams them. Neither loss curve is expected to match.

    .venv/bin/python benchmarks/eval_train_speed.py --pairs 4096 --batch-size 64 --repeats 5
    .venv/bin/python benchmarks/eval_train_speed.py --quick
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULT_TAG = "EVAL_TRAIN_SPEED_RESULT "
ARMS = ("open_clip_train", "curate")
LR, WD = 1e-3, 0.1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def steady_rate(stamps: list[float], batch: int, warmup: int) -> tuple[float, int]:
    """samples/s from per-step end times, leaving out the first `warmup` steps; and the steps counted."""
    if len(stamps) <= warmup + 1:
        raise SystemExit(f"only {len(stamps)} steps logged; need more than --warmup-steps {warmup} + 1")
    counted = len(stamps) - 1 - warmup
    return batch * counted / (stamps[-1] - stamps[warmup]), counted


# ---------------------------------------------------------------- child processes: one training run each

def child_curate(a: argparse.Namespace) -> dict[str, Any]:
    from curate.dfn.config import DFNTrainConfig
    from curate.dfn.train import run_training

    per_epoch = a.pairs // a.batch_size
    stamps: list[float] = []
    cpu: list[float] = []

    def log(line: str) -> None:
        if line.startswith("step "):
            stamps.append(time.perf_counter())
            cpu.append(time.process_time())

    cfg = DFNTrainConfig.model_validate({
        "data": {"kind": "webdataset", "urls": [a.data]},
        "model": {"name": "curate-tiny", "from_scratch": True},
        "train": {"steps": per_epoch * a.epochs, "batch_size": a.batch_size, "lr": LR, "weight_decay": WD,
                  "warmup_steps": a.lr_warmup, "beta1": 0.9, "beta2": 0.98, "eps": 1e-6,
                  "precision": "fp32", "loader_workers": a.workers, "cpu_threads": a.threads,
                  "log_every": 1, "seed": a.seed},
        "checkpoint": {"every_steps": per_epoch, "keep_last": a.epochs, "resume": False},
        "scaling": {"backend": "local"},
        "output_dir": a.out})
    t0 = time.perf_counter()
    # what train_dfn(cfg) runs for backend local, with a log callback that stamps each step's line
    summary = run_training(cfg, log=log)
    wall = time.perf_counter() - t0
    return {"stamps": stamps, "cpu": cpu, "wall_s": wall, "samples_seen": summary["counts"]["samples"],
            "steps": summary["step"], "final_loss": summary["final_loss"]}


class _StepStamps(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.stamps: list[float] = []
        self.cpu: list[float] = []
        self.data_wait: list[float] = []  # per step: the meters reset after each log line
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("Train Epoch:"):
            self.stamps.append(time.perf_counter())
            self.cpu.append(time.process_time())
            self.data_wait.append(float(msg.split("Data (t): ", 1)[1].split()[0]))
            self.last = msg


def patch_open_clip_train() -> None:
    import functools

    import open_clip_train.data
    import webdataset.tariterators

    from curate.models.tiny import register_tiny_configs

    # open_clip_train 3.3.0 with webdataset >= 0.2.96 fails with KeyError 'fname' on the end-of-shard
    # marker webdataset now yields (open_clip#935, webdataset#384); the fix given there: no marker
    open_clip_train.data.tar_file_expander = functools.partial(webdataset.tariterators.tar_file_expander,
                                                               eof_value=None)
    register_tiny_configs()  # open_clip_train has no option for a config dir; register in-process


def shard_urls(data: str) -> str:
    shards = sorted(Path(data).glob("*.tar"))
    # brace notation, as open_clip_train expects for a shard list
    return str(Path(data) / f"{{{shards[0].stem}..{shards[-1].stem}}}.tar")


def child_open_clip(a: argparse.Namespace) -> dict[str, Any]:
    import torch
    from open_clip_train.main import main as oc_main

    patch_open_clip_train()
    torch.set_num_threads(a.threads)
    urls = shard_urls(a.data)
    handler = _StepStamps()
    logging.root.addHandler(handler)
    argv = ["--train-data", urls, "--dataset-type", "webdataset", "--train-num-samples", str(a.pairs),
            "--model", "curate-tiny", "--batch-size", str(a.batch_size), "--epochs", str(a.epochs),
            "--workers", str(a.workers), "--precision", "fp32", "--device", "cpu",
            "--lr", str(LR), "--wd", str(WD), "--warmup", str(a.lr_warmup),
            "--beta1", "0.9", "--beta2", "0.98", "--eps", "1e-6", "--seed", str(a.seed),
            "--logs", a.out, "--name", "run", "--log-every-n-steps", "1", "--report-to", "",
            "--save-frequency", "1", "--zeroshot-frequency", "0", "--val-frequency", "0"]
    t0 = time.perf_counter()
    oc_main(argv)
    wall = time.perf_counter() - t0
    steps = len(handler.stamps)
    steady = slice(a.warmup_steps + 1, None)
    wait = sum(handler.data_wait[steady]) / max(1e-9, handler.stamps[-1] - handler.stamps[a.warmup_steps])
    return {"stamps": handler.stamps, "cpu": handler.cpu, "wall_s": wall, "data_wait_share": wait,
            "samples_seen": steps * a.batch_size, "steps": steps,
            "final_loss": float(handler.last.rsplit("Loss: ", 1)[1].split()[0]) if steps else None}


def time_pipelines(data: Path, a: argparse.Namespace, curate_first: bool) -> dict[str, float]:
    """samples/s of each arm's data pipeline alone (decode, preprocess, tokenize, batch), in this
    process without workers and with one torch thread: the per-worker cost the training runs pay."""
    import open_clip
    import torch
    from open_clip_train.data import get_wds_dataset

    from curate.dfn.config import ModelStart
    from curate.dfn.data import read_webdataset
    from curate.dfn.loader import PairDataset, StepBatchSampler, make_loader
    from curate.dfn.model import build_starting_model

    patch_open_clip_train()
    torch.set_num_threads(1)
    _, train_tf, _ = open_clip.create_model_and_transforms("curate-tiny")  # what open_clip_train uses
    start = build_starting_model(ModelStart(name="curate-tiny", from_scratch=True))  # what curate uses
    ns = argparse.Namespace(train_data=shard_urls(str(data)), train_num_samples=a.pairs, dataset_resampled=False,
                            train_data_upsampling_factors=None, seed=a.seed, batch_size=a.batch_size,
                            world_size=1, workers=0)
    pairs = read_webdataset([str(data)])  # curate holds the set in memory before training; not timed here

    def open_clip_rate() -> float:
        t0, n = time.perf_counter(), 0
        for images, _ in get_wds_dataset(ns, train_tf, True, tokenizer=start.tokenizer).dataloader:
            n += images.shape[0]
        return n / (time.perf_counter() - t0)

    def curate_rate() -> float:
        t0, n = time.perf_counter(), 0
        loader = make_loader(PairDataset(pairs.table, start.preprocess),
                             StepBatchSampler(len(pairs), a.batch_size, a.seed, 0, a.pairs // a.batch_size),
                             start.tokenizer, 0)
        for batch in loader:
            n += batch["images"].shape[0]
        return n / (time.perf_counter() - t0)

    if curate_first:
        cur = curate_rate()
        return {"open_clip_train": open_clip_rate(), "curate": cur}
    oc = open_clip_rate()
    return {"open_clip_train": oc, "curate": curate_rate()}


# ---------------------------------------------------------------- parent

def run_child(arm: str, data: Path, out: Path, a: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", arm, "--data", str(data), "--out", str(out),
           "--pairs", str(a.pairs), "--batch-size", str(a.batch_size), "--epochs", str(a.epochs),
           "--workers", str(a.workers), "--threads", str(a.threads), "--lr-warmup", str(a.lr_warmup),
           "--seed", str(a.seed)]
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    t0, ru0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    process_s = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"{arm} run failed (exit {proc.returncode})")
    res = json.loads(lines[-1][len(RESULT_TAG):])
    res["rate"], res["counted_steps"] = steady_rate(res.pop("stamps"), a.batch_size, a.warmup_steps)
    cpu = res.pop("cpu")
    res["main_cpu_ms_per_step"] = 1000 * (cpu[-1] - cpu[a.warmup_steps]) / res["counted_steps"]
    res["process_s"], res["process_cpu_s"] = process_s, cpu_s
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=4096, help="image-caption pairs in the shards (one epoch)")
    ap.add_argument("--per-shard", type=int, default=512)
    ap.add_argument("--image-size", type=int, default=128, help="side of the generated JPEGs")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1, help="DataLoader workers, both arms")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads, both arms")
    ap.add_argument("--lr-warmup", type=int, default=5, help="lr warmup steps (schedule), both arms")
    ap.add_argument("--warmup-steps", type=int, default=5, help="steps left out of the steady-state rate")
    ap.add_argument("--repeats", type=int, default=3, help="runs per arm, alternating order")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pipeline-repeats", type=int, default=2,
                    help="also time each arm's data pipeline alone (no training), this many times; 0: skip")
    ap.add_argument("--quick", action="store_true", help="small check: 1,024 pairs, 1 repeat")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--child", choices=ARMS, help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        res = child_curate(a) if a.child == "curate" else child_open_clip(a)
        print(RESULT_TAG + json.dumps(res), flush=True)
        return
    if a.quick:
        a.pairs, a.repeats, a.per_shard = 1024, 1, 256
    if a.pairs % a.batch_size or (a.pairs // a.batch_size) % max(1, a.workers):
        raise SystemExit("--pairs must be a multiple of --batch-size x --workers (open_clip_train rounds the "
                         "epoch up to whole batches per worker, curate drops a partial batch; equal sample "
                         "counts need no remainder)")
    shards = -(-a.pairs // a.per_shard)
    if shards < a.workers:
        raise SystemExit(f"{shards} shards for {a.workers} workers: open_clip_train needs shards >= workers")

    from curate.demo.web import write_training_set

    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        write_training_set(root / "shards", a.pairs, size=a.image_size, per_shard=a.per_shard)
        print(f"shards: {a.pairs} pairs, {a.image_size} px JPEG, {shards} tars "
              f"({sum(p.stat().st_size for p in (root / 'shards').glob('*.tar')) / 2**20:.1f} MiB), "
              f"written in {time.perf_counter() - t0:.1f} s", flush=True)
        for r in range(a.repeats):
            order = ARMS if r % 2 == 0 else ARMS[::-1]
            for arm in order:
                res = run_child(arm, root / "shards", root / f"{arm}-{r}", a)
                runs[arm].append(res)
                print(f"  repeat {r + 1} {arm}: {res['rate']:.1f} samples/s steady, wall {res['wall_s']:.1f} s, "
                      f"{res['samples_seen']} samples in {res['steps']} steps, final loss {res['final_loss']:.3f}, "
                      f"main process CPU {res['main_cpu_ms_per_step']:.0f} ms/step, CPU of the whole child "
                      f"(imports, loader workers, setup) {res['process_cpu_s']:.1f} s"
                      + (f", main process waiting for data {100 * res['data_wait_share']:.0f}% of the steady time"
                         if "data_wait_share" in res else ""), flush=True)
        pipes: list[dict[str, float]] = []
        for r in range(a.pipeline_repeats):
            pipes.append(time_pipelines(root / "shards", a, curate_first=r % 2 == 1))
            print(f"  data pipeline alone, repeat {r + 1}: "
                  + ", ".join(f"{arm} {rate:.0f} samples/s" for arm, rate in pipes[-1].items()), flush=True)
    load = os.getloadavg()
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs ({cpu_model()}), no GPU used; "
          f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min). Shared machine: "
          "figures are noisy; arms alternate and medians are reported.")
    print(f"settings: curate-tiny from scratch, fp32 CPU, batch {a.batch_size}, {a.pairs} pairs x {a.epochs} "
          f"epoch(s), {a.workers} loader worker(s), {a.threads} torch thread(s), steady rate after "
          f"{a.warmup_steps} steps, {a.repeats} run(s) each")
    print("| implementation | steady samples/s (median; runs) | wall s (median; runs) | samples seen | final loss |")
    print("|---|---|---|---|---|")
    med: dict[str, dict[str, float]] = {}
    for arm in ARMS:
        rs = runs[arm]
        med[arm] = {"rate": statistics.median(r["rate"] for r in rs),
                    "wall": statistics.median(r["wall_s"] for r in rs)}
        rates = ", ".join(f"{r['rate']:.1f}" for r in rs)
        walls = ", ".join(f"{r['wall_s']:.1f}" for r in rs)
        print(f"| {arm} | {med[arm]['rate']:.1f} ({rates}) | {med[arm]['wall']:.1f} ({walls}) | "
              f"{', '.join(sorted({str(r['samples_seen']) for r in rs}))} | "
              f"{statistics.median(r['final_loss'] for r in rs):.3f} |")
    ratio = med["curate"]["rate"] / med["open_clip_train"]["rate"]
    wall_ratio = med["open_clip_train"]["wall"] / med["curate"]["wall"]
    # the two runs of one repeat are back to back, so their ratio sees the least load drift
    paired = [c["rate"] / o["rate"] for c, o in zip(runs["curate"], runs["open_clip_train"], strict=True)]
    cpu_ms = {arm: statistics.median(r["main_cpu_ms_per_step"] for r in runs[arm]) for arm in ARMS}
    print(f"curate / open_clip_train steady samples/s: {ratio:.2f}x of the medians (goal >= 0.9x); "
          f"within each repeat {', '.join(f'{x:.2f}' for x in paired)}, median {statistics.median(paired):.2f}x; "
          f"wall-time speed ratio (open_clip wall / curate wall): {wall_ratio:.2f}x")
    print(f"training process CPU per step (median, load-independent-ish): open_clip_train "
          f"{cpu_ms['open_clip_train']:.0f} ms, curate {cpu_ms['curate']:.0f} ms")
    if pipes:
        print("data pipeline alone, 1 process, no workers (median): " + ", ".join(
            f"{arm} {statistics.median(p[arm] for p in pipes):.0f} samples/s" for arm in ARMS))
    if a.json:
        a.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "runs": runs,
                                      "ratio": ratio, "paired_ratios": paired, "wall_ratio": wall_ratio,
                                      "pipelines": pipes,
                                      "cpu": cpu_model()}, indent=2))


if __name__ == "__main__":
    main()
