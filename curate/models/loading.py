"""Load an open_clip model from wherever it lives, offline-first, with one clear error when it is missing.

Accepted forms of `model` (DESIGN.md "Models"):
- an open_clip architecture name (`ViT-L-14`) with `pretrained` = a tag (`datacomp_xl_s13b_b90k`),
  a local weights file, or `"random"` (random weights, for speed benchmarks only; never implied);
- `hf-hub:org/repo` (e.g. `hf-hub:apple/DFN5B-CLIP-ViT-H-14`), read from the Hugging Face cache
  (HF_HOME / HF_HUB_CACHE; HF_HUB_OFFLINE=1 never touches the network);
- a local directory in the hf-hub layout: `open_clip_config.json` + `open_clip_model.safetensors`
  (or `open_clip_pytorch_model.bin`), which is what `save_clip_dir` writes.

open_clip itself falls back to random weights with only a log line when an hf-hub checkpoint is
missing; curate resolves every file first so that a missing model is an error, never a silent
random-weights scorer.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from curate.errors import ModelNotFoundError

CONFIG_NAME = "open_clip_config.json"
WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
RANDOM_WEIGHTS = "random"
PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass
class LoadedClip:
    """A CLIP model ready for inference, with what a scorer needs to feed it."""

    model: torch.nn.Module  # eval mode, on `device`
    preprocess: Callable[[Any], torch.Tensor]  # PIL image -> normalised CHW tensor
    tokenizer: Callable[..., torch.Tensor]
    embed_dim: int
    image_size: int
    name: str
    device: str = "cpu"
    precision: str = "fp32"
    preprocess_cfg: dict[str, Any] = field(default_factory=dict)  # mean, std, interpolation, resize_mode

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed precision for inference: weights stay fp32, matmuls run in fp16/bf16."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        return torch.autocast(device_type=device_type, dtype=dtype)

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalised fp32 image embeddings of a preprocessed NCHW batch."""
        with self.autocast():
            feats = self.model.encode_image(pixels.to(self.device, non_blocking=True))
        return torch.nn.functional.normalize(feats.float(), dim=-1)

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised fp32 text embeddings."""
        tokens = self.tokenizer(texts).to(self.device, non_blocking=True)
        with self.autocast():
            feats = self.model.encode_text(tokens)
        return torch.nn.functional.normalize(feats.float(), dim=-1)


def _hf_cache_hint() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _resolve_hf_hub(repo_id: str, cache_dir: str | None) -> Path:
    """Directory (HF cache snapshot) holding the repo's config and weights; raises if either is absent."""
    from huggingface_hub import hf_hub_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    where = cache_dir or _hf_cache_hint()
    how = (
        f"download it with `hf download {repo_id}` (or `huggingface-cli download {repo_id}`) on a machine "
        f"with network access and copy the cache to {where} (set HF_HOME/HF_HUB_CACHE to point elsewhere), "
        f"or put {CONFIG_NAME} and {WEIGHT_NAMES[0]} in a local directory and give its path"
    )
    try:
        config = Path(hf_hub_download(repo_id, CONFIG_NAME, cache_dir=cache_dir, local_files_only=offline))
    except Exception as exc:
        raise ModelNotFoundError(f"model hf-hub:{repo_id} is not available ({type(exc).__name__}); {how}") from exc
    for name in WEIGHT_NAMES:
        try:
            weights = Path(hf_hub_download(repo_id, name, cache_dir=cache_dir, local_files_only=offline))
        except Exception:
            continue
        if weights.parent == config.parent:
            return config.parent
    raise ModelNotFoundError(f"model hf-hub:{repo_id} has a config but no weights ({' or '.join(WEIGHT_NAMES)}); {how}")


def _check_local_dir(path: Path) -> Path:
    if not (path / CONFIG_NAME).is_file():
        raise ModelNotFoundError(
            f"model directory {path} has no {CONFIG_NAME}; a local model directory needs {CONFIG_NAME} "
            f"and {' or '.join(WEIGHT_NAMES)} (the layout of an hf-hub open_clip repo, written by save_clip_dir)"
        )
    if not any((path / name).is_file() for name in WEIGHT_NAMES):
        raise ModelNotFoundError(f"model directory {path} has no weights: expected {' or '.join(WEIGHT_NAMES)}")
    return path


def _resolve_pretrained(arch: str, pretrained: str | None, cache_dir: str | None) -> str | None:
    """What to pass open_clip as `pretrained`: a local file path, or None for random weights."""
    import open_clip

    if pretrained is None:
        raise ModelNotFoundError(
            f"model {arch!r} needs `pretrained`: a tag ({', '.join(open_clip.list_pretrained_tags_by_model(arch)[:6])}"
            f"…), a weights file, or 'random' for untrained weights (benchmarks only)"
        )
    if pretrained == RANDOM_WEIGHTS:
        return None
    if os.path.isfile(pretrained):
        return pretrained
    cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if not cfg:
        if os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")):
            raise ModelNotFoundError(f"weights file {pretrained} for model {arch} does not exist")
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise ModelNotFoundError(f"{pretrained!r} is neither a file nor a pretrained tag of {arch} (tags: {tags})")
    hub = (cfg.get("hf_hub") or "").strip("/")
    if hub:
        from huggingface_hub import hf_hub_download

        parts = hub.split("/")
        repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        candidates = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        for name in candidates:
            try:
                return hf_hub_download(repo_id, name, cache_dir=cache_dir, local_files_only=offline)
            except Exception:
                continue
        raise ModelNotFoundError(
            f"weights for {arch} pretrained={pretrained} are not in the Hugging Face cache "
            f"({cache_dir or _hf_cache_hint()}); download them with `hf download {repo_id}` on a machine with "
            f"network access and copy the cache there, or pass a local weights file as `pretrained`"
        )
    try:
        return str(open_clip.download_pretrained(cfg, cache_dir=cache_dir))
    except Exception as exc:
        raise ModelNotFoundError(
            f"weights for {arch} pretrained={pretrained} could not be fetched from {cfg.get('url')} "
            f"({type(exc).__name__}); download that file and pass its path as `pretrained`"
        ) from exc


def _unknown_model(model: str) -> ModelNotFoundError:
    if os.sep in model or model.startswith("."):
        return ModelNotFoundError(f"model directory {model} does not exist")
    return ModelNotFoundError(
        f"unknown model {model!r}: not an open_clip architecture, an hf-hub: id or a local directory"
    )


def load_clip(
    model: str,
    pretrained: str | None = None,
    *,
    device: str = "cpu",
    precision: str = "fp32",
    cache_dir: str | None = None,
) -> LoadedClip:
    """Load a CLIP model for inference; see the module docstring for the accepted forms of `model`."""
    import open_clip

    from curate.models.tiny import register_tiny_configs

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    register_tiny_configs()
    local = Path(os.path.expanduser(model))
    if model.startswith("hf-hub:"):
        source = f"local-dir:{_resolve_hf_hub(model[len('hf-hub:'):], cache_dir)}"
        weights = None
    elif local.is_dir():
        source = f"local-dir:{_check_local_dir(local)}"
        weights = None
    else:
        if open_clip.get_model_config(model.replace("/", "-")) is None:
            raise _unknown_model(model)
        source = model
        weights = _resolve_pretrained(model, pretrained, cache_dir)
    # Weights stay fp32: fp16/bf16 are applied by autocast at inference (see LoadedClip.autocast).
    # weights_only: a .pt/.bin weights file is a pickle; torch's restricted unpickler loads tensors
    # and plain containers and refuses anything that would run code.
    net, _, preprocess = open_clip.create_model_and_transforms(
        source, pretrained=weights, device=device, precision="fp32", cache_dir=cache_dir,
        pretrained_text=False, weights_only=True,
    )
    net.eval()
    tokenizer = open_clip.get_tokenizer(source)
    visual = net.visual
    size = visual.image_size
    image_size = int(size[0] if isinstance(size, tuple | list) else size)
    embed_dim = int(getattr(net, "embed_dim", 0) or _probe_embed_dim(net, image_size, device))
    pre_cfg = dict(getattr(visual, "preprocess_cfg", {}) or {})
    return LoadedClip(
        model=net, preprocess=preprocess, tokenizer=tokenizer, embed_dim=embed_dim, image_size=image_size,
        name=model if weights is None or pretrained is None else f"{model}/{pretrained}", device=device,
        precision=precision, preprocess_cfg=pre_cfg,
    )


@torch.inference_mode()
def _probe_embed_dim(net: torch.nn.Module, image_size: int, device: str) -> int:
    return int(net.encode_image(torch.zeros(1, 3, image_size, image_size, device=device)).shape[-1])


def read_model_config(path: str | Path) -> dict[str, Any]:
    """The `open_clip_config.json` of a local model directory."""
    with open(Path(path) / CONFIG_NAME, encoding="utf-8") as fh:
        return json.load(fh)


@dataclass(frozen=True)
class ModelInfo:
    """What the stage must know about a model before loading it: the input it needs."""

    image_size: int
    embed_dim: int
    resize_mode: str  # "shortest" (resize + centre crop) or "squash"


def describe_model(model: str, pretrained: str | None = None, *, cache_dir: str | None = None) -> ModelInfo:
    """Image size, embedding size and resize mode from the model's config, without loading weights."""
    import open_clip

    from curate.models.tiny import register_tiny_configs

    register_tiny_configs()
    local = Path(os.path.expanduser(model))
    pre: dict[str, Any] = {}
    if model.startswith("hf-hub:") or local.is_dir():
        hub = model.startswith("hf-hub:")
        folder = _resolve_hf_hub(model[len("hf-hub:"):], cache_dir) if hub else _check_local_dir(local)
        full = read_model_config(folder)
        cfg, pre = full["model_cfg"], full.get("preprocess_cfg", {})
    else:
        cfg = open_clip.get_model_config(model.replace("/", "-"))
        if cfg is None:
            raise _unknown_model(model)
        if pretrained and pretrained != RANDOM_WEIGHTS:
            pre = open_clip.get_pretrained_cfg(model, pretrained) or {}
    size = cfg["vision_cfg"].get("image_size", 224)
    size = int(size[0] if isinstance(size, list | tuple) else size)
    return ModelInfo(size, int(cfg["embed_dim"]), str(pre.get("resize_mode", "shortest")))


def check_available(model: str, pretrained: str | None = None, *, cache_dir: str | None = None) -> None:
    """Raise ModelNotFoundError unless the model's config and weights can be found offline/locally."""
    import open_clip

    describe_model(model, pretrained, cache_dir=cache_dir)
    is_arch = not model.startswith("hf-hub:") and not Path(os.path.expanduser(model)).is_dir()
    if is_arch and open_clip.get_model_config(model.replace("/", "-")) is not None:
        _resolve_pretrained(model, pretrained, cache_dir)
