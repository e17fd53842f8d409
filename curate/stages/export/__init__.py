"""Export: write a subset's samples as new webdataset shards (+ Parquet metadata) for trainers.

Entry point `run(pool, config)`; the `curate export` command and `curate run` both call it.
"""

from __future__ import annotations

from typing import Any

from curate.config import ExportConfig
from curate.errors import ConfigError
from curate.names import check_name
from curate.pool import Pool
from curate.poollock import locked
from curate.progress import console
from curate.runner import run_stage
from curate.stages.export.plan import ExportPlan, plan_export
from curate.stages.export.subset import Subset, resolve_subset
from curate.stages.export.writer import ExportSettings, export_shard

__all__ = ["ExportPlan", "ExportSettings", "Subset", "export_dir", "plan_export", "resolve_subset", "run"]

EXPORTS_DIR = "exports"


def export_dir(name: str) -> str:
    return f"{EXPORTS_DIR}/{name}"


@locked("export")
def run(
    pool: Pool,
    config: ExportConfig,
    *,
    ray_address: str | None = None,
    rerun: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Export `config.subset` to exports/<name>/; returns the export report (also exports/<name>/report.json).

    Resumable: input shards whose `_done/export/<name>/` marker exists are skipped. A rerun with a
    different subset or layout into an existing export is refused unless `rerun` is set, which
    clears the old export first.
    """
    if not config.subset:
        raise ConfigError("export: no subset given (--subset NAME|PATH, or export.subset in the pipeline YAML)")
    subset = resolve_subset(pool, config.subset)
    name = check_name(config.name or subset.name, "export: export name (exports/<name>/; --name sets it)")
    out = export_dir(name)
    stage = f"export/{name}"
    settings = ExportSettings(out_dir=out, samples_per_shard=config.samples_per_shard,
                              shuffle_buffer=config.shuffle_buffer, seed=config.seed,
                              with_images_parquet=config.with_images_parquet)
    plan = plan_export(pool, subset.counts(), config.samples_per_shard)
    fingerprint = plan.fingerprint(settings.model_dump())
    plan_rel = f"{out}/plan.json"
    previous = pool.read_json(plan_rel).get("fingerprint") if pool.exists(plan_rel) else None
    if rerun or (previous not in (None, fingerprint) and not pool.done_shards(stage)):
        # Asked to redo, or the stage's markers were cleared (`curate run --redo-changed`): start clean.
        pool.remove(out, recursive=True)
        pool.clear_stage(stage)
    elif previous not in (None, fingerprint):
        raise ConfigError(
            f"export: {pool.uri(out)} holds an export of a different subset or layout; "
            "pass --rerun to replace it or --name to export elsewhere"
        )
    elif previous is None and pool.done_shards(stage):
        pool.clear_stage(stage)  # markers without a plan belong to nothing we can trust
    pool.write_json(plan_rel, {"fingerprint": fingerprint, "subset": subset.source, "settings": settings.model_dump(),
                               "output_shards_planned": plan.output_shards})
    if not quiet:
        console.print(f"\\[export] {subset.source}: {plan.subset_rows:,} listed uids ({plan.subset_unique:,} unique), "
                      f"{plan.samples:,} samples from {len(plan.tasks)} download shards -> {pool.uri(out)}")
    payloads = {sid: {"uids": t.uids, "counts": t.counts, "first_output": t.first_output,
                      "n_outputs": t.n_outputs} for sid, t in plan.tasks.items()}
    result = run_stage(stage, pool, export_shard, payloads, settings, ray_address=ray_address, quiet=quiet)
    result.raise_for_failures()
    totals = result.report.get("totals", {})
    counts = dict(totals.get("counts", {}))
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
    pool.write_json(f"{out}/report.json", report)
    # The pipeline runner checks reports/export.json for the stage as a whole.
    pool.write_report("export", {"stage": "export", "shards_failed": {}, "last_export": name, **report})
    if not quiet:
        missing = sum(plan.missing.values())
        detail = ", ".join(f"{k}: {v:,}" for k, v in sorted(plan.missing.items())) or "none"
        console.print(f"\\[export] wrote {report['samples_written']:,} samples in {len(report['output_shards'])} "
                      f"shards; {missing:,} uids missing ({detail})")
    return report
