"""The `dedup:` section of a pipeline YAML. Dedup: exact, perceptual, semantic duplicates and decontamination."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from curate.names import PoolName
from curate.sections.base import Section

KeepRule = Literal["lowest_uid", "highest_score", "farthest_from_centroid"]
_METHOD = "which method this is; its own keys are listed under its name below"


class _DedupMethod(Section):
    """Fields every dedup method shares; `name` names its output, dedup/<name>.parquet."""

    name: PoolName | None = Field(None, description="output `dedup/<name>.parquet`; default: the method")
    keep: KeepRule = Field("lowest_uid", description="which member of a duplicate group is kept: `lowest_uid`, "
                          "`highest_score`, `farthest_from_centroid` (semantic only)")
    score_column: str | None = Field(None, description="with `keep: highest_score`: a column of `scores/*/`, "
                                                       "e.g. `clip_b32_similarity_score`")

    @property
    def output_name(self) -> str:
        return self.name or self.method  # type: ignore[attr-defined]

    @model_validator(mode="after")
    def _keep_rule_is_complete(self) -> _DedupMethod:
        if self.keep == "highest_score" and not self.score_column:
            raise ValueError("keep: highest_score needs score_column (a column of scores/*/)")
        if self.keep == "farthest_from_centroid" and getattr(self, "method", None) != "semantic":
            raise ValueError("keep: farthest_from_centroid applies only to method: semantic")
        return self


class ExactDedup(_DedupMethod):
    """Same sha256 of the downloaded image bytes."""

    method: Literal["exact"] = Field("exact", description=_METHOD)


class PerceptualDedup(_DedupMethod):
    """phash within a Hamming distance."""

    method: Literal["perceptual"] = Field("perceptual", description=_METHOD)
    max_distance: int = Field(4, ge=0, le=31, description="largest Hamming distance between phashes of duplicates")
    scorer: PoolName = Field("image_stats", description="`scores/<scorer>/` holding the uint64 phash column")
    column: str = Field("phash", description="the phash column of `scores/<scorer>/`")


class SemanticDedup(_DedupMethod):
    """SemDeDup: spherical k-means of an embedding column, then cosine > 1 − eps inside a cluster."""

    method: Literal["semantic"] = Field("semantic", description=_METHOD)
    keep: KeepRule = "farthest_from_centroid"
    embeddings: PoolName = Field(..., description="`embeddings/<name>/` to cluster (a clip scorer's name)")
    column: str = Field("image_embedding", description="embedding column of `embeddings/<name>/`")
    eps: float = Field(0.05, gt=0, lt=2, description="duplicate when cosine to an earlier sample in the "
                       "cluster > 1 − eps")
    n_clusters: int | None = Field(None, ge=1, description="k-means clusters; default: samples / 1000")
    sample_size: int = Field(200_000, ge=1, description="k-means is fitted on this many samples (chosen by uid hash)")
    niter: int = Field(20, ge=1, description="k-means iterations")
    seed: int = Field(0, description="k-means seed")
    cluster_tasks: int = Field(32, ge=1, description="parallel Ray tasks the clusters are spread over")
    use_gpu: Literal["auto", "yes", "no"] = Field("auto", description="GPU faiss for k-means and assignment")


class DecontaminateDedup(_DedupMethod):
    """Highest cosine of each sample to any evaluation image, flagged above a threshold."""

    method: Literal["decontaminate"] = Field("decontaminate", description=_METHOD)
    eval_images: str = Field(..., description="folder of images, a webdataset `.tar`, or a glob of `.tar` files")
    model: str = Field(..., description="the CLIP model that made the pool's embeddings (open_clip name, "
                                        "`hf-hub:` id or local directory)")
    pretrained: str | None = Field(None, description="with an architecture: pretrained tag or weights file")
    embeddings: PoolName = Field(..., description="`embeddings/<name>/` of the pool, made by the same model")
    column: str = Field("image_embedding", description="embedding column of `embeddings/<name>/`")
    threshold: float = Field(0.9, gt=-1, le=1, description="flag samples whose max cosine to an eval image is above")
    device: str = Field("cpu", description="torch device embedding the eval images: `cpu`, `cuda`, `cuda:1` …")
    precision: Literal["fp32", "fp16", "bf16"] = Field("fp32", description="precision of the eval-image model")
    batch_size: int = Field(64, ge=1, description="eval images per model batch")


DedupMethod = Annotated[
    ExactDedup | PerceptualDedup | SemanticDedup | DecontaminateDedup, Field(discriminator="method")
]


class DedupConfig(Section):
    """Duplicate and contamination flags (docs/dedup.md)."""

    methods: list[DedupMethod] = Field(
        default_factory=list, description="dedup methods, run in order; each item's `method` picks its kind (below)")

    @model_validator(mode="after")
    def _names_are_unique(self) -> DedupConfig:
        names = [m.output_name for m in self.methods]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"two methods write the same output {dupes}; give them distinct `name`s")
        return self
