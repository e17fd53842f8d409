"""Score stage: run the configured scorers over every download shard (see docs/score.md).

Entry point for the CLI and `curate run`: `run(pool, config, ray_address=None, rerun=False)`; the
stage itself is `Score` (curate.stage's contract), one BatchPass that the runner executes.

`run` is imported lazily: Ray workers import this package to reach the decode function and the
scorer actor, and must not pay for the driver's imports (the pipeline config, Ray Data planning).
"""

from __future__ import annotations

from typing import Any

__all__ = ["STAGE", "Score", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from curate.stages.score import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
