"""Ray Train wrapper: the training loop in each TorchTrainer worker (DDP over gloo/nccl).

Every worker reads the same pair set and takes its rank's part of each global batch
(curate.dfn.loader.StepBatchSampler); the chief (rank 0) writes checkpoints and the final model,
so output_dir must be a filesystem that every node sees when training spans nodes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curate.dfn.config import DFNTrainConfig


def _train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    from curate.dfn.train import WorkerContext, run_training

    config = DFNTrainConfig.model_validate(loop_config["config"])
    context = ray.train.get_context()
    ctx = WorkerContext(
        rank=context.get_world_rank(),
        world_size=context.get_world_size(),
        device=ray.train.torch.get_device(),
        wrap_model=lambda m: ray.train.torch.prepare_model(m, move_to_device=False)
        if context.get_world_size() > 1 else m,
        report=lambda metrics: ray.train.report(metrics),
    )
    summary = run_training(config, ctx, stop_at_step=loop_config.get("stop_at_step"))
    # the full summary (loss curve, counts) reaches the driver through train_summary.json
    ray.train.report({k: v for k, v in summary.items() if k not in ("losses", "counts")} | {"final": True})


def run_ray_training(config: DFNTrainConfig, *, stop_at_step: int | None = None) -> dict[str, Any]:
    """Run the loop on Ray Train; returns the chief's summary (read back from output_dir)."""
    import json

    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from curate.runtime import ensure_ray

    ensure_ray(config.scaling.ray_address)
    scaling = ScalingConfig(num_workers=config.scaling.num_workers, use_gpu=config.scaling.use_gpu,
                            resources_per_worker={"CPU": config.scaling.cpus_per_worker,
                                                  **({"GPU": 1} if config.scaling.use_gpu else {})})
    output = Path(config.output_dir).resolve()
    summary_file = output / "train_summary.json"
    summary_file.unlink(missing_ok=True)  # the chief rewrites it when this run reaches the last step
    trainer = TorchTrainer(
        _train_loop_per_worker,
        train_loop_config={"config": config.model_dump(mode="json"), "stop_at_step": stop_at_step},
        scaling_config=scaling,
        run_config=RunConfig(name="train-dfn", storage_path=str(output / "ray_train")),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    if summary_file.exists():
        summary = json.loads(summary_file.read_text())
        summary["losses"] = summary.pop("loss_curve")
        return summary
    # stopped before the last step: the newest checkpoint says where
    from curate.dfn.checkpoint import CheckpointStore

    steps = CheckpointStore(output).steps()
    return {"finished": False, "target_steps": config.train.steps, "step": steps[-1] if steps else 0,
            "counts": {}, "world_size": config.scaling.num_workers}
