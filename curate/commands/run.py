"""`curate run`: every configured stage of a pipeline YAML, in order, on one pool."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curate.cli import app
from curate.commands.common import RayAddressOpt
from curate.config import load_pipeline
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
) -> None:
    """Run the pipeline's stages in order: ingest, download, train_dfn, score, dedup, filter, balance, export, stats.

    Each stage skips shards it already finished, so re-running after a crash completes only what is
    missing. The resolved config and per-stage hashes are written to POOL/pipeline.yaml; a stage
    that finished under a different config stops the run instead of mixing outputs.
    """
    cfg = load_pipeline(pipeline)
    run_pipeline(cfg, start=start, stop=stop, ray_address=ray_address, redo_changed=redo_changed)
