"""`train_dfn` as a pipeline stage: `curate run` trains the DFN a later clip scorer loads by path.

One pass, `train`, over one pseudo-shard (the model). The runner's rule decides whether it runs: it
is done when its marker carries the fingerprint of the train-dfn config and the model directory it
names still exists. Inside the pass, training resumes from its newest checkpoint, so a killed run
continues where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curate import runner
from curate.config import TrainDfnConfig
from curate.dfn.config import DFNTrainConfig, load_dfn_config
from curate.pool import Pool
from curate.stage import Pass, Resources, Stage, StageContext

STAGE = "train_dfn"
MODEL = "model"


def train_model(_pool: Pool, _shard: str, _payload: Any, dfn: DFNTrainConfig) -> dict[str, Any]:
    from curate.dfn import train_dfn

    summary = train_dfn(dfn)
    return {k: v for k, v in summary.items() if k != "losses"}


class TrainDfn(Stage):
    name = STAGE
    config_class = TrainDfnConfig
    reads = ()  # its training data is named in its own config, in or outside the pool
    writes = ("dfn_model",)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        dfn = load_dfn_config(ctx.config.config)
        if ctx.ray_address and dfn.scaling.backend == "ray" and not dfn.scaling.ray_address:
            dfn.scaling.ray_address = ctx.ray_address
        model_config = str(Path(dfn.output_dir).resolve() / "model" / "open_clip_config.json")
        result = ctx.run_pass(Pass(
            "train", train_model, {MODEL: None}, dfn,
            # Where the training cluster is does not change the model; everything else may.
            fingerprint=dfn.model_dump(mode="json", exclude={"scaling": {"ray_address"}}),
            outputs=lambda _sid, _payload, _stats: [model_config],
            resources=Resources(max_retries=0),
            in_driver=True,  # training starts its own Ray Train or torch workers
        ))
        summary = dict(result.done.get(MODEL, {}))
        summary["skipped_as_done"] = not result.ran
        return summary


def run(pool: Pool, config: TrainDfnConfig, *, ray_address: str | None = None, rerun: bool = False,
        quiet: bool = False) -> dict[str, Any]:
    return runner.run(TrainDfn(), pool, config, ray_address=ray_address, rerun=rerun, quiet=quiet)
