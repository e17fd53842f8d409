"""Resumable training checkpoints and the final model directory.

    <output_dir>/checkpoints/step-00000500.pt   model, optimizer, scheduler, step, RNG, losses
    <output_dir>/model/                         hf-hub layout (open_clip_config.json + weights)
    <output_dir>/train_summary.json

A checkpoint is written under a temporary name and renamed, so a run killed mid-write leaves the
previous checkpoint as the newest. output_dir is a local path (a shared filesystem for multi-node).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from curate.dfn.config import DFNTrainConfig
from curate.errors import ConfigError

_CKPT = re.compile(r"^step-(\d{8})\.pt$")
# Settings that may change between a run and its resume without changing what it computes.
_FREE_TO_CHANGE = {"log_every", "loader_workers", "precision", "cpu_threads"}


def fingerprint(config: DFNTrainConfig, num_pairs: int) -> str:
    """What a checkpoint must agree with to be resumed: same data, start, and optimisation settings."""
    payload = {
        "data": config.data.model_dump(mode="json"),
        "model": config.model.model_dump(mode="json"),
        "train": config.train.model_dump(mode="json", exclude=_FREE_TO_CHANGE),
        "num_pairs": num_pairs,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


class CheckpointStore:
    def __init__(self, output_dir: str | Path, keep_last: int = 2) -> None:
        self.root = Path(output_dir)
        self.dir = self.root / "checkpoints"
        self.keep_last = keep_last

    def steps(self) -> list[int]:
        if not self.dir.exists():
            return []
        return sorted(int(m.group(1)) for p in self.dir.iterdir() if (m := _CKPT.match(p.name)))

    def path_for(self, step: int) -> Path:
        return self.dir / f"step-{step:08d}.pt"

    def latest_path(self) -> Path | None:
        steps = self.steps()
        return self.path_for(steps[-1]) if steps else None

    def save(self, step: int, fp: str, state: dict[str, Any]) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.path_for(step)
        tmp = final.with_name(final.name + f".tmp-{os.getpid()}")
        torch.save({**state, "fingerprint": fp}, tmp)
        os.replace(tmp, final)
        for old in self.steps()[:-self.keep_last]:
            self.path_for(old).unlink(missing_ok=True)
        return final

    def load_latest(self, fp: str, map_location: Any = "cpu") -> dict[str, Any] | None:
        path = self.latest_path()
        if path is None:
            return None
        state = torch.load(path, map_location=map_location, weights_only=False)
        if state.get("fingerprint") != fp:
            raise ConfigError(
                f"{path} was written by a run with different data, model or train settings; use a new "
                "output_dir, or set checkpoint.resume: false to start over (this deletes its checkpoints)")
        return state

    def clear(self) -> None:
        for step in self.steps():
            self.path_for(step).unlink(missing_ok=True)

    def save_final(self, model: torch.nn.Module, model_cfg: dict[str, Any], summary: dict[str, Any]) -> str:
        from curate.models.save import save_clip_dir  # the layout the clip scorer loads by path

        model_dir = self.root / "model"
        save_clip_dir(model, model_cfg, model_dir)
        report = {k: v for k, v in summary.items() if k != "losses"}
        report["model_dir"] = str(model_dir)
        report["loss_curve"] = summary["losses"]
        tmp = self.root / "train_summary.json.tmp"
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, self.root / "train_summary.json")
        return str(model_dir)
