"""One proxy-training run of `curate eval`: an arm's samples, one seed, the preset's model and budget.

It is train-dfn's loop (curate.dfn: open_clip model and ClipLoss, AdamW, warmup + cosine, resumable
checkpoints, Ray Train for several GPUs or nodes) pointed at the arm's Parquet file, from scratch,
with the seed of the run. The batch order is a pure function of (seed, step), so a killed run
resumes from its newest checkpoint and ends with the model an uninterrupted run gives.
"""

from __future__ import annotations

from typing import Any

from curate.dfn.config import DFNTrainConfig, ScalingSettings
from curate.evaluation.presets import Preset


def train_config(preset: Preset, data_file: str, output_dir: str, seed: int, scaling: ScalingSettings,
                 *, checkpoint_every: int | None = None) -> DFNTrainConfig:
    steps = preset.samples_seen // preset.batch_size
    every = checkpoint_every or max(1, min(500, steps // 4 or 1))
    # The preset says whether its scale needs a GPU; scaling.use_gpu, when given, decides.
    use_gpu = scaling.use_gpu if "use_gpu" in scaling.model_fields_set else preset.use_gpu
    return DFNTrainConfig.model_validate({
        "data": {"kind": "parquet", "paths": [data_file], "image_column": "jpg", "caption_column": "caption",
                 "uid_column": "uid"},
        "model": {"name": preset.model, "from_scratch": True},
        "train": {"steps": steps, "batch_size": preset.batch_size, "lr": preset.lr,
                  "warmup_steps": preset.warmup_steps, "weight_decay": preset.weight_decay,
                  "beta1": preset.beta1, "beta2": preset.beta2, "eps": preset.eps, "seed": seed,
                  "precision": preset.precision, "loader_workers": preset.loader_workers,
                  "cpu_threads": preset.cpu_threads, "log_every": max(1, steps // 4)},
        "checkpoint": {"every_steps": every, "keep_last": 1, "resume": True},
        "scaling": {**scaling.model_dump(), "use_gpu": use_gpu},
        "output_dir": output_dir,
    })


def train_run(config: DFNTrainConfig, *, stop_at_step: int | None = None) -> dict[str, Any]:
    """Train (or resume) one run; returns train-dfn's summary (model_dir once finished)."""
    from curate.dfn import train_dfn

    return train_dfn(config, local=config.scaling.backend == "local", stop_at_step=stop_at_step)
