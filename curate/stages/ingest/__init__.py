"""Ingest: Common Crawl WAT/WARC files → candidates/part-NNNNN.parquet (one per input file).

Entry point for the CLI and the pipeline runner: `run(pool, config, ...)`.
"""

from __future__ import annotations

from typing import Any

from curate.config import IngestConfig
from curate.pool import Pool
from curate.poollock import locked
from curate.runner import run_stage
from curate.stages.ingest.candidates import CANDIDATE_SCHEMA, CandidateRules
from curate.stages.ingest.inputs import InputFile, resolve_inputs, shard_id
from curate.stages.ingest.shard import candidates_rel, ingest_shard

STAGE = "ingest"

__all__ = ["CANDIDATE_SCHEMA", "STAGE", "candidates_rel", "plan_shards", "rules_from_config", "run"]


def rules_from_config(config: IngestConfig) -> CandidateRules:
    return CandidateRules(
        keep_empty_captions=config.keep_empty_captions,
        max_caption_chars=config.max_caption_chars,
        max_url_chars=config.max_url_chars,
        use_title_without_alt=config.use_title_without_alt,
        max_record_bytes=config.max_record_bytes,
    )


def plan_shards(config: IngestConfig) -> dict[str, InputFile]:
    """Shard id → input file, numbered by the sorted input list."""
    files = resolve_inputs(config.inputs, config.crawl_files, config.crawl_base_url)
    return {shard_id(i): f for i, f in enumerate(files)}


@locked("ingest")
def run(
    pool: Pool,
    config: IngestConfig,
    *,
    ray_address: str | None = None,
    rerun: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Ingest every input of `config` into `pool`; returns reports/ingest.json's content.

    Raises StageFailed naming the shards (input files) that failed."""
    shards = plan_shards(config)
    result = run_stage(
        STAGE,
        pool,
        ingest_shard,
        shards,
        rules_from_config(config),
        num_cpus=config.num_cpus,
        max_retries=config.max_retries,
        ray_address=ray_address,
        rerun=rerun,
        quiet=quiet,
        outputs=lambda sid, _payload, _stats: [candidates_rel(sid)],
    )
    result.raise_for_failures()
    return result.report
