"""nsfw: `nsfw_image_score` from a CLIP image embedding, `nsfw_text_score` from the caption.

Image score, strongest first:
- `head`: a classifier checkpoint in the format of LAION's CLIP-based-NSFW-Detector (PyTorch port,
  e.g. h14_nsfw.pth): a state dict of Linear layers applied in key order with ReLU between them and a
  sigmoid (1 output) or softmax's second class (2 outputs) at the end, over the L2-normalised embedding;
- zero-shot prompts (no head given): softmax over prompt similarities, summed over the unsafe prompts.
  Weaker — use it to rank, not as a calibrated probability.
Text score: 1.0 when the caption contains a term of the word list (whole words, lowercase), else 0.0;
with `text_head` (same format, over the CLIP text embedding), the maximum of both.
The image/text embeddings come from the clip scorer named by `clip`, which runs first in the same pass.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curate.errors import ConfigError, ModelNotFoundError
from curate.extras import check_installed, require
from curate.scorers.base import CAPTION, IMAGE_OK, Batch, Scorer, ScorerConfig, embedding_column, register

DEFAULT_WORDS = Path(__file__).parent / "data" / "nsfw_words.txt"
UNSAFE_PROMPTS = ["a pornographic photo", "an explicit photo of a naked person", "a photo of nudity", "nsfw content"]
SAFE_PROMPTS = ["a safe for work photo", "a photo of an object", "a photo of a landscape", "a photo of people",
                "a drawing", "a product photo"]


class NsfwConfig(ScorerConfig):
    type: Literal["nsfw"] = "nsfw"
    clip: str = Field(..., description="name of the clip scorer whose embeddings are classified")
    head: str | None = Field(None, description="image classifier checkpoint (LAION CLIP-based detector format)")
    text_head: str | None = Field(None, description="optional caption classifier over the CLIP text embedding")
    words: str | None = Field(None, description="word list file; default: curate/scorers/data/nsfw_words.txt")
    unsafe_prompts: list[str] = Field(default_factory=lambda: list(UNSAFE_PROMPTS),
                                      description="without a head: zero-shot prompts of unsafe images")
    safe_prompts: list[str] = Field(default_factory=lambda: list(SAFE_PROMPTS),
                                    description="without a head: zero-shot prompts of safe images")
    # A small MLP or one matmul over embeddings already computed: reserving a CPU for it would starve
    # the decode tasks on small machines.
    num_cpus: float = 0.0
    batch_size: int = 1024


def load_words(path: str | Path | None = None) -> list[str]:
    lines = Path(path or DEFAULT_WORDS).read_text(encoding="utf-8").splitlines()
    return [w.strip().lower() for w in lines if w.strip() and not w.lstrip().startswith("#")]


def words_pattern(words: list[str]) -> str:
    """One regex matching any term as whole words (RE2 syntax for pyarrow)."""
    alternatives = "|".join(sorted((re.escape(w).replace(r"\ ", r"\s+") for w in words), key=len, reverse=True))
    return rf"(?:^|[^\pL\pN])(?:{alternatives})(?:$|[^\pL\pN])"


def text_word_scores(captions: list[str] | np.ndarray, pattern: str) -> np.ndarray:
    lowered = pc.utf8_lower(pa.array(list(captions), pa.string()))
    return pc.match_substring_regex(lowered, pattern).fill_null(False).to_numpy(zero_copy_only=False).astype(
        np.float32)


class MlpHead:
    """A Linear/ReLU stack read from a state dict, in the LAION CLIP-based-NSFW-Detector layout."""

    def __init__(self, path: str | Path) -> None:
        import torch

        p = Path(path).expanduser()
        if not p.is_file():
            raise ModelNotFoundError(f"NSFW classifier {p} not found; put the checkpoint there or unset `head`")
        if p.suffix == ".safetensors":
            require("safetensors", "models", "the nsfw scorer's .safetensors head")
            from safetensors.torch import load_file

            state: dict[str, Any] = load_file(str(p))
        else:
            state = torch.load(str(p), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        weights = [k for k, v in state.items() if k.endswith("weight") and getattr(v, "ndim", 0) == 2]
        if not weights:
            raise ConfigError(f"{p}: no Linear layers found (expected a state dict of an MLP)")

        def order(key: str) -> list[Any]:
            return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]

        self.layers = [(state[k].float(), state.get(k[: -len("weight")] + "bias")) for k in sorted(weights, key=order)]
        self.in_dim = int(self.layers[0][0].shape[1])

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        import torch

        if embeddings.shape[1] != self.in_dim:
            raise ConfigError(
                f"NSFW head expects {self.in_dim}-d embeddings, the clip scorer gives {embeddings.shape[1]}"
            )
        x = torch.from_numpy(np.asarray(embeddings, np.float32))
        with torch.inference_mode():
            for i, (w, b) in enumerate(self.layers):
                x = torch.nn.functional.linear(x, w, None if b is None else b.float())
                if i < len(self.layers) - 1:
                    x = torch.relu(x)
            out = torch.sigmoid(x[:, 0]) if x.shape[1] == 1 else torch.softmax(x, dim=1)[:, 1]
        return out.numpy().astype(np.float32)


@register
class NsfwScorer(Scorer):
    type = "nsfw"
    config_class = NsfwConfig
    uses_model = True

    @property
    def cfg(self) -> NsfwConfig:
        return self.config  # type: ignore[return-value]

    def columns(self) -> list[str]:
        return ["nsfw_image_score", "nsfw_text_score"]

    def image_columns(self) -> list[str]:
        return ["nsfw_image_score"]

    def requires(self) -> list[str]:
        return [self.cfg.clip]

    def _require_models(self) -> None:
        check_installed("torch", "models", "the nsfw scorer")
        if not self.cfg.head:  # zero-shot: the clip scorer's model embeds the prompts
            check_installed("open_clip", "models", "the nsfw scorer")

    def preflight(self) -> None:
        self._require_models()
        for label, path in (("head", self.cfg.head), ("text_head", self.cfg.text_head), ("words", self.cfg.words)):
            if path and not Path(path).expanduser().is_file():
                raise ModelNotFoundError(f"nsfw scorer {self.name!r}: {label} file {path} not found")

    def setup(self) -> None:
        self._require_models()
        self._pattern = words_pattern(load_words(self.cfg.words))
        self._head = MlpHead(self.cfg.head) if self.cfg.head else None
        self._text_head = MlpHead(self.cfg.text_head) if self.cfg.text_head else None
        self._prompts: np.ndarray | None = None
        if self._head is None:
            self._prompts = self._prompt_embeddings()

    def _prompt_embeddings(self) -> np.ndarray:
        from curate.models.loading import load_clip
        from curate.scorers.clip import ClipConfig

        peer = self.peers.get(self.cfg.clip)
        if not isinstance(peer, ClipConfig):
            raise ConfigError(f"nsfw scorer {self.name!r}: `clip: {self.cfg.clip}` names no clip scorer")
        clip = load_clip(peer.model, peer.pretrained, cache_dir=peer.cache_dir)
        return clip.encode_texts(self.cfg.unsafe_prompts + self.cfg.safe_prompts).numpy()

    def __call__(self, batch: Batch) -> Batch:
        if not hasattr(self, "_pattern"):
            self.setup()
        ok = batch[IMAGE_OK].astype(bool)
        image = batch[embedding_column(self.cfg.clip, "image")].astype(np.float32)
        image_score = np.full(len(ok), np.nan, np.float32)
        if ok.any():
            if self._head is not None:
                image_score[ok] = self._head(image[ok])
            else:
                assert self._prompts is not None
                logits = 100.0 * image[ok] @ self._prompts.T
                probs = np.exp(logits - logits.max(axis=1, keepdims=True))
                probs /= probs.sum(axis=1, keepdims=True)
                image_score[ok] = probs[:, : len(self.cfg.unsafe_prompts)].sum(axis=1)
        text_score = text_word_scores(batch[CAPTION], self._pattern)
        if self._text_head is not None:
            text = batch[embedding_column(self.cfg.clip, "text")].astype(np.float32)
            text_score = np.maximum(text_score, self._text_head(text))
        return {"nsfw_image_score": image_score, "nsfw_text_score": text_score}
