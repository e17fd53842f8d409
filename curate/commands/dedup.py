"""`curate dedup`: flag exact, perceptual and semantic duplicates and evaluation-set contamination."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from curate.cli import app
from curate.commands.common import PoolOpt, RayAddressOpt, RerunOpt
from curate.commands.options import section_options
from curate.config import DedupConfig
from curate.errors import ConfigError
from curate.pool import Pool


@app.command("dedup")
@section_options(DedupConfig, "dedup")
def dedup_command(
    section: DedupConfig,
    pool: PoolOpt,
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
    same settings is skipped; --rerun redoes it. Methods can also be given, or a setting changed,
    without a YAML: --set 'methods=[{method: exact}]', --set methods.0.max_distance=2. See docs/dedup.md.
    """
    if not section.methods:
        raise ConfigError("curate dedup: no methods: give --config PIPELINE.yaml with a `dedup: methods:` list, "
                          "or --set 'methods=[{method: exact}]' (see docs/dedup.md)")
    from curate.stages.dedup import run

    report = run(Pool(pool), section, ray_address=ray_address, rerun=rerun, only=only or None)
    if as_json:
        typer.echo(json.dumps(report, indent=2, sort_keys=True))
