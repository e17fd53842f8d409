"""Pool statistics: reports/stats.json and a self-contained reports/index.html.

`build_stats(pool, config)` computes every section from the tables that exist; `write_report`
adds the threshold image grids and writes both files. `curate stats POOL` calls write_report.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from curate import layout, runner
from curate.config import StatsConfig
from curate.errors import PoolError
from curate.pool import Pool
from curate.progress import console
from curate.stage import Stage, StageContext
from curate.stats import collect
from curate.stats.grids import attach_thumbnails, near_cut, threshold_conditions
from curate.stats.html import render_html
from curate.stats.tables import PoolTables, load_pool_tables

__all__ = ["build_stats", "load_pool_tables", "run", "threshold_grids", "write_report"]


def build_stats(pool: Pool, config: StatsConfig, tables: PoolTables | None = None) -> dict[str, Any]:
    tables = tables or load_pool_tables(pool, config.max_rows, config.seed)
    subsets = collect.subsets_info(pool)
    balanced = collect.balanced_info(pool)
    exports = collect.exports_info(pool)
    return {
        "pool": pool.url,
        "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "funnel": collect.funnel_section(pool, tables, subsets, balanced, exports),
        "download": collect.download_section(pool, tables, config),
        "scores": collect.scores_section(tables, config),
        "language": collect.language_section(tables),
        "captions": collect.caption_section(tables, config),
        "image_sizes": collect.image_size_section(tables, config),
        "dedup": collect.dedup_section(pool),
        "subsets": subsets,
        "balanced": balanced,
        "exports": exports,
        "evals": collect.evals_info(pool),
        # Written by the demo (curate.demo.planted): which planted problems each signal caught.
        "planted": pool.read_json(layout.PLANTED_JSON) if pool.exists(layout.PLANTED_JSON) else None,
    }


def threshold_grids(pool: Pool, stats: dict[str, Any], tables: PoolTables, config: StatsConfig) -> list[dict[str, Any]]:
    grids = []
    for name, info in stats["subsets"].items():
        for cut in threshold_conditions(info.get("spec"), info.get("funnel")):
            around = near_cut(tables, cut, config.grid_samples)
            if around is not None:
                grids.append({"subset": name, **cut, **around})
    attach_thumbnails(pool, grids, config.thumbnail_size)
    return grids


def write_report(pool: Pool, config: StatsConfig | None = None, *, quiet: bool = False) -> dict[str, Any]:
    """Write reports/stats.json and reports/index.html; returns the stats."""
    config = config or StatsConfig()
    if not pool.exists(""):
        raise PoolError(f"stats: pool {pool.url} does not exist")
    if not quiet:
        console.print(f"\\[stats] reading tables of {pool.url}")
    tables = load_pool_tables(pool, config.max_rows, config.seed, progress=not quiet)
    stats = build_stats(pool, config, tables)
    grids = threshold_grids(pool, stats, tables, config)
    stats["threshold_grids"] = [{k: ([{f: i[f] for f in ("uid", "caption", "score")} for i in v]
                                     if k in ("kept", "removed") else v) for k, v in g.items()} for g in grids]
    pool.write_json(layout.STATS_JSON, stats)
    pool.write_bytes(layout.STATS_HTML, render_html(stats, grids).encode("utf-8"))
    if not quiet:
        sections = ("download", "scores", "language", "captions", "image_sizes", "dedup")
        shown = [s for s in sections if stats[s]["present"]]
        missing = [s for s in sections if not stats[s]["present"]]
        console.print(f"\\[stats] sections: {', '.join(shown) or 'none'}; absent: {', '.join(missing) or 'none'}; "
                      f"{len(stats['subsets'])} subsets, {len(grids)} threshold grids, {len(stats['balanced'])} "
                      f"balanced sets, {len(stats['exports'])} exports")
        console.print(f"\\[stats] wrote {pool.uri(layout.STATS_JSON)} and {pool.uri(layout.STATS_HTML)}")
    return stats


class Stats(Stage):
    """Driver-only: reads the pool's tables, writes reports/stats.json and reports/index.html.

    No pass and no markers: it always recomputes (stats are cheap and must reflect the pool now)."""

    name = "stats"
    config_class = StatsConfig
    reads = ()  # every section says when its table is absent
    writes = ("report",)

    def __init__(self) -> None:
        self.stats: dict[str, Any] = {}

    def run(self, ctx: StageContext) -> dict[str, Any]:
        self.stats = write_report(ctx.pool, ctx.config, quiet=ctx.quiet)
        return {"html": ctx.pool.uri(layout.STATS_HTML), "json": ctx.pool.uri(layout.STATS_JSON)}


def run(pool: Pool, config: StatsConfig | None = None, *, ray_address: str | None = None, rerun: bool = False,
        quiet: bool = False) -> dict[str, Any]:
    """Stage entry point for `curate stats` and `curate run`; returns the stats (the report names the files)."""
    if not pool.exists(""):  # before the runner's lock would create it
        raise PoolError(f"stats: pool {pool.url} does not exist")
    stage = Stats()
    runner.run(stage, pool, config or StatsConfig(), ray_address=ray_address, rerun=rerun, quiet=quiet)
    return stage.stats
