"""`curate dedup`: flag exact, perceptual and semantic duplicates and evaluation-set contamination."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from curate.cli import app
from curate.commands.common import ConfigOpt, PoolOpt, RayAddressOpt, RerunOpt
from curate.config import DedupConfig, load_pipeline
from curate.errors import ConfigError
from curate.pool import Pool


@app.command("dedup")
def dedup_command(
    pool: PoolOpt,
    config: ConfigOpt = None,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="Run only the configured method with this name (repeatable; a method's name "
                     "defaults to its kind: exact, perceptual, semantic, decontaminate)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report (reports/dedup.json) as JSON.")] = False,
    ray_address: RayAddressOpt = None,
    rerun: RerunOpt = False,
) -> None:
    """Find duplicates with the methods listed under `dedup: methods:` in the pipeline YAML (--config).

    Each method writes dedup/NAME.parquet with uid, group (int64), is_duplicate (bool) and its score
    columns, and adds its statistics (duplicate groups, samples removed, rate) to reports/dedup.json.
    Methods: exact (same sha256 of the downloaded image bytes); perceptual (phash from
    scores/image_stats within Hamming distance max_distance); semantic (SemDeDup: spherical k-means
    of an embeddings/ column, then cosine > 1 - eps inside a cluster); decontaminate (highest cosine
    to any evaluation image, flagged above threshold).

    The kept member of a group follows `keep`: lowest_uid (default), highest_score (with score_column),
    or farthest_from_centroid (semantic's default, as in SemDeDup). A method already finished with the
    same settings is skipped; --rerun redoes it. See docs/dedup.md.
    """
    if config is None:
        raise ConfigError("curate dedup needs --config PIPELINE.yaml with a `dedup:` section listing methods")
    section = load_pipeline(config).dedup
    if section is None or not section.methods:
        raise ConfigError(f"{config}: no `dedup: methods:` section; nothing to deduplicate (see docs/dedup.md)")
    from curate.stages.dedup import run

    report = run(Pool(pool), DedupConfig.model_validate(section.model_dump()), ray_address=ray_address,
                 rerun=rerun, only=only or None)
    if as_json:
        typer.echo(json.dumps(report, indent=2, sort_keys=True))
