"""Export: write a subset's samples as new webdataset shards (+ Parquet metadata) for trainers.

Entry point `run(pool, config)`; the `curate export` command and `curate run` both call it.
"""

from __future__ import annotations

from typing import Any

from curate import layout, runner
from curate.config import ExportConfig
from curate.errors import ConfigError
from curate.names import check_name
from curate.pool import Pool
from curate.progress import console
from curate.runner import finished_shards
from curate.stage import Pass, Stage, StageContext, fingerprint_of
from curate.stages.export.plan import ExportPlan, plan_export
from curate.stages.export.subset import Subset, resolve_subset
from curate.stages.export.writer import ExportSettings, export_shard, shard_outputs

__all__ = ["Export", "ExportPlan", "ExportSettings", "Subset", "export_dir", "plan_export", "resolve_subset", "run"]

STAGE = "export"
WRITE = "write"


def export_dir(name: str) -> str:
    return layout.export_dir(name)


class Export(Stage):
    """One pass, `write`: each input download shard writes the output shards the plan numbered for it.

    The pass's fingerprint is the plan's (subset content, input shards, samples_per_shard, shuffle,
    seed, images parquet), so a changed plan redoes every shard. Output shard numbers depend on the
    whole plan, so the shards of two plans must never share exports/<name>/: when no marker carries
    this plan's fingerprint, whatever exports/<name>/ holds (another plan's export, or an unfinished
    one) is removed before any shard runs; a resume of the same plan keeps its finished shards."""

    name = STAGE
    config_class = ExportConfig
    reads = ("shards", "subsets")
    writes = ("exports",)

    def key(self, config: ExportConfig) -> str:
        if not config.name:
            raise ConfigError("export: no export name (--name, or the subset's name)")
        return layout.stage_key(STAGE, config.name)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        config: ExportConfig = ctx.config
        pool = ctx.pool
        name = str(config.name)
        subset: Subset = ctx.options.get("subset") or resolve_subset(pool, str(config.subset))
        out = layout.export_dir(name)
        settings = ExportSettings(name=name, samples_per_shard=config.samples_per_shard,
                                  shuffle_buffer=config.shuffle_buffer, seed=config.seed,
                                  with_images_parquet=config.with_images_parquet)
        plan = plan_export(pool, subset.counts(), config.samples_per_shard)
        if not ctx.quiet:
            console.print(f"[export] {subset.source}: {plan.subset_rows:,} listed uids ({plan.subset_unique:,} "
                          f"unique), {plan.samples:,} samples from {len(plan.tasks)} download shards -> "
                          f"{pool.uri(out)}", markup=False)
        payloads = {sid: {"uids": t.uids, "counts": t.counts, "first_output": t.first_output,
                          "n_outputs": t.n_outputs} for sid, t in plan.tasks.items()}
        write = Pass(WRITE, export_shard, payloads, settings, fingerprint=plan.fingerprint(settings.model_dump()),
                     outputs=shard_outputs(settings))
        if not finished_shards(ctx, write, fingerprint_of(write.fingerprint)) and pool.listdir(out):
            ctx.say(f"{pool.uri(out)} holds another plan's export or an unfinished one; removing it to start "
                    "this plan afresh")
            pool.remove(layout.stage_markers(ctx.key), recursive=True)
            pool.remove(out, recursive=True)
        result = ctx.run_pass(write)
        counts = dict(result.totals.get("counts", {}))
        report = {
            "name": name,
            "subset": subset.source,
            "path": pool.uri(out),
            "subset_uids": plan.subset_rows,
            "subset_unique_uids": plan.subset_unique,
            "missing_uids": plan.missing,
            "missing_rows": plan.missing_rows + int(counts.get("missing_image_in_shard_rows", 0)),
            "samples_written": int(counts.get("written", 0)),
            "repeats_written": int(counts.get("written_repeats", 0)),
            "missing_image_in_shard": int(counts.get("missing_image_in_shard", 0)),
            "output_shards": sorted(n for n in pool.listdir(out) if n.endswith(".tar")),
            "input_shards": len(plan.tasks),
            "settings": settings.model_dump(),
        }
        # The export's own description, next to its shards (curate stats lists exports by it).
        pool.write_json(layout.export_report(name), report)
        if not ctx.quiet:
            missing = sum(plan.missing.values())
            detail = ", ".join(f"{k}: {v:,}" for k, v in sorted(plan.missing.items())) or "none"
            console.print(f"[export] wrote {report['samples_written']:,} samples in {len(report['output_shards'])} "
                          f"shards; {missing:,} uids missing ({detail})", markup=False)
        return {**report, "last_export": name}


def run(
    pool: Pool,
    config: ExportConfig,
    *,
    ray_address: str | None = None,
    rerun: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Export `config.subset` to exports/<name>/; returns the stage report (reports/export/<name>.json,
    with the export's own fields, also in exports/<name>/report.json).

    Resumable: input shards finished with the same plan are skipped; a changed plan (another subset,
    layout or pool) replaces the export; `rerun` redoes it from scratch.
    """
    if not config.subset:
        raise ConfigError("export: no subset given (--subset NAME|PATH, or export.subset in the pipeline YAML)")
    subset = resolve_subset(pool, config.subset)
    name = check_name(config.name or subset.name, "export: export name (exports/<name>/; --name sets it)")
    return runner.run(Export(), pool, config.model_copy(update={"name": name}), ray_address=ray_address,
                      rerun=rerun, quiet=quiet, subset=subset)
