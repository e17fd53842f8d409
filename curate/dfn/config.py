"""The train-dfn YAML: what to train on, what to start from, how long, where to write.

A DFN run is its own YAML (not a pipeline section): training a filter is a separate job from
curating a pool, and usually runs on different machines. Every key is documented in docs/dfn.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from curate.names import PoolName
from curate.yamlconf import validate_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebdatasetSource(_Strict):
    """Webdataset tar shards: {key}.jpg|png|webp + {key}.txt (+ {key}.json)."""

    kind: Literal["webdataset"] = "webdataset"
    urls: list[str] = Field(min_length=1, description="tar files, directories of tars, or globs (any fsspec URL)")
    label_field: str | None = Field(None, description="key in each sample's .json naming its class (for eval)")


class ParquetSource(_Strict):
    """Parquet files holding encoded image bytes and a caption per row."""

    kind: Literal["parquet"] = "parquet"
    paths: list[str] = Field(min_length=1, description="parquet files, directories of them, or globs")
    image_column: str = "jpg"
    caption_column: str = "caption"
    uid_column: str | None = "uid"
    label_field: str | None = Field(None, description="column naming each row's class (for eval)")


class PoolSubsetSource(_Strict):
    """A pool subset (subsets/<name>/uids.parquet) read from that pool's download shards."""

    kind: Literal["pool_subset"] = "pool_subset"
    pool: str
    subset: PoolName
    label_field: str | None = Field(None, description="key in each sample's .json naming its class (for eval)")


DataSource = Annotated[WebdatasetSource | ParquetSource | PoolSubsetSource, Field(discriminator="kind")]


class ModelStart(_Strict):
    """What training starts from: exactly one of pretrained weights, a local checkpoint, or scratch."""

    name: str = Field(description="open_clip architecture (e.g. ViT-B-32, curate-tiny) or hf-hub:org/repo")
    pretrained: str | None = Field(None, description="open_clip pretrained tag or a local weights file")
    checkpoint: str | None = Field(None, description="local directory in the hf-hub layout to fine-tune from")
    from_scratch: bool = Field(False, description="random initialisation of `name`")

    @model_validator(mode="after")
    def _one_start(self) -> ModelStart:
        chosen = [self.pretrained is not None, self.checkpoint is not None, self.from_scratch]
        if sum(chosen) > 1:
            raise ValueError("give only one of pretrained, checkpoint, from_scratch")
        if sum(chosen) == 0 and not self.name.startswith("hf-hub:"):
            raise ValueError("say where to start: pretrained: TAG, checkpoint: DIR, or from_scratch: true")
        return self


class TrainSettings(_Strict):
    steps: int = Field(gt=0, description="optimizer steps in the whole run")
    batch_size: int = Field(256, gt=1, description="global batch (split evenly over workers)")
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.2, ge=0)
    warmup_steps: int = Field(0, ge=0)
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    grad_clip_norm: float | None = Field(None, gt=0)
    seed: int = 0
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 autocast on GPU, fp32 on CPU")
    loader_workers: int = Field(2, ge=0, description="DataLoader processes decoding images, per training worker")
    log_every: int = Field(10, gt=0)
    cpu_threads: int | None = Field(
        None, gt=0, description="torch intra-op threads when training on CPU (1 is fastest on a busy machine)")


class CheckpointSettings(_Strict):
    every_steps: int = Field(500, gt=0, description="write a resumable checkpoint every N steps")
    keep_last: int = Field(2, gt=0, description="older checkpoints are deleted")
    resume: bool = Field(True, description="continue from the newest checkpoint in output_dir if there is one")


class ScalingSettings(_Strict):
    """local: one process, no Ray. ray: Ray Train TorchTrainer with num_workers (DDP)."""

    backend: Literal["local", "ray"] = "local"
    num_workers: int = Field(1, gt=0)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1, gt=0)
    ray_address: str | None = None


class DFNTrainConfig(_Strict):
    data: DataSource
    model: ModelStart
    train: TrainSettings
    checkpoint: CheckpointSettings = CheckpointSettings()
    scaling: ScalingSettings = ScalingSettings()
    output_dir: str = Field(description="checkpoints/ and the final model/ (hf-hub layout) go here")

    @model_validator(mode="after")
    def _batch_divides(self) -> DFNTrainConfig:
        workers = self.scaling.num_workers if self.scaling.backend == "ray" else 1
        if self.train.batch_size % workers:
            raise ValueError(f"train.batch_size {self.train.batch_size} must divide evenly over {workers} workers")
        return self

    @property
    def world_size(self) -> int:
        return self.scaling.num_workers if self.scaling.backend == "ray" else 1


def load_dfn_config(path: str | Path) -> DFNTrainConfig:
    """Validate a train-dfn YAML; errors name file, line and key (ConfigError)."""
    return validate_yaml(DFNTrainConfig, path)
