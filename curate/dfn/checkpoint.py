"""Resumable training checkpoints and the final model directory.

    <output_dir>/checkpoints/step-00000500.safetensors   model, optimizer, scheduler, step, RNG, losses
    <output_dir>/model/                                  hf-hub layout (open_clip_config.json + weights)
    <output_dir>/train_summary.json

A checkpoint is written under a temporary name and renamed, so a run killed mid-write leaves the
previous checkpoint as the newest. output_dir is a local path (a shared filesystem for multi-node).

Checkpoints are safetensors, never pickles: a file planted in output_dir must not run code when a run
resumes. The tensors of the state (model, optimizer moments, RNG) are stored flat; everything else
(step, losses, optimizer/scheduler settings) and the fingerprint are JSON in the safetensors header,
which is read and checked before any tensor is.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from curate.dfn.config import DFNTrainConfig
from curate.errors import ConfigError, first_line

_CKPT = re.compile(r"^step-(\d{8})\.safetensors$")
# Checkpoints of earlier versions were pickles; they are refused, never unpickled.
_PICKLED_CKPT = re.compile(r"^step-\d{8}\.pt$")
FORMAT = "curate-train-checkpoint-1"
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
        return self.dir / f"step-{step:08d}.safetensors"

    def latest_path(self) -> Path | None:
        steps = self.steps()
        return self.path_for(steps[-1]) if steps else None

    def save(self, step: int, fp: str, state: dict[str, Any]) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.path_for(step)
        tmp = final.with_name(final.name + f".tmp-{os.getpid()}")
        tensors: dict[str, torch.Tensor] = {}
        skeleton = _flatten(state, "", tensors)
        metadata = {"format": FORMAT, "fingerprint": fp, "state": json.dumps(skeleton)}
        try:
            save_file(tensors, tmp, metadata=metadata)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        for old in self.steps()[:-self.keep_last]:
            self.path_for(old).unlink(missing_ok=True)
        return final

    def load_latest(self, fp: str) -> dict[str, Any] | None:
        """The newest checkpoint's state (tensors on the CPU), or None when there is none.

        Its header is checked first: a file that is not a curate checkpoint, or was written by a run
        with other settings, is refused before any tensor is read."""
        pickled = self._pickled()
        if pickled:
            raise ConfigError(
                f"{pickled[-1]}: a pickled checkpoint (an older curate's, or a planted file); curate does not "
                "unpickle checkpoints, so it cannot resume from it: set checkpoint.resume: false (or --fresh) to "
                "start over (this deletes it), or use a new output_dir")
        path = self.latest_path()
        if path is None:
            return None
        try:
            with safe_open(str(path), framework="pt", device="cpu") as fh:
                meta = fh.metadata() or {}
                if meta.get("format") != FORMAT:
                    raise ConfigError(f"{path}: not a curate train-dfn checkpoint (format "
                                      f"{str(meta.get('format'))[:40]!r}); delete it or use a new output_dir")
                if meta.get("fingerprint") != fp:
                    raise ConfigError(
                        f"{path} was written by a run with different data, model or train settings; use a new "
                        "output_dir, or set checkpoint.resume: false to start over (this deletes its checkpoints)")
                tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
                state = _unflatten(json.loads(meta["state"]), tensors)
        except SafetensorError as exc:
            raise ConfigError(f"{path}: not a readable checkpoint ({first_line(exc, 200)}); delete it or use a "
                              "new output_dir") from None
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"{path}: a damaged checkpoint header ({type(exc).__name__}); delete it or use a "
                              "new output_dir") from None
        if not isinstance(state, dict):
            raise ConfigError(f"{path}: a damaged checkpoint header (state is not a mapping)")
        return {**state, "fingerprint": fp}

    def _pickled(self) -> list[Path]:
        if not self.dir.exists():
            return []
        return sorted(p for p in self.dir.iterdir() if _PICKLED_CKPT.match(p.name))

    def clear(self) -> None:
        for step in self.steps():
            self.path_for(step).unlink(missing_ok=True)
        for path in self._pickled():
            path.unlink(missing_ok=True)

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


# A state is nested dicts/lists/tuples of tensors and JSON values. Tensors go to the flat safetensors
# dict; in the JSON skeleton they, tuples and dicts with non-string keys are tagged objects.
_TENSOR, _TUPLE, _DICT = "__tensor__", "__tuple__", "__dict__"


def _flatten(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"  # key paths could collide ("a.b" vs {"a": {"b"}}); a counter cannot
        tensors[name] = value.detach().to("cpu", copy=True).contiguous()
        return {_TENSOR: name}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not ({_TENSOR, _TUPLE, _DICT} & value.keys()):
            return {k: _flatten(v, f"{key}.{k}", tensors) for k, v in value.items()}
        # optimizer state is keyed by parameter index (int keys JSON would turn into strings)
        return {_DICT: [[k, _flatten(v, f"{key}.{k}", tensors)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {_TUPLE: [_flatten(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_flatten(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"checkpoint state at {key or '(top)'}: cannot store a {type(value).__name__}")


def _unflatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if _TENSOR in value:
            return tensors[value[_TENSOR]]
        if _TUPLE in value:
            return tuple(_unflatten(v, tensors) for v in value[_TUPLE])
        if _DICT in value:
            return {k: _unflatten(v, tensors) for k, v in value[_DICT]}
        return {k: _unflatten(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_unflatten(v, tensors) for v in value]
    return value
