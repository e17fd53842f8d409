"""The Ray Data actor that runs one model scorer; kept apart from the pipeline so workers import little."""

from __future__ import annotations

from curate.scorers.base import Batch, ScorerConfig, build_scorers


def limit_torch_threads(num_cpus: float) -> None:
    """Give torch as many threads as the actor reserved CPUs.

    Without this, torch sizes its pool to the whole machine and an actor fights the decode tasks
    (and other actors) for the same cores; on a 2-core machine that oversubscription costs more
    than the extra thread gains.
    """
    import torch

    threads = max(1, int(num_cpus))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


class ScorerActor:
    """Ray Data callable class: builds one model scorer and loads its model once per actor."""

    def __init__(self, config: ScorerConfig, all_configs: list[ScorerConfig], drop: tuple[str, ...] = ()) -> None:
        limit_torch_threads(config.num_cpus)
        peers = build_scorers(all_configs)
        self.scorer = next(s for s in peers if s.config == config)
        self.scorer.setup()
        self.drop = drop  # image columns no later scorer reads: not shipped on to the driver

    def __call__(self, batch: Batch) -> Batch:
        batch.update(self.scorer(batch))
        for column in self.drop:
            batch.pop(column, None)
        return batch
