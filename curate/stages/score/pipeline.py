"""The score stage: one BatchPass, `score`, that the runner streams through Ray Data (curate/runner_data.py).

    shard ids ─read_and_decode (CPU tasks)─▶ decoded views + CPU scorer columns
              ─ScorerActor[clip b32] (actor pool: concurrency, batch_size, num_gpus)─▶ …
              ─ScorerActor[nsfw]─▶ driver: a shard whose rows are all in is written by `write_shard`
              (scores/<scorer>/<shard>.parquet, embeddings/<scorer>/<shard>.parquet), then the runner
              writes its marker (_done/score/score/<shard>.json: counts and the pass's fingerprint).

Decoding streams into inference, so CPU decode overlaps GPU work; each model loads once per actor.
What stays here is the stage's own driver work: scorer order, the model checks on a thread, the
CPU budget of the actor pools, phase timings and the repaired-images table.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from curate import layout, runner
from curate.config import ScoreConfig
from curate.errors import ConfigError, PoolError
from curate.pool import Pool
from curate.progress import print_counts_table
from curate.scorers.base import SHARD, Batch, ImageView, Scorer, build_scorers
from curate.shards import list_shards, read_shard_table
from curate.stage import ActorStep, BatchPass, Stage, StageContext, TaskStep
from curate.stages.score.actor import ScorerActor
from curate.stages.score.device_decode import IMAGE_BYTES
from curate.stages.score.read import SHARD_ERROR, read_and_decode
from curate.stages.score.write import write_shard

STAGE = layout.SCORE_STAGE

# Scorer settings that change how a scorer runs, not what it writes: a change keeps finished shards.
RUN_ONLY_FIELDS = {"batch_size", "num_gpus", "num_cpus", "concurrency", "cache_dir"}


def order_scorers(scorers: list[Scorer]) -> list[Scorer]:
    """Scorers sorted so each runs after those it `requires` (stable otherwise)."""
    by_name = {s.name: s for s in scorers}
    done: list[Scorer] = []
    seen: set[str] = set()

    def visit(s: Scorer, stack: tuple[str, ...]) -> None:
        if s.name in seen:
            return
        if s.name in stack:
            raise PoolError(f"score: scorers require each other in a cycle: {' -> '.join((*stack, s.name))}")
        for dep in s.requires():
            if dep not in by_name:
                raise PoolError(f"score: scorer {s.name!r} requires {dep!r}, which is not configured")
            visit(by_name[dep], (*stack, s.name))
        seen.add(s.name)
        done.append(s)

    for s in scorers:
        visit(s, ())
    return done


def needed_views(scorers: list[Scorer]) -> list[ImageView]:
    return sorted({v for s in scorers for v in s.views()}, key=lambda v: (v.column))


class Score(Stage):
    """One pass, `score`: every finished download shard through every configured scorer."""

    name = STAGE
    config_class = ScoreConfig
    reads = ("shards",)
    writes = ("scores", "embeddings")

    def run(self, ctx: StageContext) -> dict[str, Any]:
        config: ScoreConfig = ctx.config
        pool = ctx.pool
        if not config.scorers:
            raise PoolError("score: no scorers configured (add `score: scorers: [...]` to the pipeline YAML)")
        shards = list_shards(pool)
        if not shards:
            raise PoolError(f"score: {pool.url} has no finished download shards (run `curate download` first)")
        scorers = order_scorers(build_scorers(list(config.scorers)))
        # A missing model fails with one error before any output is written. Checking imports
        # torch/open_clip (seconds), so it runs on a thread while Ray starts and the actors load their
        # models (which import the same libraries in their own processes, on the other cores).
        preflight = _Preflight(scorers)
        preflight.start()
        try:
            score = score_pass(pool, config, scorers, shards, preflight)
        except Exception:
            preflight.wait()  # a missing model is reported as such
            raise
        result = ctx.run_pass(score, check=False)
        preflight.wait()  # also when every shard was done: the config still names its models
        phases = {**result.timings, "preflight_s": preflight.seconds}
        notes = result.totals.get("notes")
        if notes and not ctx.quiet:
            print_counts_table(f"{STAGE}: repaired images (scored)", notes)
        extra = {"scorers": [s.name for s in scorers],
                 "phase_seconds": {k: round(v, 3) for k, v in phases.items()}}
        ctx.fail_if_failed(extra)
        return extra


def score_pass(pool: Pool, config: ScoreConfig, scorers: list[Scorer], shards: list[str],
               preflight: _Preflight) -> BatchPass:
    """The stage's pass: decode tasks, one actor pool per model scorer, `write_shard` on the driver.

    Its fingerprint holds what the outputs depend on: every scorer's config (but RUN_ONLY_FIELDS),
    max_image_pixels and jpeg_decode_on, so adding, removing or changing a scorer redoes every
    shard. A shard's own input is its download marker: a shard downloaded again is scored again."""
    all_configs = [s.config for s in scorers]
    cpu = [s for s in scorers if not s.uses_model]
    models = [s for s in scorers if s.uses_model]
    device_views = needed_views(models) if config.jpeg_decode_on == "model" else []
    steps: list[TaskStep | ActorStep] = [TaskStep(
        read_and_decode,
        {"pool": pool, "views": needed_views(scorers), "max_pixels": config.max_image_pixels,
         "rows_per_batch": config.decode_batch_size, "cpu_configs": [s.config for s in cpu],
         "all_configs": all_configs, "device_views": device_views,
         "keep": _image_columns(needed_views(models), device_views)},
        # The memory reservation also keeps Ray Data from fusing decoding into the first model actor,
        # so shards decode in parallel tasks while actors run inference.
        num_cpus=config.decode_num_cpus, memory_mb=config.decode_memory_mb)]
    for k, s in enumerate(models):
        steps.append(ActorStep(ScorerActor, (s.config, all_configs, _unneeded_after(models, k, device_views)),
                               concurrency=s.config.concurrency, batch_size=s.config.batch_size,
                               num_cpus=s.config.num_cpus, num_gpus=s.config.num_gpus))
    expected: dict[str, int] = {}

    def count(pool: Pool, shard_id: str) -> int:
        expected[shard_id] = _expected_samples(pool, shard_id)
        return expected[shard_id]

    def finish(pool: Pool, shard_id: str, rows: Batch) -> dict[str, Any]:
        return write_shard(pool, shard_id, expected[shard_id], rows, scorers)

    def outputs(shard_id: str, _payload: object, _stats: Mapping[str, Any]) -> list[str]:
        files = [layout.scores_file(s.name, shard_id) for s in scorers]
        return files + [layout.embeddings_file(s.name, shard_id) for s in scorers if s.embedding_dims()]

    downloads = pool.read_marker_dir(layout.DOWNLOAD_MARKERS)[0]
    return BatchPass(
        layout.SCORE_PASS, dict.fromkeys(shards), steps, count, finish,
        fingerprint={"scorers": sorted((s.config.model_dump(mode="json", exclude=RUN_ONLY_FIELDS) for s in scorers),
                                       key=lambda c: c["name"]),
                     "max_image_pixels": config.max_image_pixels, "jpeg_decode_on": config.jpeg_decode_on},
        shard_inputs=lambda shard_id, _payload: downloads.get(shard_id),
        outputs=outputs, shard_column=SHARD, error_column=SHARD_ERROR,
        check_cluster=lambda cluster: _check_cpu_budget(config, models, float(cluster.get("CPU", 0))),
        ready=preflight.wait,  # nothing is written unless every model checked out
    )


def run(pool: Pool, config: ScoreConfig, *, ray_address: str | None = None, rerun: bool = False,
        quiet: bool = False) -> dict[str, Any]:
    """Score every download shard with the configured scorers; returns reports/score.json's content
    (raises StageFailed, after writing it, when shards failed)."""
    return runner.run(Score(), pool, config, ray_address=ray_address, rerun=rerun, quiet=quiet)


class _Preflight:
    """Every scorer's preflight (and model description, which `views()` needs), optionally on a thread."""

    def __init__(self, scorers: list[Scorer]) -> None:
        self.scorers = scorers
        self.error: BaseException | None = None
        self.seconds = 0.0
        self._thread: threading.Thread | None = None

    def _check(self) -> None:
        started = time.time()
        try:
            for s in self.scorers:
                s.preflight()
                s.views()
        except BaseException as exc:  # re-raised on the caller's thread by wait()
            self.error = exc
        self.seconds = time.time() - started

    def start(self) -> None:
        self._thread = threading.Thread(target=self._check, name="score-preflight", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Finish the checks (inline if never started) and raise the first error."""
        if self._thread is None:
            self._check()
        else:
            self._thread.join()
        if self.error is not None:
            raise self.error


def _image_columns(views: list[ImageView], device_views: list[ImageView]) -> list[str]:
    """Batch columns that carry `views` (and the JPEG bytes, when actors decode them)."""
    return [v.column for v in views] + ([IMAGE_BYTES] if device_views else [])


def _unneeded_after(models: list[Scorer], k: int, device_views: list[ImageView]) -> tuple[str, ...]:
    """Image columns the k-th model scorer's actor may drop: no later model scorer reads them.

    Decoded views are the bulk of a batch (150 KB per image at 224 px); without this they would
    travel on to the driver and sit there until their shard is complete."""
    later = needed_views(models[k + 1:])
    mine = _image_columns(needed_views(models[: k + 1]), device_views)
    keep = set(_image_columns(later, device_views if later else []))
    return tuple(c for c in mine if c not in keep)


def _check_cpu_budget(config: ScoreConfig, models: list[Scorer], cluster_cpus: float) -> None:
    """Actor pools hold their CPUs for the whole run; if decoding cannot get one too, Ray Data waits forever."""
    reserved = sum(s.config.num_cpus * s.config.concurrency for s in models)
    if reserved + config.decode_num_cpus > cluster_cpus:
        raise ConfigError(
            f"score: model scorers reserve {reserved:g} CPUs and a decode task needs {config.decode_num_cpus:g}, "
            f"but the Ray cluster has {cluster_cpus:g}; lower num_cpus/concurrency of the scorers"
        )


def _expected_samples(pool: Pool, shard_id: str) -> int:
    import pyarrow.compute as pc

    table = read_shard_table(pool, shard_id, columns=["status"])
    return int(pc.sum(pc.equal(table["status"], "success")).as_py() or 0)

