"""Write a CLIP model as a local directory in the hf-hub open_clip layout, so `load_clip(path)` reads it.

    <dir>/open_clip_config.json        {"model_cfg": {...}, "preprocess_cfg": {...}}
    <dir>/open_clip_model.safetensors  the state dict

train-dfn writes its checkpoints this way; the clip scorer then loads a trained DFN by path.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from curate.models.loading import CONFIG_NAME, WEIGHT_NAMES

_PREPROCESS_KEYS = ("size", "mode", "mean", "std", "interpolation", "resize_mode", "fill_color")


def _preprocess_cfg(model: torch.nn.Module) -> dict[str, Any]:
    cfg = dict(getattr(getattr(model, "visual", None), "preprocess_cfg", {}) or {})
    out = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items() if k in _PREPROCESS_KEYS}
    # open_clip derives the size from the model; a stale size in the file would override it.
    out.pop("size", None)
    return out


def save_clip_dir(model: torch.nn.Module, model_cfg: dict[str, Any], path: str | Path) -> Path:
    """Save `model` (open_clip CLIP) and its architecture config `model_cfg` under `path`.

    Each file is written under a temporary name and renamed, so a crash never leaves a
    directory that loads half-written weights.
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    # safetensors refuses tensors that share storage or are not contiguous.
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    config = {"model_cfg": model_cfg, "preprocess_cfg": _preprocess_cfg(model)}
    _atomic(out / WEIGHT_NAMES[0], lambda p: save_file(state, p, metadata={"format": "pt"}))
    _atomic(out / CONFIG_NAME, lambda p: Path(p).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8"))
    return out


def _atomic(final: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
