"""The scorer plug-in API: one registered class per module, run on Ray Data batches.

A scorer declares its config model (a pydantic class with a literal `type`), the columns it writes,
its resources (batch_size, num_gpus, concurrency), the decoded image views it needs, and a
`setup()` that loads its model once per actor. `__call__(batch)` receives a numpy batch (dict of
column -> array, Ray Data's batch format) and returns the new columns for every row.

Adding a scorer is one new module in curate/scorers/ that defines a config class and a scorer
class decorated with `@register`; the stage and the pipeline config discover it from the registry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from curate.names import name_problem

Batch = dict[str, np.ndarray]

# Columns the stage puts in every batch before scorers run.
UID = "uid"
CAPTION = "caption"
SHARD = "shard"
INDEX = "index"  # position of the sample in its shard, so outputs keep the shard's order
IMAGE_OK = "image_ok"  # bool: the image decoded (and any view below is valid)
IMAGE_REASON = "image_reason"  # "" when decoded, otherwise why not (counted in stats)
WIDTH, HEIGHT = "decoded_width", "decoded_height"  # pixel size of the stored image
ORIG_WIDTH, ORIG_HEIGHT = "original_width", "original_height"  # before download resizing


def embedding_column(scorer_name: str, kind: str = "image") -> str:
    """Batch column through which a clip scorer hands its embeddings to later scorers and the writer."""
    return f"_{kind}_embedding:{scorer_name}"


@dataclass(frozen=True)
class ImageView:
    """A decoded form of the image a scorer needs; the stage decodes each image once for all views.

    crop: resize the shortest side to `size` then centre-crop size x size (CLIP's eval transform);
    squash: resize the whole image to size x size ignoring aspect (perceptual hashes).
    """

    size: int
    mode: Literal["crop", "squash"] = "crop"
    color: Literal["RGB", "L"] = "RGB"

    @property
    def column(self) -> str:
        return f"_view:{self.color}:{self.mode}:{self.size}"


class ScorerConfig(BaseModel):
    """Settings every scorer has; subclasses add `type: Literal[...]` and their own keys."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="which scorer this is; its own keys are listed under its name below")
    name: str = Field("", description="output name: `scores/<name>/` (and `clip_<name>_similarity_score`); "
                      "default: the type")
    batch_size: int = Field(256, ge=1, description="rows per call of the scorer")
    num_gpus: float | Literal["auto"] = Field(
        "auto", description="GPUs per actor; auto = 1 for model scorers when the cluster has GPUs, else 0"
    )
    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per actor")
    concurrency: int = Field(1, ge=1, description="actors in the pool (model scorers)")

    @field_validator("name")
    @classmethod
    def _name_is_one_path_segment(cls, value: str) -> str:
        # It becomes scores/<name>/ and embeddings/<name>/; "" means "use the type".
        problem = name_problem(value) if value else None
        if problem:
            raise ValueError(problem)
        return value

    def model_post_init(self, _context: Any) -> None:
        if not self.name:
            self.name = self.type


class Scorer(ABC):
    """Base class of scorers. Instances are built on the driver and in actors from their config."""

    type: ClassVar[str]
    config_class: ClassVar[type[ScorerConfig]]
    uses_model: ClassVar[bool] = False  # True: runs in an actor pool (loads a model in setup)

    def __init__(self, config: ScorerConfig, peers: dict[str, ScorerConfig] | None = None) -> None:
        self.config = config
        self.peers = peers or {}  # the other scorers' configs, by name (nsfw reads its clip's)

    @property
    def name(self) -> str:
        return self.config.name

    @abstractmethod
    def columns(self) -> list[str]:
        """Output columns written to scores/<name>/<shard>.parquet (besides uid)."""

    def image_columns(self) -> list[str]:
        """Columns that have no value (null) when the image did not decode."""
        return []

    def views(self) -> list[ImageView]:
        """Decoded image views this scorer reads; [] for text-only scorers."""
        return []

    def embedding_dims(self) -> dict[str, int]:
        """Embeddings written to embeddings/<name>/ ({"image": D, "text": D}); {} for none."""
        return {}

    def requires(self) -> list[str]:
        """Names of scorers that must run before this one (it reads their batch columns)."""
        return []

    def preflight(self) -> None:  # noqa: B027 - optional hook
        """Cheap checks on the driver before any shard is read (a model that is missing fails here)."""

    def setup(self) -> None:  # noqa: B027 - optional hook, most CPU scorers need nothing
        """Load models; called once per actor (or once per task for CPU scorers) before any batch."""

    @abstractmethod
    def __call__(self, batch: Batch) -> Batch:
        """New columns (arrays as long as the batch) for `batch`."""


_REGISTRY: dict[str, type[Scorer]] = {}


def register(cls: type[Scorer]) -> type[Scorer]:
    """Class decorator adding a scorer type to the registry."""
    if cls.type in _REGISTRY and _REGISTRY[cls.type] is not cls:
        raise ValueError(f"scorer type {cls.type!r} registered twice")
    _REGISTRY[cls.type] = cls
    return cls


def registry() -> dict[str, type[Scorer]]:
    from curate.scorers import load_scorer_modules

    load_scorer_modules()
    return dict(_REGISTRY)


def build_scorers(configs: list[ScorerConfig]) -> list[Scorer]:
    peers = {c.name: c for c in configs}
    types = registry()
    return [types[c.type](c, peers) for c in configs]
