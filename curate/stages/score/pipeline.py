"""The score stage on Ray Data: decode tasks on CPU → one actor pool per model scorer → per-shard writes.

    shard ids ─map_batches(read_and_decode, CPU tasks)─▶ decoded views + CPU scorer columns
              ─map_batches(ScorerActor[clip b32], ActorPoolStrategy(size), batch_size, num_gpus)─▶ …
              ─map_batches(ScorerActor[nsfw], …)─▶ driver: rows gathered per shard; a shard whose rows are
              all in is written (scores/<scorer>/<shard>.parquet, embeddings/<scorer>/<shard>.parquet)
              and marked done (_done/score/<shard>.json with its counts).

Decoding streams into inference, so CPU decode overlaps GPU work; each model loads once per actor.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from curate.config import ScoreConfig
from curate.errors import ConfigError, PoolError, StageFailed
from curate.pool import Pool
from curate.poollock import locked
from curate.progress import ShardProgress, console, print_counts_table
from curate.runner import merge_stats, verified_done
from curate.scorers.base import SHARD, Batch, ImageView, Scorer, build_scorers
from curate.shards import list_shards, read_shard_table
from curate.stages.score.actor import ScorerActor
from curate.stages.score.device_decode import IMAGE_BYTES
from curate.stages.score.read import SHARD_ERROR, read_and_decode
from curate.stages.score.write import ShardResult, write_shard

STAGE = "score"


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


def shards_to_score(pool: Pool, shards: list[str], names: list[str], quiet: bool = True) -> list[str]:
    """Shards without a marker, or whose marker lacks one of the configured scorers (config grew).

    A damaged marker, or one whose scores/<scorer>/<shard>.parquet is gone, is dropped (redone)."""
    def outputs(sid: str, _payload: object, stats: Mapping[str, Any]) -> list[str]:
        return [f"scores/{name}/{sid}.parquet" for name in names if name in stats.get("scorers", [])]

    done = verified_done(STAGE, pool, dict.fromkeys(shards), outputs, quiet)
    return [s for s in shards if s not in done or not set(names) <= set(done[s].get("scorers", []))]


def _resolve_resources(scorers: list[Scorer]) -> dict[str, float]:
    import ray

    gpus = float(ray.cluster_resources().get("GPU", 0))
    out = {}
    for s in scorers:
        want = s.config.num_gpus
        out[s.name] = (1.0 if gpus and s.uses_model else 0.0) if want == "auto" else float(want)
    return out


@locked("score")
def run(pool: Pool, config: ScoreConfig, *, ray_address: str | None = None, rerun: bool = False,
        quiet: bool = False) -> dict[str, Any]:
    """Score every download shard with the configured scorers; returns reports/score.json's content."""
    from curate.runtime import ensure_ray

    if not config.scorers:
        raise PoolError("score: no scorers configured (add `score: scorers: [...]` to the pipeline YAML)")
    shards = list_shards(pool)
    if not shards:
        raise PoolError(f"score: {pool.url} has no finished download shards (run `curate download` first)")
    if rerun:
        pool.clear_stage(STAGE)
    scorers = order_scorers(build_scorers(list(config.scorers)))
    names = [s.name for s in scorers]
    todo = shards_to_score(pool, shards, names, quiet)
    progress = ShardProgress(STAGE, len(shards), skipped=len(shards) - len(todo))
    progress.enabled = not quiet
    started = time.time()
    phases: dict[str, float] = {}
    failed: dict[str, str] = {}
    # A missing model fails with one error before any output is written. Checking imports
    # torch/open_clip (seconds), so it runs on a thread while Ray starts and the actors load their
    # models (which import the same libraries in their own processes, on the other cores).
    preflight = _Preflight(scorers)
    if todo:
        preflight.start()
        ray_started = time.time()
        ensure_ray(ray_address)
        phases["ray_start_s"] = time.time() - ray_started
        _execute(pool, config, scorers, todo, progress, failed, phases, preflight)
        phases["preflight_s"] = preflight.seconds
    else:
        preflight.wait()
        if not quiet:
            console.print(f"[{STAGE}] all {len(shards)} shards already done; nothing to run")

    done = {sid: st for sid, st in pool.done_shards(STAGE).items() if sid in set(shards)}
    totals = merge_stats(list(done.values()))
    report = {
        "stage": STAGE, "scorers": names, "shards_total": len(shards), "shards_done": len(done),
        "shards_failed": failed, "shards_run_now": len(todo) - len(failed),
        "shards_skipped_as_done": len(shards) - len(todo), "wall_seconds_this_run": round(time.time() - started, 3),
        "phase_seconds": {k: round(v, 3) for k, v in phases.items()}, "totals": totals,
    }
    pool.write_report(STAGE, report)
    if not quiet:
        if totals.get("counts"):
            print_counts_table(f"{STAGE}: images over {len(done)} shards", totals["counts"], totals.get("samples"))
        if totals.get("notes"):
            print_counts_table(f"{STAGE}: repaired images (scored)", totals["notes"])
        for sid, err in sorted(failed.items()):
            console.print(f"[red][{STAGE}] shard {sid} FAILED: {err}[/red]")
    if failed:
        raise StageFailed(STAGE, failed)
    return report


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


def _execute(pool: Pool, config: ScoreConfig, scorers: list[Scorer], todo: list[str], progress: ShardProgress,
             failed: dict[str, str], phases: dict[str, float], preflight: _Preflight) -> None:
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # curate prints its own shard progress
    ctx.execution_options.preserve_order = False
    all_configs = [s.config for s in scorers]
    cpu = [s for s in scorers if not s.uses_model]
    models = [s for s in scorers if s.uses_model]
    gpus = _resolve_resources(scorers)
    _check_cpu_budget(config, models, float(ray.cluster_resources().get("CPU", 0)))
    device_views = needed_views(models) if config.jpeg_decode_on == "model" else []
    expected: dict[str, int] = {}
    for sid in todo:
        try:
            expected[sid] = _expected_samples(pool, sid)
        except PoolError as exc:  # a damaged or missing shard table fails that shard, not the stage
            failed[sid] = str(exc)[:500]
            progress.update(failed=True)
    todo = [sid for sid in todo if sid in expected]
    pending = {sid: ShardResult(sid, expected[sid]) for sid in todo}
    if not todo:
        return

    ds = ray.data.from_items([{SHARD: sid} for sid in todo], override_num_blocks=len(todo))
    ds = ds.map_batches(
        # The memory reservation also keeps Ray Data from fusing decoding into the first model actor,
        # so shards decode in parallel tasks while actors run inference.
        read_and_decode, batch_size=1, batch_format="numpy", num_cpus=config.decode_num_cpus,
        memory=config.decode_memory_mb * 1024 * 1024,
        fn_kwargs={"pool": pool, "views": needed_views(scorers), "max_pixels": config.max_image_pixels,
                   "rows_per_batch": config.decode_batch_size, "cpu_configs": [s.config for s in cpu],
                   "all_configs": all_configs, "device_views": device_views,
                   "keep": _image_columns(needed_views(models), device_views)},
    )
    for k, s in enumerate(models):
        ds = ds.map_batches(
            ScorerActor, fn_constructor_args=(s.config, all_configs, _unneeded_after(models, k, device_views)),
            batch_size=s.config.batch_size,
            batch_format="numpy", compute=ActorPoolStrategy(size=s.config.concurrency),
            num_gpus=gpus[s.name] or None, num_cpus=s.config.num_cpus,
        )

    def finish(result: ShardResult) -> None:
        try:
            stats = write_shard(pool, result, scorers)
        except Exception as exc:
            failed[result.shard] = f"writing outputs: {type(exc).__name__}: {exc}"[:500]
            progress.update(failed=True)
            return
        pool.mark_done(STAGE, result.shard, stats)
        progress.update(int(stats["samples"]))

    streaming = time.time()
    first_batch: float | None = None
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            if first_batch is None:
                # Start-up: Ray Data planning, worker and actor start, model load, first decoded block.
                first_batch = time.time()
                phases["until_first_result_s"] = first_batch - streaming
                preflight.wait()  # nothing is written unless every model checked out
            for sid, part in _split_by_shard(batch):
                result = pending.get(sid)
                if result is None:
                    continue
                error = part[SHARD_ERROR][0] if len(part[SHARD_ERROR]) and any(part[SHARD_ERROR]) else ""
                if error:
                    failed[sid] = str(next(e for e in part[SHARD_ERROR] if e))
                    progress.update(failed=True)
                    pending.pop(sid)
                    continue
                result.add(part)
                if result.received >= result.expected:
                    finish(pending.pop(sid))
    except Exception as exc:
        preflight.wait()  # a missing model is reported as such, not as an actor crash
        message = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        for sid in list(pending):
            failed[sid] = message
            pending.pop(sid)
    preflight.wait()
    # Empty shards, and shards whose tar held fewer samples than their parquet lists: written, with
    # the gap counted.
    for result in pending.values():
        finish(result)
    if first_batch is not None:
        phases["streaming_s"] = time.time() - first_batch


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


def _split_by_shard(batch: Batch) -> list[tuple[str, Batch]]:
    shard_col = batch[SHARD]
    ids = np.unique(shard_col.astype(str))
    if len(ids) == 1:
        return [(str(ids[0]), batch)]
    parts = []
    for sid in ids:
        mask = shard_col.astype(str) == sid
        parts.append((str(sid), {k: v[mask] for k, v in batch.items()}))
    return parts

