"""`curate balance`: MetaCLIP balancing of a pool's captions over metadata entries."""

from __future__ import annotations

from curate.cli import app
from curate.commands.common import PoolOpt, RayAddressOpt, RerunOpt
from curate.commands.options import section_options
from curate.config import BalanceConfig


@app.command("balance")
@section_options(BalanceConfig, "balance", aliases={"metadata": ("-m",)},
                 off={"keep_unmatched": "--drop-unmatched", "lowercase": "--case-sensitive"},
                 exclusive=[("t", "tail_fraction")])
def balance_command(
    section: BalanceConfig,
    pool: PoolOpt,
    ray_address: RayAddressOpt = None,
    rerun: RerunOpt = False,
) -> None:
    """Balance a pool's captions over metadata entries, the MetaCLIP way, on Ray.

    Pass 1 matches every successful caption of the download shards (optionally only a subset's)
    against the metadata with MetaCLIP's substring rule (by default exactly MetaCLIP's, or MetaCLIP
    2's for a per-language folder; see --rule), using one Aho-Corasick automaton shared by all
    workers, and counts c_e per entry. Pass 2 keeps a sample with probability 1 − ∏(1 − min(1, t/c_e))
    over its entries, drawing hash(uid, seed), so the result does not depend on sharding or workers.
    Writes balanced/NAME/uids.npy (DataComp format), uids.parquet, entry_counts.parquet,
    samples/SHARD.parquet (uid → entry ids, keep probability) and report.json.
    Finished shards are skipped on a re-run unless metadata, subset, t or seed changed.
    """
    from curate.pool import Pool
    from curate.stages.balance import run

    run(Pool(pool), section, ray_address=ray_address, rerun=rerun)
