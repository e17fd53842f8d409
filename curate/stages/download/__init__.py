"""Download stage: candidates/*.parquet → shards/ (img2dataset webdataset layout), fast and safely.

Entry point `run(pool, config, ...)`, used by `curate download` and `curate run`. See docs/download.md.
"""

from __future__ import annotations

from typing import Any

from curate.config import DownloadConfig
from curate.pool import Pool
from curate.poollock import locked
from curate.progress import console
from curate.runner import run_stage
from curate.shards import DOWNLOAD_STAGE, shard_outputs
from curate.stages.download.addresses import parse_allow_list
from curate.stages.download.planning import candidate_files, check_plan, plan_shards
from curate.stages.download.shard import download_shard

__all__ = ["download_shard", "run"]


@locked("download")
def run(
    pool: Pool,
    config: DownloadConfig,
    *,
    ray_address: str | None = None,
    rerun: bool = False,
    allow_addresses: list[str] | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Download every candidate into shards; returns the stage report (raises StageFailed on failed shards)."""
    if allow_addresses:
        config = config.model_copy(update={"allow_addresses": [*config.allow_addresses, *allow_addresses]})
    parse_allow_list(config.allow_addresses)  # a bad entry fails now, not inside every task
    files = candidate_files(pool)
    shards = plan_shards(files, config.samples_per_shard)
    if rerun:
        pool.clear_stage(DOWNLOAD_STAGE)
    check_plan(pool, files, config.samples_per_shard, len(pool.done_shards(DOWNLOAD_STAGE)))
    result = run_stage(DOWNLOAD_STAGE, pool, download_shard, shards, config, num_cpus=1, max_retries=2,
                       ray_address=ray_address, quiet=quiet, outputs=shard_outputs(config.output_format))
    totals = result.report.get("totals", {})
    samples = int(totals.get("samples", 0))
    successes = int(totals.get("successes", 0))
    rate = successes / samples if samples else 0.0
    result.report["success_rate"] = round(rate, 6)
    kept = sorted(sid for sid in result.ran if "kept_earlier" in result.done.get(sid, {}))
    result.report["kept_earlier_shards"] = kept
    pool.write_report(DOWNLOAD_STAGE, result.report)
    if not quiet:
        console.print(f"[download] success rate {rate:.1%} ({successes:,} of {samples:,} samples "
                      f"in {result.report['shards_done']} shards)")
        if kept:
            fewer = sum(result.done[sid]["kept_earlier"]["successes_this_run"] for sid in kept)
            before = sum(result.done[sid]["kept_earlier"]["successes_kept"] for sid in kept)
            names = ", ".join(kept[:5]) + (", …" if len(kept) > 5 else "")
            console.print(f"[yellow][download] kept {len(kept)} earlier shard(s) ({names}): this run got "
                          f"{fewer:,} successful images where they hold {before:,}; pass --overwrite-worse "
                          f"(download.overwrite_worse) to replace them[/yellow]")
    result.raise_for_failures()
    return result.report
