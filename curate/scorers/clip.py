"""clip: cosine similarity of CLIP image and caption embeddings → `clip_<name>_similarity_score`.

A Data Filtering Network is this scorer with a DFN checkpoint (`hf-hub:apple/DFN2B-CLIP-ViT-L-14`,
or a directory written by `curate train-dfn`). Several clip scorers in one config share one decode
of each image; each runs in its own actor pool. Embeddings (L2-normalised, stored as float16) are
written to embeddings/<name>/ when asked, and always handed to later scorers (nsfw) in the batch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from curate.extras import check_installed
from curate.scorers.base import (
    CAPTION,
    IMAGE_OK,
    IMAGE_REASON,
    Batch,
    ImageView,
    Scorer,
    ScorerConfig,
    embedding_column,
    register,
)
from curate.stages.score.decode import UNDECODABLE


class ClipConfig(ScorerConfig):
    type: Literal["clip"] = "clip"
    model: str = Field(..., description="open_clip architecture, hf-hub:org/repo, or a local model directory")
    pretrained: str | None = Field(None, description="with an architecture: tag, weights file, or 'random'")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field("auto", description="auto: bf16 on GPU, fp32 on CPU")
    image_embeddings: bool = Field(False, description="write `embeddings/<name>/` image_embedding (float16)")
    text_embeddings: bool = Field(False, description="also write text_embedding (float16)")
    cache_dir: str | None = Field(None, description="Hugging Face / open_clip cache; default: HF_HOME")
    batch_size: int = 256


@dataclass(frozen=True)
class ArchInfo:
    """The input a model needs (same fields as curate.models.loading.ModelInfo)."""

    image_size: int
    embed_dim: int
    resize_mode: str


def _info_from_config(cfg: dict[str, Any], pre: dict[str, Any]) -> ArchInfo:
    size = cfg["vision_cfg"].get("image_size", 224)
    size = int(size[0] if isinstance(size, list | tuple) else size)
    return ArchInfo(size, int(cfg["embed_dim"]), str(pre.get("resize_mode", "shortest")))


def quick_describe(model: str, pretrained: str | None) -> ArchInfo | None:
    """Describe a model from its JSON config without importing torch/open_clip, or None when that needs them.

    Importing open_clip takes 5-15 s on a small CPU machine; the driver needs only the input size to
    plan decoding, so reading the config lets Ray start the actors (which import it anyway) sooner.
    Covers an architecture with random weights or a weights file, and a local model directory;
    pretrained tags and hf-hub models go through curate.models.loading.describe_model.
    """
    try:
        local = Path(os.path.expanduser(model))
        if not model.startswith("hf-hub:") and local.is_dir():
            full = json.loads((local / "open_clip_config.json").read_text())
            return _info_from_config(full["model_cfg"], full.get("preprocess_cfg", {}))
        if pretrained != "random" and not (pretrained and os.path.isfile(pretrained)):
            return None
        spec = find_spec("open_clip")
        roots = [Path(__file__).parents[1] / "models" / "configs"]
        if spec and spec.submodule_search_locations:
            roots += [Path(p) / "model_configs" for p in spec.submodule_search_locations]
        name = model.replace("/", "-")
        for root in roots:
            path = root / f"{name}.json"
            if path.is_file():
                return _info_from_config(json.loads(path.read_text()), {})
    except (OSError, ValueError, KeyError, TypeError):
        pass  # the full description reports what is wrong
    return None


def _found_without_open_clip(model: str, pretrained: str | None) -> bool:
    """True when the model is certainly there: an architecture config on disk with random weights or an
    existing weights file, or a local model directory with its config and weights. Anything else
    (pretrained tags, hf-hub) is checked by curate.models.loading.check_available."""
    if quick_describe(model, pretrained) is None:
        return False
    local = Path(os.path.expanduser(model))
    if not model.startswith("hf-hub:") and local.is_dir():
        return any((local / name).is_file() for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"))
    return True


def _require_models() -> None:
    check_installed("torch", "models", "the clip scorer")
    check_installed("open_clip", "models", "the clip scorer")


def score_column(name: str) -> str:
    return f"clip_{name}_similarity_score"


@register
class ClipScorer(Scorer):
    type = "clip"
    config_class = ClipConfig
    uses_model = True

    @property
    def cfg(self) -> ClipConfig:
        return self.config  # type: ignore[return-value]

    @cached_property
    def info(self):  # type: ignore[no-untyped-def]
        quick = quick_describe(self.cfg.model, self.cfg.pretrained)
        if quick is not None:
            return quick
        _require_models()
        from curate.models.loading import describe_model

        return describe_model(self.cfg.model, self.cfg.pretrained, cache_dir=self.cfg.cache_dir)

    def columns(self) -> list[str]:
        return [score_column(self.name)]

    def image_columns(self) -> list[str]:
        return [score_column(self.name)]

    def views(self) -> list[ImageView]:
        mode = "squash" if self.info.resize_mode == "squash" else "crop"
        return [ImageView(self.info.image_size, mode, "RGB")]

    def embedding_dims(self) -> dict[str, int]:
        dims = {}
        if self.cfg.image_embeddings:
            dims["image"] = self.info.embed_dim
        if self.cfg.text_embeddings:
            dims["text"] = self.info.embed_dim
        return dims

    def preflight(self) -> None:
        _require_models()  # on the driver, before any actor would fail to import them
        from curate.models.loading import check_available

        if _found_without_open_clip(self.cfg.model, self.cfg.pretrained):
            return

        check_available(self.cfg.model, self.cfg.pretrained, cache_dir=self.cfg.cache_dir)

    def setup(self) -> None:
        _require_models()
        import torch

        from curate.models.loading import load_clip

        # Ray hides the GPUs an actor was not given (CUDA_VISIBLE_DEVICES), so "auto" can trust torch.
        device = "cuda" if torch.cuda.is_available() and self.config.num_gpus != 0 else "cpu"
        precision = self.cfg.precision
        if precision == "auto":
            precision = "bf16" if device == "cuda" else "fp32"
        self.clip = load_clip(self.cfg.model, self.cfg.pretrained, device=device, precision=precision,
                              cache_dir=self.cfg.cache_dir)
        cfg = self.clip.preprocess_cfg
        self._mean = torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))).view(1, 3, 1, 1)
        self._std = torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711))).view(1, 3, 1, 1)

    def pixels(self, images: np.ndarray):  # type: ignore[no-untyped-def]
        """uint8 NHWC views → normalised float NCHW on the model's device (normalised there, after the copy)."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.clip.device, non_blocking=True)
        return self.normalise(x.permute(0, 3, 1, 2))

    def normalise(self, x):  # type: ignore[no-untyped-def]
        """uint8 NCHW on the model's device → the model's normalised float input."""
        x = x.float().div_(255.0)
        return (x - self._mean.to(x.device)) / self._std.to(x.device)

    def _image_input(self, batch: Batch, ok: np.ndarray):  # type: ignore[no-untyped-def]
        """(model input of the rows with a usable image, updated ok mask)."""
        view = self.views()[0]
        column = batch[view.column]
        if column.dtype != object:
            return self.pixels(column[ok]), ok
        # jpeg_decode_on: model — decode the JPEGs here, on the model's device.
        from curate.stages.score.device_decode import IMAGE_BYTES, device_views

        images, ok = device_views(batch[IMAGE_BYTES], column, ok, view, self.clip.device)
        return self.normalise(images), ok

    def __call__(self, batch: Batch) -> Batch:
        if not hasattr(self, "clip"):
            self.setup()
        given = batch[IMAGE_OK].astype(bool)
        n, dim = len(given), self.clip.embed_dim
        text = self.clip.encode_texts([str(c) for c in batch[CAPTION].tolist()]).cpu().numpy()
        image = np.full((n, dim), np.nan, np.float32)
        ok = given
        if given.any():
            pixels, ok = self._image_input(batch, given)
            if ok.any():
                image[ok] = self.clip.encode_images(pixels).cpu().numpy()
        score = np.einsum("nd,nd->n", image, text).astype(np.float32)  # NaN where the image did not decode
        out = {
            score_column(self.name): score,
            embedding_column(self.name, "image"): image.astype(np.float16),
            embedding_column(self.name, "text"): text.astype(np.float16),
        }
        if (ok != given).any():  # the device decoder rejected some JPEGs the header check passed
            reasons = batch[IMAGE_REASON].copy()
            reasons[given & ~ok] = UNDECODABLE
            out.update({IMAGE_OK: ok, IMAGE_REASON: reasons})
        return out
