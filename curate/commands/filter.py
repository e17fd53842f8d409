"""`curate filter`: apply a YAML filter spec to a pool, writing subsets/<name>/."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curate.cli import app
from curate.commands.common import ConfigOpt, PoolOpt, RayAddressOpt, RerunOpt, from_options


@app.command("filter")
def filter_command(
    pool: PoolOpt,
    spec: Annotated[
        Path | None,
        typer.Option("--spec", "-s", help="Filter spec YAML (filters/*.yaml; docs/spec-reference.md). "
                     "Default: filter.spec of --config."),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Subset name (subsets/NAME/); default: the spec's name.")
    ] = None,
    approximate: Annotated[
        bool,
        typer.Option("--approximate", help="Bounded-memory histogram cut-offs for top/bottom_fraction "
                     "(value error < 2^-7 relative; extra rows kept reported) instead of exact ones."),
    ] = False,
    config: ConfigOpt = None,
    ray_address: RayAddressOpt = None,
    rerun: RerunOpt = False,
) -> None:
    """Apply a filter spec to every download shard of a pool, on Ray.

    Pass 1 computes global cut-offs for top_fraction/bottom_fraction (exact by default); pass 2
    joins each shard's score tables on uid and evaluates the spec vectorised. Writes
    subsets/NAME/uids.parquet, uids.npy (DataComp's sorted u8,u8 format) and funnel.json, and
    prints the funnel: per condition, samples removed alone, in spec order, and only by it.
    Finished shards are skipped on a re-run unless the spec, its cut-offs or dedup tables changed.
    """
    from curate.config import FilterConfig, load_pipeline
    from curate.pool import Pool
    from curate.stages.filter import run

    section = FilterConfig()
    if config is not None:
        section = load_pipeline(config).filter or FilterConfig()
    updates: dict[str, object] = {}
    if spec is not None:
        updates["spec"] = str(spec)
    if name is not None:
        updates["name"] = name
    if approximate:
        updates["approximate"] = True
    section = from_options(FilterConfig, {**section.model_dump(), **updates}, "filter options")
    run(Pool(pool), section, ray_address=ray_address, rerun=rerun)
