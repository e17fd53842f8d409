"""`train_dfn` as a pipeline stage: `curate run` trains the DFN a later clip scorer loads by path.

Training resumes from its newest checkpoint, so a killed run continues where it stopped; a run whose
final model is already written for the configured number of steps is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from curate.config import TrainDfnConfig
from curate.dfn.config import load_dfn_config
from curate.pool import Pool
from curate.progress import console

STAGE = "train_dfn"


def run(pool: Pool, config: TrainDfnConfig, *, ray_address: str | None = None, rerun: bool = False,
        quiet: bool = False) -> dict[str, Any]:
    from curate.dfn import train_dfn

    dfn = load_dfn_config(config.config)
    if ray_address and dfn.scaling.backend == "ray" and not dfn.scaling.ray_address:
        dfn.scaling.ray_address = ray_address
    out = Path(dfn.output_dir)
    summary_path = out / "train_summary.json"
    if not rerun and (out / "model" / "open_clip_config.json").exists() and summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if summary.get("step") == dfn.train.steps:
            if not quiet:
                console.print(f"[train_dfn] {out / 'model'} already trained for {dfn.train.steps} steps; skipping")
            return _report(pool, summary, skipped=True)
    summary = train_dfn(dfn)
    return _report(pool, summary, skipped=False)


def _report(pool: Pool, summary: dict[str, Any], *, skipped: bool) -> dict[str, Any]:
    report = {k: v for k, v in summary.items() if k != "losses"}
    report.update({"stage": STAGE, "skipped_as_done": skipped, "shards_failed": {}})
    pool.write_report(STAGE, report)
    return report
