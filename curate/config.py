"""Pipeline configuration: one YAML file, one section per stage, validated before any work.

Each stage owns its section's model below. docs/config.md is generated from these models (`python -m
curate.docs_config`): every key needs a Field description, which is also its flag's --help.
A stage whose section is absent is not part of the pipeline (`curate run` skips it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from curate.names import PoolName
from curate.yamlconf import validate_yaml


class Section(BaseModel):
    """Base for config sections: unknown keys are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid")


class IngestConfig(Section):
    """Common Crawl WAT/WARC → candidates (docs/ingest.md)."""

    inputs: list[str] = Field(
        default_factory=list, description="files, globs, http(s)/s3 URLs or crawl ids (`CC-MAIN-2024-22`)")
    crawl_files: int = Field(
        1, ge=1, description="with a crawl id: how many files of its `wat.paths.gz` to read (the first N)")
    crawl_base_url: str = Field(
        "https://data.commoncrawl.org", description="where `crawl-data/<id>/wat.paths.gz` and the files it lists live")
    keep_empty_captions: bool = Field(False, description="keep images without alt/title text (`text` = `''`)")
    max_caption_chars: int = Field(2000, ge=1, description="longer captions are cut to this many characters")
    max_url_chars: int = Field(2048, ge=16, description="longer image URLs are dropped (`link_url_too_long`)")
    use_title_without_alt: bool = Field(True, description="take the `title` attribute where alt is missing or empty")
    max_record_bytes: int = Field(
        32 * 1024 * 1024, ge=1024,
        description="a record declaring a longer body (its Content-Length) is skipped unread and counted as "
        "`record_too_large`; bounds a task's memory")
    num_cpus: float = Field(1.0, gt=0, description="CPUs Ray reserves per shard (input file)")
    max_retries: int = Field(2, ge=0, description="retries of a failing shard before it is reported failed")


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


def _scorer_spec() -> Any:
    """Discriminated union (on `type`) of every registered scorer's config: clip, language, nsfw, …"""
    from typing import Union

    from curate.scorers.base import registry

    classes = tuple(cls.config_class for cls in registry().values())
    return Annotated[Union[classes], Field(discriminator="type")]  # noqa: UP007 - built from a tuple


ScorerSpec = _scorer_spec()


class ScoreConfig(Section):
    """Scores and embeddings of every downloaded sample (docs/score.md, docs/models.md)."""

    scorers: list[ScorerSpec] = Field(  # type: ignore[valid-type]
        default_factory=list, description="scorers to run, each a mapping with `type` (below); names must be unique"
    )
    max_image_pixels: int = Field(
        89_478_485, ge=1,
        description="images with more pixels (from the header) get no image scores: `too_many_pixels`")
    decode_batch_size: int = Field(256, ge=1, description="decoded samples per block coming out of a decode task")
    decode_num_cpus: float = Field(1.0, gt=0, description="CPUs per shard-decoding task")
    decode_memory_mb: int = Field(512, ge=1, description="memory reserved per shard-decoding task")
    jpeg_decode_on: Literal["tasks", "model"] = Field(
        "tasks", description="where model scorers' JPEGs are decoded: `tasks` = CPU decode tasks (PIL, draft "
        "mode); `model` = in each model actor on its device (nvJPEG on a GPU), the CPU tasks only read headers",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> ScoreConfig:
        names = [s.name for s in self.scorers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"scorer names must be unique (they name scores/<name>/): {', '.join(dupes)}")
        clips = {s.name for s in self.scorers if s.type == "clip"}
        for s in self.scorers:
            ref = getattr(s, "clip", None)
            if s.type == "nsfw" and ref not in clips:
                raise ValueError(f"nsfw scorer {s.name!r}: clip: {ref!r} names no clip scorer (have: {sorted(clips)})")
        return self


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


class FilterConfig(Section):
    """A filter spec applied to the pool (docs/filter.md)."""

    spec: str | None = Field(None, description="path of the filter spec YAML (docs/spec-reference.md)")
    name: PoolName | None = Field(None, description="subset name: outputs go to `subsets/<name>/`; default: "
                                  "the spec's `name`")
    approximate: bool = Field(
        False, description="bounded-memory histogram cut-offs for `top_fraction`/`bottom_fraction` instead of "
        "exact ones (docs/filter.md)"
    )


class BalanceConfig(Section):
    """MetaCLIP balancing (docs/balance.md)."""

    metadata: str | None = Field(
        None, description="entries: a `.txt` file (one entry a line), a `.json` list (MetaCLIP `metadata.json`), "
        "or a folder of `<lang>.txt`/`<lang>.json` files (MetaCLIP 2); local path or URL")
    name: PoolName = Field("balanced", description="output folder `balanced/<name>/`")
    t: int | None = Field(None, ge=1, description="at most about t samples per entry (MetaCLIP: 20000 for 400M); "
                          "with per-language metadata, t of `reference_language`; default 20000 when "
                          "`tail_fraction` is not given")
    tail_fraction: float | None = Field(None, gt=0, lt=1, description="instead of `t`: t per language "
                                        "by MetaCLIP 2's `p_to_t`, so this share of matches falls on tail entries "
                                        "(c_e < t); not together with `t`")
    seed: int = Field(0, description="seed of the per-sample draw hash(uid, seed)")
    subset: str | None = Field(None, description="balance only this filter subset's uids: `subsets/<spec>` or "
                        "`<spec>`")
    keep_unmatched: bool = Field(False, description="keep samples that match no entry (MetaCLIP drops them)")
    reference_language: str = Field("en", description="per-language metadata: the language `t` applies "
                                    "to; the others get the t with the same tail fraction")
    language_scorer: PoolName = Field("language", description="`scores/<name>/` whose `lang` column routes "
                                      "captions to per-language metadata")
    rule: Literal["auto", "metaclip", "metaclip2", "normalized"] = Field(
        "auto", description="matching rule (docs/balance.md): `metaclip` (MetaCLIP's substr_matching), `metaclip2` "
        "(MetaCLIP 2's), `normalized` (curate's: whitespace runs collapsed, entries spaced, full-width "
        "punctuation spaced); `auto`: metaclip for one metadata file, metaclip2 for a per-language folder")
    unspaced_languages: list[str] = Field(
        default_factory=lambda: ["zh", "ja", "th", "km", "lo", "my", "bo", "yue", "wuu"],
        description="rule `normalized` only: languages matched without space padding")
    lowercase: bool = Field(False, description="match case-insensitively (MetaCLIP matches case-sensitively)")
    language_map: dict[str, str] = Field(
        default_factory=dict, description="per-language metadata: language-id code → metadata file name "
        "(MetaCLIP 2's `lid_to_wiki`); a code mapped to `N/A`, an empty code, or one with no metadata file "
        "goes to `other_language`")
    other_language: str = Field("other", description="per-language metadata: the file (`<name>.txt`/`.json`) "
                                "that captions of unmapped languages are matched against, if the folder has it")

    @model_validator(mode="after")
    def _one_threshold(self) -> BalanceConfig:
        if self.t is not None and self.tail_fraction is not None:
            raise ValueError("give t or tail_fraction, not both")
        return self


class ExportConfig(Section):
    """A subset written as webdataset shards and Parquet for trainers (docs/export.md)."""

    subset: str | None = Field(
        None, description="what to export: `subsets/<spec>`, `balanced/<name>`, a bare name (looked up in "
        "`subsets/` then `balanced/`), a directory holding `uids.parquet`/`uids.npy`, or a path/URL of a "
        "`uids.parquet` (column `uid`) or DataComp `uids.npy`"
    )
    name: PoolName | None = Field(None, description="output directory `exports/<name>/`; default: the subset's "
                                  "name")
    samples_per_shard: int = Field(10_000, ge=1, description="samples per output tar (the last tar of each input shard "
                                   "may hold fewer)")
    shuffle_buffer: int = Field(0, ge=0, description="samples held in a seeded shuffle buffer per task; 0: keep order")
    seed: int = Field(0, description="seed of the shuffle buffer")
    with_images_parquet: bool = Field(False, description="also write `exports/<name>/images/NNNNNNNN.parquet` "
                                         "(key, uid, caption, ext, image bytes)")


class StatsConfig(Section):
    """The pool report, reports/stats.json and reports/index.html (docs/stats.md)."""

    histogram_bins: int = Field(40, ge=2, le=1000, description="bins per score histogram")
    max_rows: int = Field(2_000_000, ge=1000, description="beyond this many successful samples, histograms use a "
                          "seeded uniform row sample (counts in the funnel stay exact)")
    grid_samples: int = Field(8, ge=1, le=64, description="images shown on each side of every threshold cut")
    thumbnail_size: int = Field(96, ge=16, le=512, description="longest side of grid thumbnails, pixels")
    top_errors: int = Field(15, ge=1, description="download error messages listed (the rest summed as \"(other)\")")
    seed: int = Field(0, description="seed of the row sample")


class TrainDfnConfig(Section):
    """A DFN trained before `score` (docs/dfn.md); `curate run` resumes it and skips it once trained."""

    config: str = Field(..., description="path of a train-dfn YAML (docs/dfn.md); its `output_dir/model` is "
                        "the DFN")


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
