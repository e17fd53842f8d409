"""Pipeline configuration: one YAML file, one section per stage, validated before any work.

Each stage owns its section's model below; every key is documented in docs/config.md.
A stage whose section is absent is not part of the pipeline (`curate run` skips it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from curate.yamlconf import validate_yaml


class Section(BaseModel):
    """Base for config sections: unknown keys are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid")


class IngestConfig(Section):
    inputs: list[str] = Field(default_factory=list, description="files, globs, URLs or crawl ids (CC-MAIN-…)")
    crawl_files: int = Field(1, ge=1, description="with a crawl id: how many of its WAT files to read")
    crawl_base_url: str = Field("https://data.commoncrawl.org", description="where crawl paths resolve")
    keep_empty_captions: bool = False
    max_caption_chars: int = Field(2000, ge=1, description="longer captions are truncated")
    use_title_without_alt: bool = Field(True, description="WAT: fall back to the title attribute")


class DownloadConfig(Section):
    image_size: int = Field(512, ge=1)
    resize_mode: Literal["no", "keep_ratio", "keep_ratio_largest", "center_crop", "border"] = "keep_ratio_largest"
    resize_only_if_bigger: bool = True
    encode_format: Literal["jpg", "png", "webp"] = "jpg"
    encode_quality: int = Field(95, ge=1, le=100)
    output_format: Literal["webdataset", "parquet"] = "webdataset"
    samples_per_shard: int = Field(10_000, ge=1)
    retries: int = Field(2, ge=0)
    timeout: float = Field(10.0, gt=0, description="seconds per request")
    shard_timeout: float = Field(3600.0, gt=0, description="seconds per shard before it is cut short")
    thread_count: int = Field(64, ge=1, description="concurrent fetches per shard task")
    user_agent_token: str = "curate"
    respect_optouts: bool = True
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(89_478_485, ge=1)
    per_host_concurrency: int = Field(8, ge=1)
    per_host_rate: float = Field(50.0, gt=0, description="requests per second per host, per shard task")
    allow_addresses: list[str] = Field(default_factory=list, description="addresses/networks exempt from blocking")


class ScoreConfig(Section):
    scorers: list[dict[str, Any]] = Field(default_factory=list)


class DedupConfig(Section):
    methods: list[dict[str, Any]] = Field(default_factory=list)


class FilterConfig(Section):
    spec: str | None = Field(None, description="path of the filter spec YAML (docs/spec-reference.md)")
    name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="subset name; default: the spec's name"
    )
    approximate: bool = Field(
        False, description="bounded-memory histogram cut-offs for top/bottom_fraction instead of exact ones"
    )


class BalanceConfig(Section):
    metadata: str | None = None
    name: str = "balanced"
    t: int | None = Field(None, ge=1)
    tail_fraction: float | None = Field(None, gt=0, lt=1)
    seed: int = 0


class ExportConfig(Section):
    subset: str | None = Field(
        None, description="subset name (subsets/<name>, balanced/<name>), a directory, or a uids.npy/uids.parquet path"
    )
    name: str | None = Field(None, description="exports/<name>/; default: the subset's name")
    samples_per_shard: int = Field(10_000, ge=1, description="samples per output webdataset shard")
    shuffle_buffer: int = Field(0, ge=0, description="samples held in a seeded shuffle buffer per task; 0: keep order")
    seed: int = Field(0, description="seed of the shuffle buffer")
    with_images_parquet: bool = Field(False, description="also write images/NNNNNNNN.parquet with the image bytes")


class StatsConfig(Section):
    histogram_bins: int = Field(40, ge=2, le=1000, description="bins per score histogram")
    max_rows: int = Field(2_000_000, ge=1000, description="rows sampled (seeded) for histograms beyond this size")
    grid_samples: int = Field(8, ge=1, le=64, description="images shown on each side of a threshold cut")
    thumbnail_size: int = Field(96, ge=16, le=512, description="longest side of grid thumbnails, pixels")
    top_errors: int = Field(15, ge=1, description="download error messages listed")
    seed: int = Field(0, description="seed of the row sample")


class PipelineConfig(Section):
    name: str = "pipeline"
    pool: str = Field(..., description="pool directory or URL")
    ray_address: str | None = None
    ingest: IngestConfig | None = None
    download: DownloadConfig | None = None
    score: ScoreConfig | None = None
    dedup: DedupConfig | None = None
    filter: FilterConfig | None = None
    balance: BalanceConfig | None = None
    export: ExportConfig | None = None
    stats: StatsConfig | None = None


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Validate a pipeline YAML; relative paths inside it stay relative to the working dir."""
    return validate_yaml(PipelineConfig, path)
