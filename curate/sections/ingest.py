"""The `ingest:` section of a pipeline YAML. Ingest: Common Crawl WAT/WARC → candidates."""

from __future__ import annotations

from pydantic import Field

from curate.sections.base import Section


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
