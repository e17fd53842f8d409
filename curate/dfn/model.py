"""The model a DFN run starts from: pretrained weights, a local checkpoint directory, or scratch."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch

from curate.dfn.config import ModelStart
from curate.errors import ConfigError
from curate.models.tiny import register_tiny_configs


@dataclass
class StartingModel:
    model: torch.nn.Module
    preprocess: Any  # deterministic (eval) transform: exact resume needs no random augmentation
    tokenizer: Any
    model_cfg: dict[str, Any]  # what save_clip_dir writes as open_clip_config.json's model_cfg
    description: str


def _named_model_cfg(name: str) -> dict[str, Any]:
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ConfigError(f"model.name: unknown open_clip architecture {name!r} "
                          f"(see open_clip.list_models(); curate adds {', '.join(_curate_models())})")
    return dict(cfg)


def _curate_models() -> list[str]:
    from curate.models.tiny import CONFIG_DIR

    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def _dir_model_cfg(path: Path) -> dict[str, Any]:
    from curate.models.loading import CONFIG_NAME, read_model_config

    if not (path / CONFIG_NAME).exists():
        raise ConfigError(f"model.checkpoint: {path} has no {CONFIG_NAME} (expected the hf-hub layout "
                          "that `curate train-dfn` writes)")
    return dict(read_model_config(path)["model_cfg"])


def _hf_hub_model_cfg(name: str) -> dict[str, Any]:
    from huggingface_hub import hf_hub_download

    from curate.models.loading import CONFIG_NAME

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    cfg_file = hf_hub_download(name[len("hf-hub:"):], CONFIG_NAME, local_files_only=offline)
    return dict(json.loads(Path(cfg_file).read_text())["model_cfg"])


def build_starting_model(start: ModelStart) -> StartingModel:
    register_tiny_configs()
    if start.from_scratch:
        model_cfg = _named_model_cfg(start.name)
        model, _, preprocess = open_clip.create_model_and_transforms(start.name, pretrained=None)
        return StartingModel(model, preprocess, open_clip.get_tokenizer(start.name), model_cfg,
                             f"{start.name} from scratch")
    from curate.models.loading import load_clip  # owned by the score stage; shared by every model user

    if start.checkpoint is not None:
        path = Path(start.checkpoint)
        model_cfg = _dir_model_cfg(path)
        loaded = load_clip(str(path))
        description = f"checkpoint {path}"
    else:
        loaded = load_clip(start.name, start.pretrained)
        # load_clip succeeded, so an hf-hub config is in the local cache
        model_cfg = (_hf_hub_model_cfg(start.name) if start.name.startswith("hf-hub:")
                     else _named_model_cfg(start.name))
        description = f"{start.name} ({start.pretrained or 'hf-hub'})"
    model = loaded.model
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    return StartingModel(model, loaded.preprocess, loaded.tokenizer, model_cfg, description)
