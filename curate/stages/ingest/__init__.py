"""Ingest: Common Crawl WAT/WARC files → candidates/part-NNNNN.parquet (one per input file).

Entry point for the CLI and the pipeline runner: `run(pool, config, ...)`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from curate import layout, runner
from curate.config import IngestConfig
from curate.pool import Pool
from curate.stage import Pass, Resources, Stage, StageContext
from curate.stages.ingest.candidates import CANDIDATE_SCHEMA, CandidateRules
from curate.stages.ingest.inputs import InputFile, resolve_inputs, shard_id
from curate.stages.ingest.shard import ingest_shard

STAGE = "ingest"

__all__ = ["CANDIDATE_SCHEMA", "STAGE", "Ingest", "plan_shards", "rules_from_config", "run"]


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


class Ingest(Stage):
    """One pass, `extract`: each input file → candidates/part-<shard>.parquet."""

    name = STAGE
    config_class = IngestConfig
    reads = ()
    writes = ("candidates",)

    def run(self, ctx: StageContext) -> None:
        config: IngestConfig = ctx.config
        rules = rules_from_config(config)
        ctx.run_pass(Pass(
            "extract", ingest_shard, plan_shards(config), rules,
            # What a candidates file holds depends on the rules and on which file it was read from.
            fingerprint=dataclasses.asdict(rules),
            shard_inputs=lambda _sid, f: f.url,
            outputs=lambda sid, _payload, _stats: [layout.candidates_file(sid)],
            resources=Resources(num_cpus=config.num_cpus, max_retries=config.max_retries),
        ))


def run(pool: Pool, config: IngestConfig, *, ray_address: str | None = None, rerun: bool = False,
        quiet: bool = False) -> dict[str, Any]:
    """Ingest every input of `config` into `pool`; returns reports/ingest.json's content.

    Raises StageFailed naming the shards (input files) that failed."""
    return runner.run(Ingest(), pool, config, ray_address=ray_address, rerun=rerun, quiet=quiet)
