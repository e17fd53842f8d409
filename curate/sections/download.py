"""The `download:` section of a pipeline YAML. Download: candidates → image shards."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from curate.sections.base import Section


class DownloadConfig(Section):
    """Download (docs/download.md). Defaults follow DataComp's download settings."""

    image_size: int = Field(512, ge=1, description="target side in pixels (which side: `resize_mode`)")
    resize_mode: Literal["no", "keep_ratio", "keep_ratio_largest", "center_crop", "border"] = Field(
        "keep_ratio_largest", description="img2dataset's resize modes: `no`, `keep_ratio` (smaller side = size), "
        "`keep_ratio_largest` (larger side = size), `center_crop`, `border`")
    resize_only_if_bigger: bool = Field(True, description="never enlarge small images")
    encode_format: Literal["jpg", "png", "webp"] = Field("jpg", description="format of the stored images")
    encode_quality: int = Field(95, ge=1, le=100, description="jpg/webp quality; png: compression effort")
    output_format: Literal["webdataset", "parquet"] = Field(
        "webdataset", description="`webdataset`: `shards/<id>.tar` (+ `.parquet`); `parquet`: image bytes in the "
        "`.parquet`'s `jpg` column")
    samples_per_shard: int = Field(10_000, ge=1, description="candidates per download shard")
    retries: int = Field(
        2, ge=0, description="extra attempts for transient failures (timeouts, connection errors, 5xx, 429)")
    # Finite and bounded: the deadlines feed socket and thread waits, which overflow on .inf or
    # anything past threading.TIMEOUT_MAX, failing every shard.
    timeout: float = Field(10.0, gt=0, le=86_400, allow_inf_nan=False,
                           description="hard seconds per request: connect, status line, headers, `100 Continue`s, "
                           "chunk-size lines and body together, however slowly they drip; finite, at most 1 day")
    shard_timeout: float = Field(
        3600.0, gt=0, le=2_592_000, allow_inf_nan=False,
        description="seconds per shard; samples unfinished by then get status `timeout`; finite, at most 30 days")
    overwrite_worse: bool = Field(
        False, description="let a rerun replace a finished shard with one holding fewer successful images; by "
        "default the earlier shard is kept and the run says so (docs/download.md, Resume)")
    thread_count: int = Field(64, ge=1, description="concurrent fetches per shard task")
    user_agent_token: str = Field(
        "curate", min_length=1, pattern=r"^[A-Za-z0-9._-]+$",
        description="crawler name in the User-Agent; a scoped `X-Robots-Tag: curate: noai` applies to it")
    respect_optouts: bool = Field(
        True, description="honour `X-Robots-Tag` noai/noimageai/noindex/noimageindex/none (status `opted_out`)")
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1, description="stop reading a body past this many bytes")
    max_image_pixels: int = Field(
        89_478_485, ge=1,
        description="refuse images whose header declares more pixels, before decoding (decompression bombs)")
    image_memory_mb: int = Field(
        1024, ge=1, description="decode memory per shard task shared by its fetch threads, estimated from image "
        "headers; a larger image is decoded alone (docs/download.md)")
    per_host_concurrency: int = Field(8, ge=1, description="requests in flight per host, per shard task")
    per_host_rate: float = Field(50.0, gt=0, description="requests per second per host, per shard task")
    dns_cache_seconds: float = Field(300.0, ge=0, description="seconds a DNS answer (or failure) is reused")
    allow_addresses: list[str] = Field(
        default_factory=list,
        description="addresses/CIDR networks exempt from the loopback/private/link-local block (e.g. 127.0.0.1 "
        "for a local test server)")
