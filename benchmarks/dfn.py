"""DFN training throughput: curate train-dfn (local, and Ray Train with 1 worker) vs a hand-written
open_clip training loop over the same pairs, same run; then eval-dfn AUC of each trained model.

The peer is the minimal loop one writes by hand: every image decoded and preprocessed into memory
up front, then open_clip.ClipLoss + AdamW + cosine schedule over seeded batches, no checkpoints.
curate additionally decodes lazily per batch, writes resumable checkpoints every --checkpoint-every
steps and the final hf-hub model directory. All run curate-tiny from scratch with the same settings.

    .venv/bin/python benchmarks/dfn.py --pairs 1024 --steps 60 --batch-size 64
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image

from curate.dfn import train_dfn
from curate.dfn.config import DFNTrainConfig
from curate.dfn.data import read_webdataset
from curate.dfn.evaluate import evaluate_filter
from curate.dfn.model import _named_model_cfg
from curate.models.save import save_clip_dir
from curate.models.tiny import register_tiny_configs
from curate.testing.synthetic_set import write_webdataset

WARMUP_STEPS = 5


def hand_written_loop(train_dir: Path, out: Path, steps: int, batch: int, lr: float, seed: int) -> dict:
    """The peer: decode everything first, then a plain ClipLoss/AdamW loop."""
    register_tiny_configs()
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    pairs = read_webdataset([str(train_dir)])
    model, _, preprocess = open_clip.create_model_and_transforms("curate-tiny")
    tokenizer = open_clip.get_tokenizer("curate-tiny")
    images = torch.stack([preprocess(Image.open(io.BytesIO(b)).convert("RGB"))
                          for b in pairs.table["image"].to_pylist()])
    texts = tokenizer(pairs.table["caption"].to_pylist())
    t_loop = time.perf_counter()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.98), eps=1e-6)
    warmup = WARMUP_STEPS
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warmup if s < warmup else
                                              0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup))))
    loss_fn = open_clip.ClipLoss()
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        idx = torch.from_numpy(rng.choice(len(images), batch, replace=False))
        out_ = model(images[idx], texts[idx])
        loss = loss_fn(*out_[:3])  # (image_features, text_features, logit_scale.exp())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    loop_s = time.perf_counter() - t_loop
    save_clip_dir(model, _named_model_cfg("curate-tiny"), out / "model")
    return {"loop_s": loop_s, "wall_s": time.perf_counter() - t0, "final_loss": float(loss),
            "model_dir": str(out / "model")}


def curate_run(train_dir: Path, out: Path, args: argparse.Namespace, backend: str) -> dict:
    cfg = DFNTrainConfig.model_validate({
        "data": {"kind": "webdataset", "urls": [str(train_dir)]},
        "model": {"name": "curate-tiny", "from_scratch": True},
        "train": {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "weight_decay": 0.1,
                  "warmup_steps": WARMUP_STEPS,
                  "loader_workers": args.loader_workers, "cpu_threads": 1, "log_every": max(1, args.steps // 4),
                  "seed": args.seed},
        "checkpoint": {"every_steps": args.checkpoint_every},
        "scaling": {"backend": backend, "num_workers": 1, "cpus_per_worker": 1},
        "output_dir": str(out)})
    t0 = time.perf_counter()
    summary = train_dfn(cfg)
    return {"loop_s": summary["seconds"], "wall_s": time.perf_counter() - t0, "final_loss": summary["final_loss"],
            "model_dir": summary["model_dir"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=1024, help="training pairs (generated shapes)")
    ap.add_argument("--heldout", type=int, default=512, help="held-out pairs for eval-dfn")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--loader-workers", type=int, default=1)
    ap.add_argument("--checkpoint-every", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-ray", action="store_true", help="leave out the Ray Train run")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(1)  # the same for every implementation; fastest on a shared 2-core machine
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_webdataset(root / "train", args.pairs, seed=1, per_shard=512)
        write_webdataset(root / "heldout", args.heldout, seed=2)
        heldout = read_webdataset([str(root / "heldout")], label_field="class")
        runs = {"hand-written open_clip loop": hand_written_loop(root / "train", root / "peer", args.steps,
                                                                 args.batch_size, args.lr, args.seed),
                "curate train-dfn --local": curate_run(root / "train", root / "local", args, "local")}
        if not args.skip_ray:
            runs["curate train-dfn, Ray Train 1 worker"] = curate_run(root / "train", root / "ray", args, "ray")
        for res in runs.values():
            t0 = time.perf_counter()
            report = evaluate_filter(res["model_dir"], heldout, seed=0)
            res["eval_s"] = time.perf_counter() - t0
            res["auc_shuffled"] = report["auc"]["shuffled"]
            res["auc_other_class"] = report["auc"]["other_class"]
            res["samples_per_s"] = args.steps * args.batch_size / res["loop_s"]
            res.pop("model_dir")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, no GPU" \
        if not torch.cuda.is_available() else torch.cuda.get_device_name()
    print(f"machine: {machine}; pairs {args.pairs}, steps {args.steps}, batch {args.batch_size}")
    print("| implementation | loop s | samples/s (loop) | wall s (incl. setup) | final loss | AUC shuffled | "
          "AUC other class | eval s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in runs.items():
        print(f"| {name} | {r['loop_s']:.1f} | {r['samples_per_s']:.0f} | {r['wall_s']:.1f} | {r['final_loss']:.3f} | "
              f"{r['auc_shuffled']:.3f} | {r['auc_other_class']:.3f} | {r['eval_s']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "args": vars(args) | {"json": str(args.json)},
                                         "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
