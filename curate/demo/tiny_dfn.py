"""The demo's DFNs: curate-tiny trained from scratch on a clean webdataset set, reused once trained."""

from __future__ import annotations

from pathlib import Path

from curate.progress import console


def train_tiny_dfn(data_dir: Path, run_dir: Path, steps: int, label_field: str, what: str) -> Path:
    """Train (or resume) into run_dir; returns run_dir/model. `what` names the set in the log line."""
    from curate.dfn import train_dfn
    from curate.dfn.config import DFNTrainConfig

    cfg = DFNTrainConfig.model_validate({
        "data": {"kind": "webdataset", "urls": [str(data_dir)], "label_field": label_field},
        "model": {"name": "curate-tiny", "from_scratch": True},
        "train": {"steps": steps, "batch_size": 64, "lr": 2e-3, "warmup_steps": 10, "weight_decay": 0.1,
                  "loader_workers": 0, "cpu_threads": 2, "log_every": 100},
        "checkpoint": {"every_steps": 100, "keep_last": 1},
        "output_dir": str(run_dir),
    })
    console.print(f"[demo] training {what} (curate-tiny, {steps} steps)")
    train_dfn(cfg, local=True)
    return run_dir / "model"
