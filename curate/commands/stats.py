"""`curate stats POOL`: pool statistics as reports/stats.json and a self-contained reports/index.html."""

from __future__ import annotations

from typing import Annotated

import typer

from curate.cli import app
from curate.commands.common import ConfigOpt
from curate.config import StatsConfig, load_pipeline
from curate.pool import Pool


@app.command("stats")
def stats_command(
    pool: Annotated[str, typer.Argument(help="Pool directory or URL (s3://, gs://).")],
    grid_samples: Annotated[
        int | None, typer.Option("--grid-samples", min=1, max=64,
                                 help="Images on each side of every threshold cut (default 8).")] = None,
    max_rows: Annotated[
        int | None, typer.Option("--max-rows", min=1000,
                                 help="Histograms use a seeded sample of this many rows at most (default 2M).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Write reports/stats.json and reports/index.html for POOL: the funnel from candidates to export (per
    stage and per filter condition), download success and error reasons, histograms of every score column,
    language mix, caption lengths, image sizes, duplicate group sizes, the balancing head/tail curve, and
    image grids of samples just above and below each threshold of every applied filter spec.

    The HTML is one self-contained file (plots and thumbnails embedded): open it in any browser. Sections
    whose tables do not exist yet say so.
    """
    section = StatsConfig()
    if config is not None:
        section = load_pipeline(config).stats or section
    overrides = {"grid_samples": grid_samples, "max_rows": max_rows}
    section = StatsConfig(**{**section.model_dump(), **{k: v for k, v in overrides.items() if v is not None}})
    from curate.stats import write_report

    write_report(Pool(pool), section)
