"""`curate run`: every configured stage of a pipeline YAML, in order, on one pool."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curate.cli import app
from curate.commands.common import RayAddressOpt
from curate.commands.options import SET_FLAG, apply_sets, set_option_help
from curate.config import PipelineConfig, load_pipeline
from curate.pipeline import STAGES, run_pipeline


@app.command("run")
def run_command(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML (see pipelines/ and docs/config.md).")],
    start: Annotated[str | None, typer.Option("--from", help=f"First stage to run: {', '.join(STAGES)}.")] = None,
    stop: Annotated[str | None, typer.Option("--to", help="Last stage to run.")] = None,
    ray_address: RayAddressOpt = None,
    redo_changed: Annotated[
        bool,
        typer.Option("--redo-changed", help="Redo stages whose config changed since they finished, and later ones."),
    ] = False,
    sets: Annotated[list[str] | None, typer.Option(
        SET_FLAG, metavar="KEY=VALUE",
        help=set_option_help("the pipeline YAML (`download.thread_count=16`; a section absent from it stays "
                             "absent)"))] = None,
) -> None:
    """Run the pipeline's stages in order: ingest, download, train_dfn, score, dedup, filter, balance, export, stats.

    Each stage skips shards it already finished, so re-running after a crash completes only what is
    missing. The resolved config and per-stage hashes are written to POOL/pipeline.yaml; a stage
    that finished under a different config stops the run instead of mixing outputs.
    """
    cfg = load_pipeline(pipeline)
    if sets:
        cfg = apply_sets(PipelineConfig, cfg.model_dump(), sets, "run")
    run_pipeline(cfg, start=start, stop=stop, ray_address=ray_address, redo_changed=redo_changed)
