"""Train and evaluate Data Filtering Networks: CLIP models trained on a small high-quality set
whose image-text similarity then filters a pool (Fang et al., "Data Filtering Networks").

Entry points: `train_dfn(config)` (local process or Ray Train, per config.scaling.backend) and
`curate.dfn.evaluate.evaluate_filter`.
"""

from __future__ import annotations

from typing import Any

from curate.dfn.config import DFNTrainConfig, load_dfn_config
from curate.extras import require


def train_dfn(config: DFNTrainConfig, *, local: bool = False, stop_at_step: int | None = None) -> dict[str, Any]:
    """Train (or resume) a DFN; returns the run summary. `local` forces one process without Ray."""
    require_models("training a DFN")
    if config.scaling.backend == "ray" and not local:
        from curate.dfn.distributed import run_ray_training

        return run_ray_training(config, stop_at_step=stop_at_step)
    from curate.dfn.train import WorkerContext, run_training

    ctx = None
    if config.scaling.use_gpu:
        import torch

        if not torch.cuda.is_available():
            from curate.errors import ConfigError

            raise ConfigError("scaling.use_gpu: true, but torch sees no GPU here")
        ctx = WorkerContext(device=torch.device("cuda", torch.cuda.current_device()))
    return run_training(config, ctx, stop_at_step=stop_at_step)


def require_models(purpose: str) -> None:
    """A ConfigError naming the `models` extra when torch or open_clip is not installed."""
    for module in ("torch", "open_clip"):
        require(module, "models", purpose)


__all__ = ["DFNTrainConfig", "load_dfn_config", "require_models", "train_dfn"]
