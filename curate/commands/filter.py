"""`curate filter`: apply a YAML filter spec to a pool, writing subsets/<name>/."""

from __future__ import annotations

from curate.cli import app
from curate.commands.common import PoolOpt, RayAddressOpt, RerunOpt
from curate.commands.options import section_options
from curate.config import FilterConfig


@app.command("filter")
@section_options(FilterConfig, "filter", aliases={"spec": ("-s",)})
def filter_command(
    section: FilterConfig,
    pool: PoolOpt,
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
    from curate.pool import Pool
    from curate.stages.filter import run

    run(Pool(pool), section, ray_address=ray_address, rerun=rerun)
