"""Pipeline configuration: one YAML file, one section per stage, validated before any work.

Each stage's section model lives in curate/sections/<stage>.py and is re-exported here; this module
only assembles PipelineConfig. docs/config.md is generated from these models (`python -m
curate.docs_config`): every key needs a Field description, which is also its flag's --help.
A stage whose section is absent is not part of the pipeline (`curate run` skips it).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from curate.sections.balance import BalanceConfig
from curate.sections.base import Section
from curate.sections.dedup import (
    DecontaminateDedup,
    DedupConfig,
    DedupMethod,
    ExactDedup,
    KeepRule,
    PerceptualDedup,
    SemanticDedup,
)
from curate.sections.download import DownloadConfig
from curate.sections.export import ExportConfig
from curate.sections.filter import FilterConfig
from curate.sections.ingest import IngestConfig
from curate.sections.score import ScoreConfig, ScorerSpec
from curate.sections.stats import StatsConfig
from curate.sections.train_dfn import TrainDfnConfig
from curate.yamlconf import validate_yaml

__all__ = [
    "BalanceConfig", "DecontaminateDedup", "DedupConfig", "DedupMethod", "DownloadConfig", "ExactDedup",
    "ExportConfig", "FilterConfig", "IngestConfig", "KeepRule", "PerceptualDedup", "PipelineConfig", "ScoreConfig",
    "ScorerSpec", "Section", "SemanticDedup", "StatsConfig", "TrainDfnConfig", "load_pipeline",
]


_SECTION = "the stage's section (below); absent: `curate run` skips the stage"


class PipelineConfig(Section):
    """A pipeline YAML: the pool, and one section per stage."""

    name: str = Field("pipeline", description="a label for reports")
    pool: str = Field(..., description="pool directory or URL (`s3://…`, `gs://…`)")
    ray_address: str | None = Field(
        None, description="Ray cluster to join: `auto` or `ray://host:10001`; none: a new local Ray, even if a "
        "`ray start` cluster or `RAY_ADDRESS` is around")
    ingest: IngestConfig | None = Field(None, description=_SECTION)
    download: DownloadConfig | None = Field(None, description=_SECTION)
    train_dfn: TrainDfnConfig | None = Field(None, description=_SECTION)
    score: ScoreConfig | None = Field(None, description=_SECTION)
    dedup: DedupConfig | None = Field(None, description=_SECTION)
    filter: FilterConfig | None = Field(None, description=_SECTION)
    balance: BalanceConfig | None = Field(None, description=_SECTION)
    export: ExportConfig | None = Field(None, description=_SECTION)
    stats: StatsConfig | None = Field(None, description=_SECTION)


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Validate a pipeline YAML; relative paths inside it stay relative to the working dir."""
    return validate_yaml(PipelineConfig, path)
