"""Score stage: run the configured scorers over every download shard (see docs/score.md).

Entry point for the CLI and `curate run`: `run(pool, config, ray_address=None, rerun=False)`.
"""

from curate.stages.score.pipeline import STAGE, run

__all__ = ["STAGE", "run"]
