"""The DFN training loop: CLIP contrastive loss, AdamW + warmup/cosine, bf16 autocast on GPU,
resumable checkpoints. The same loop runs in one local process or in each Ray Train worker.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import open_clip
import torch

from curate.dfn.checkpoint import CheckpointStore, fingerprint
from curate.dfn.config import DFNTrainConfig
from curate.dfn.data import load_pairs
from curate.dfn.loader import PairDataset, StepBatchSampler, make_loader, steps_per_epoch
from curate.dfn.model import build_starting_model
from curate.errors import ConfigError

MAX_LOGIT_SCALE = math.log(100.0)


@dataclass
class WorkerContext:
    """Where this copy of the loop runs: rank, device, how to wrap the model, how to report."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    wrap_model: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m
    report: Callable[[dict[str, Any]], None] = lambda metrics: None

    @property
    def is_chief(self) -> bool:
        return self.rank == 0


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # CLIP recipe: no decay on gains, biases, embeddings-scale scalars (logit_scale)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _use_bf16(precision: str, device: torch.device) -> bool:
    if precision == "bf16" and device.type != "cuda":
        raise ConfigError("train.precision: bf16 needs a GPU (use auto or fp32 on CPU)")
    return device.type == "cuda" and precision in ("auto", "bf16")


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def run_training(config: DFNTrainConfig, ctx: WorkerContext | None = None, *,
                 stop_at_step: int | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train until config.train.steps (or stop_at_step, to simulate an interrupted run).

    Returns the run summary (step reached, per-step losses of this process, counts); the chief
    also writes checkpoints and, at the last step, the final model in the hf-hub layout.
    """
    ctx = ctx or WorkerContext()
    settings = config.train
    torch.manual_seed(settings.seed)
    if ctx.device.type == "cpu" and settings.cpu_threads:
        torch.set_num_threads(settings.cpu_threads)
    pairs = load_pairs(config.data)
    if steps_per_epoch(len(pairs), settings.batch_size) < 1:
        raise ConfigError(f"data: {len(pairs)} usable pairs are fewer than one batch of {settings.batch_size} "
                          f"(counts: {pairs.counts})")
    start = build_starting_model(config.model)
    model = start.model.to(ctx.device)
    optimizer = torch.optim.AdamW(_param_groups(model, settings.weight_decay), lr=settings.lr,
                                  betas=(settings.beta1, settings.beta2), eps=settings.eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(settings.warmup_steps, settings.steps))
    store = CheckpointStore(config.output_dir, keep_last=config.checkpoint.keep_last)
    fp = fingerprint(config, len(pairs))
    step, losses = 0, []
    if config.checkpoint.resume:
        # On the CPU: the RNG states must be CPU byte tensors; model and optimizer copy theirs to the device.
        state = store.load_latest(fp)
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            if ctx.device.type == "cuda" and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"], ctx.device)
            step, losses = int(state["step"]), list(state["losses"])
            log(f"resuming from step {step} ({store.latest_path()})")
    elif ctx.is_chief:
        store.clear()

    end_step = settings.steps if stop_at_step is None else min(stop_at_step, settings.steps)
    wrapped = ctx.wrap_model(model)
    loss_fn = open_clip.ClipLoss(local_loss=False, gather_with_grad=True, cache_labels=True,
                                 rank=ctx.rank, world_size=ctx.world_size)
    bf16 = _use_bf16(settings.precision, ctx.device)
    sampler = StepBatchSampler(len(pairs), settings.batch_size, settings.seed, step, end_step,
                               ctx.rank, ctx.world_size)
    loader = make_loader(PairDataset(pairs.table, start.preprocess), sampler, start.tokenizer,
                         settings.loader_workers, pin_memory=ctx.device.type == "cuda")
    counts: Counter[str] = Counter(pairs.counts)
    if ctx.is_chief:
        log(f"train-dfn: {start.description}; {len(pairs)} pairs, batch {settings.batch_size} over "
            f"{ctx.world_size} worker(s), steps {step}->{end_step} of {settings.steps}, "
            f"{'bf16' if bf16 else 'fp32'} on {ctx.device}")
    wrapped.train()
    t0, window, window_start = time.perf_counter(), [], step
    for batch in loader:
        counts["undecodable_image"] += batch["undecodable"]
        if batch["images"] is None or batch["images"].shape[0] < 2:
            raise RuntimeError(f"step {step}: fewer than 2 decodable images in the batch (check the data)")
        images = batch["images"].to(ctx.device, non_blocking=True)
        texts = batch["texts"].to(ctx.device, non_blocking=True)
        with torch.autocast(device_type=ctx.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = wrapped(images, texts)
            img_f, txt_f, scale = ((out["image_features"], out["text_features"], out["logit_scale"])
                                   if isinstance(out, dict) else out[:3])
            loss = loss_fn(img_f, txt_f, scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(wrapped.parameters(), settings.grad_clip_norm)
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            _unwrap(wrapped).logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        step += 1
        value = float(loss.detach())
        losses.append(value)
        window.append(value)
        counts["samples"] += int(images.shape[0])
        if step % settings.log_every == 0 or step == end_step:
            rate = (step - window_start) * settings.batch_size / max(1e-9, time.perf_counter() - t0)
            eta = (end_step - step) * settings.batch_size / max(rate, 1e-9)
            metrics = {"step": step, "loss": sum(window) / len(window), "lr": scheduler.get_last_lr()[0],
                       "samples_per_s": rate}
            ctx.report(metrics)
            if ctx.is_chief:
                log(f"step {step}/{settings.steps}  loss {metrics['loss']:.4f}  lr {metrics['lr']:.2e}  "
                    f"{rate:.0f} samples/s  ETA {eta:.0f}s")
            window = []
        if ctx.is_chief and (step % config.checkpoint.every_steps == 0 or step == end_step):
            store.save(step, fp, {
                "model": _unwrap(wrapped).state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step, "losses": losses,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(ctx.device) if ctx.device.type == "cuda" else None,
            })
    summary: dict[str, Any] = {
        "step": step, "target_steps": settings.steps, "finished": step >= settings.steps,
        "final_loss": losses[-1] if losses else None, "losses": losses, "counts": dict(counts),
        "seconds": time.perf_counter() - t0, "precision": "bf16" if bf16 else "fp32",
        "world_size": ctx.world_size, "start": start.description, "pairs": len(pairs),
    }
    if ctx.is_chief and summary["finished"]:
        summary["model_dir"] = store.save_final(_unwrap(wrapped), start.model_cfg, summary)
    return summary
