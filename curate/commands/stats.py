"""`curate stats POOL`: pool statistics as reports/stats.json and a self-contained reports/index.html."""

from __future__ import annotations

from typing import Annotated

import typer

from curate.cli import app
from curate.commands.options import section_options
from curate.config import StatsConfig
from curate.pool import Pool


@app.command("stats")
@section_options(StatsConfig, "stats")
def stats_command(
    section: StatsConfig,
    pool: Annotated[str, typer.Argument(help="Pool directory or URL (s3://, gs://).")],
) -> None:
    """Write reports/stats.json and reports/index.html for POOL: the funnel from candidates to export (per
    stage and per filter condition), download success and error reasons, histograms of every score column,
    language mix, caption lengths, image sizes, duplicate group sizes, the balancing head/tail curve, and
    image grids of samples just above and below each threshold of every applied filter spec.

    The HTML is one self-contained file (plots and thumbnails embedded): open it in any browser. Sections
    whose tables do not exist yet say so.
    """
    from curate.stats import run

    run(Pool(pool), section)
