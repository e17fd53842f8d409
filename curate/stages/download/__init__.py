"""Download stage: candidates/*.parquet → shards/ (img2dataset webdataset layout), fast and safely.

Entry point `run(pool, config, ...)`, used by `curate download` and `curate run`. See docs/download.md.
"""

from __future__ import annotations

from typing import Any

from curate import layout, runner
from curate.config import DownloadConfig
from curate.counters import normalised
from curate.pool import Pool
from curate.progress import console
from curate.shards import shard_outputs
from curate.stage import Pass, Stage, StageContext
from curate.stages.download.addresses import parse_allow_list
from curate.stages.download.planning import candidate_files, check_plan, plan_shards
from curate.stages.download.shard import ERROR_MESSAGES_PER_SHARD, download_shard

__all__ = ["Download", "download_shard", "run"]

# Settings that change what a finished shard holds; the others (timeouts, threads, politeness)
# change only how it is fetched, and a change of them keeps finished shards.
OUTPUT_FIELDS = ("image_size", "resize_mode", "resize_only_if_bigger", "encode_format", "encode_quality",
                 "output_format", "samples_per_shard", "max_image_pixels", "max_image_bytes", "respect_optouts",
                 "user_agent_token")


class Download(Stage):
    """One pass, `fetch`: candidates (cut into shards of samples_per_shard rows) → shards/."""

    name = layout.DOWNLOAD_STAGE
    config_class = DownloadConfig
    reads = ("candidates",)
    writes = ("shards", "population")

    def run(self, ctx: StageContext) -> dict[str, Any]:
        config: DownloadConfig = ctx.config
        pool = ctx.pool
        parse_allow_list(config.allow_addresses)  # a bad entry fails now, not inside every task
        files = candidate_files(pool)
        shards = plan_shards(files, config.samples_per_shard)
        check_plan(pool, files, config.samples_per_shard, len(pool.marker_ids(layout.DOWNLOAD_MARKERS)))
        result = ctx.run_pass(Pass(
            layout.DOWNLOAD_PASS, download_shard, shards, config,
            fingerprint={k: getattr(config, k) for k in OUTPUT_FIELDS},
            shard_inputs=lambda _sid, segments: [[s.file, s.start, s.stop] for s in segments],
            outputs=shard_outputs(config.output_format),
        ), check=False)
        errors = result.totals.get("errors")
        if isinstance(errors, dict):
            # The runner sums the shards' capped error counts; the stage's total is capped the same
            # way (and re-keyed: shards finished by an older version kept hosts in their messages).
            ctx.passes[result.name].totals["errors"] = normalised(errors, ERROR_MESSAGES_PER_SHARD)
        samples = int(result.totals.get("samples", 0))
        successes = int(result.totals.get("successes", 0))
        rate = successes / samples if samples else 0.0
        kept = sorted(sid for sid in result.ran if "kept_earlier" in result.done.get(sid, {}))
        if not ctx.quiet:
            console.print(f"[download] success rate {rate:.1%} ({successes:,} of {samples:,} samples "
                          f"in {len(result.done)} shards)")
            if kept:
                fewer = sum(result.done[sid]["kept_earlier"]["successes_this_run"] for sid in kept)
                before = sum(result.done[sid]["kept_earlier"]["successes_kept"] for sid in kept)
                names = ", ".join(kept[:5]) + (", …" if len(kept) > 5 else "")
                console.print(f"[yellow][download] kept {len(kept)} earlier shard(s) ({names}): this run got "
                              f"{fewer:,} successful images where they hold {before:,}; pass --overwrite-worse "
                              f"(download.overwrite_worse) to replace them[/yellow]")
        extra = {"success_rate": round(rate, 6), "kept_earlier_shards": kept}
        ctx.fail_if_failed(extra)
        return extra


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
    return runner.run(Download(), pool, config, ray_address=ray_address, rerun=rerun, quiet=quiet)
