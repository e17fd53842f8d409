"""The `curate eval` YAML: which pool, which curated arms, which controls, which evaluation sets,
which training preset and how many seeds. Every key is documented in docs/eval.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from curate.dfn.config import ScalingSettings
from curate.evaluation.presets import PRESETS, Preset
from curate.names import PoolName
from curate.yamlconf import validate_yaml

POOL_ARM = "pool"
RANDOM_PREFIX = "random-"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ArmSpec(_Strict):
    """A curated arm: a set of the pool's samples to train on."""

    subset: str = Field(description="`subsets/<name>`, `balanced/<name>`, `exports/<name>`, a bare name (looked "
                        "up in subsets/ then balanced/), or a path/URL of a `uids.parquet`/`uids.npy`")
    name: PoolName | None = Field(None, description="the arm's name in results (default: the subset's name)")


class Controls(_Strict):
    """Arms curate draws itself, so every curated arm has something honest to be compared with."""

    random_same_size: bool = Field(True, description="per curated arm and seed, a uniformly random sample of the "
                                   "pool's downloaded samples of exactly the arm's size (`random-<arm>`)")
    full_pool: bool = Field(True, description="every downloaded sample of the pool, unfiltered (`pool`)")


class TrainOverrides(_Strict):
    """Changes to the preset; the same for every arm (equal compute is the point)."""

    model: str | None = Field(None, description="open_clip architecture trained from scratch")
    samples_seen: int | None = Field(None, gt=0, description="samples seen per run")
    batch_size: int | None = Field(None, gt=1, description="global batch")
    lr: float | None = Field(None, gt=0)
    warmup_steps: int | None = Field(None, ge=0)
    weight_decay: float | None = Field(None, ge=0)
    precision: Literal["auto", "bf16", "fp32"] | None = None
    cpu_threads: int | None = Field(None, gt=0, description="torch threads when training on CPU")
    loader_workers: int | None = Field(None, ge=0, description="DataLoader processes decoding images")


class Statistics(_Strict):
    bootstrap_reps: int = Field(2000, ge=100, description="bootstrap replicates of each paired difference")
    level: float = Field(0.95, gt=0.5, lt=1, description="confidence level of the intervals")
    seed: int = Field(0, description="seed of the bootstrap and of the random controls")


class ClipContamination(_Strict):
    """Also compare CLIP embeddings, as dedup's `decontaminate` method does (docs/dedup.md)."""

    model: str = Field(description="the model that made `embeddings/<embeddings>/` (name, hf-hub: id or directory)")
    pretrained: str | None = None
    embeddings: PoolName = Field(description="the pool's `embeddings/<name>/`")
    column: str = "image_embedding"
    threshold: float = Field(0.95, gt=-1, le=1, description="an eval image this close to a pool image is a leak")


class Contamination(_Strict):
    """The check that no evaluation image is in the pool; any hit is an error before training."""

    exact: bool = Field(True, description="identical image bytes (sha256)")
    phash_max_distance: int | None = Field(
        4, ge=0, le=32, description="pHash Hamming distance at or below which an eval image and a pool image "
        "are the same picture (the `perceptual` dedup rule); null skips this check")
    clip: ClipContamination | None = None


class EvalConfig(_Strict):
    name: PoolName = Field("eval", description="results go to `<pool>/evals/<name>/`")
    pool: str = Field(description="the pool whose downloaded samples the arms are drawn from")
    arms: list[ArmSpec] = Field(min_length=1, description="the curated arms")
    controls: Controls = Controls()
    evalsets: list[str] = Field(min_length=1, description="evaluation-set folders (format in docs/eval.md)")
    preset: Literal["tiny", "datacomp_small", "datacomp_medium"] = Field("tiny", description="model and budget")
    train: TrainOverrides = TrainOverrides()
    seeds: int = Field(3, ge=1, description="training seeds per arm (0 … seeds-1)")
    statistics: Statistics = Statistics()
    contamination: Contamination = Contamination()
    scaling: ScalingSettings = Field(default_factory=ScalingSettings,
                                     description="as in train-dfn: local, or Ray Train with num_workers / use_gpu")
    device: str | None = Field(None, description="torch device of evaluation (default: cuda when scaling.use_gpu)")

    @model_validator(mode="after")
    def _arm_names(self) -> EvalConfig:
        names = [a.name for a in self.arms if a.name]
        reserved = {POOL_ARM} | {n for n in names if n.startswith(RANDOM_PREFIX)}
        bad = sorted(n for n in names if n in reserved)
        if bad:
            raise ValueError(f"arm name {bad[0]!r} is reserved for the controls (pool, random-<arm>)")
        if len(set(names)) != len(names):
            raise ValueError("arm names must be unique")
        return self

    def resolved_preset(self) -> Preset:
        base = PRESETS[self.preset]
        changes = {k: v for k, v in self.train.model_dump().items() if v is not None}
        preset = base.model_copy(update=changes)
        if preset.samples_seen < preset.batch_size:
            raise ValueError(f"train.samples_seen {preset.samples_seen} is less than one batch of {preset.batch_size}")
        return preset

    @property
    def steps(self) -> int:
        preset = self.resolved_preset()
        return preset.samples_seen // preset.batch_size


def load_eval_config(path: str | Path) -> EvalConfig:
    """Validate an eval YAML; errors name file, line and key (ConfigError)."""
    return validate_yaml(EvalConfig, path)
