"""The runner's executor for a BatchPass (curate.stage): shards streamed through map steps on Ray Data.

    shard ids ─map_batches(reader TaskStep: CPU tasks, one shard id per call)─▶ rows
              ─map_batches(ActorStep: ActorPoolStrategy(concurrency), batch_size, num_gpus)─▶ …
              ─iter_batches─▶ driver: rows grouped by the shard column; a shard whose rows are all
              in is handed to `finish` (its outputs), then its marker is written (fingerprint, last)

One dataset carries every shard, so actors start and load their model once and CPU tasks keep
feeding them. A row whose error column is set fails its shard with that text; an exception out of
the stream fails every shard still open. `run_pass` (curate/runner.py) does the rest for both kinds
of pass: the resume rule, progress, the failure summary and the PassReport.

With CURATE_EXECUTOR=local the same steps run in this process, one shard after another: each class
step is constructed once, and a batch larger than a step's batch_size is cut to it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from curate.runner import ShardError, _MarkedShard
from curate.stage import ActorStep, Batch, BatchPass, StageContext, TaskStep


def execute_batches(ctx: StageContext, p: BatchPass, label: str, markers: str, todo: Mapping[str, str | None],
                    finished: Callable[[str, Any], None], timings: dict[str, float]) -> None:
    """Run the shards of `todo` (shard -> marker fingerprint) through `p`; `finished(shard, stats or
    exception)` is called on the driver as each one ends; where the time went goes into `timings`."""
    task = _MarkedShard(lambda pool, sid, rows, _settings: p.finish(pool, sid, rows), label, markers)

    def complete(sid: str, rows: Batch) -> None:
        try:
            stats = task(ctx.pool, sid, rows, todo[sid], None)
        except Exception as exc:
            finished(sid, exc)
            return
        finished(sid, stats)

    expected: dict[str, int] = {}
    for sid in todo:
        try:
            expected[sid] = int(p.expected(ctx.pool, sid))
        except Exception as exc:  # a damaged shard input fails that shard, not the pass
            finished(sid, exc)
    if not expected:
        return
    gather = _Gather(p, expected, complete, finished)
    if os.environ.get("CURATE_EXECUTOR") == "local":
        _run_local(p, list(expected), gather, timings)
    else:
        _run_ray(ctx, p, list(expected), gather, timings)


class _Gather:
    """Rows of the open shards, by shard, until each is complete."""

    def __init__(self, p: BatchPass, expected: dict[str, int], complete: Callable[[str, Batch], None],
                 fail: Callable[[str, BaseException], None]) -> None:
        self.p, self.complete, self.fail = p, complete, fail
        self.expected = expected
        self.parts: dict[str, list[Batch]] = {sid: [] for sid in expected}
        self.received = dict.fromkeys(expected, 0)

    def add(self, batch: Batch) -> None:
        for sid, part in _split_by_shard(batch, self.p.shard_column):
            if sid not in self.parts:
                continue  # a shard already failed, or complete (rows past its expected count)
            error = _first_error(part, self.p.error_column)
            if error:
                self.fail_one(sid, ShardError(error))
                continue
            self.parts[sid].append(part)
            self.received[sid] += len(part[self.p.shard_column])
            if self.received[sid] >= self.expected[sid]:
                self.close(sid)

    def close(self, sid: str) -> None:
        """The shard's rows are all in (or no more will come): write it."""
        parts = self.parts.pop(sid, None)
        if parts is not None:
            self.complete(sid, _concat(parts))

    def close_all(self) -> None:
        # Shards with fewer rows than expected (an empty shard, a tar shorter than its table):
        # complete as they are; `finish` counts the gap.
        for sid in list(self.parts):
            self.close(sid)

    def fail_one(self, sid: str, exc: BaseException) -> None:
        if self.parts.pop(sid, None) is not None:
            self.fail(sid, exc)

    def fail_open(self, exc: BaseException) -> None:
        for sid in list(self.parts):
            self.fail_one(sid, exc)


def _run_ray(ctx: StageContext, p: BatchPass, shards: list[str], gather: _Gather, timings: dict[str, float]) -> None:
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    from curate.progress import console
    from curate.runtime import ensure_ray

    started = time.time()
    ensure_ray(ctx.ray_address)
    timings["ray_start_s"] = time.time() - started
    cluster = ray.cluster_resources()
    if p.check_cluster is not None:
        p.check_cluster(cluster)
    data_ctx = DataContext.get_current()
    data_ctx.enable_progress_bars = False  # the runner prints its own shard progress
    data_ctx.execution_options.preserve_order = False
    has_gpus = float(cluster.get("GPU", 0)) > 0

    ds = ray.data.from_items([{p.shard_column: sid} for sid in shards], override_num_blocks=len(shards))
    for k, step in enumerate(p.steps):
        if isinstance(step, TaskStep):
            options: dict[str, Any] = {"num_cpus": step.num_cpus, "fn_kwargs": dict(step.kwargs)}
            if step.memory_mb:
                options["memory"] = step.memory_mb * 1024 * 1024
            batch_size = 1 if k == 0 else step.batch_size
            if batch_size is not None:
                options["batch_size"] = batch_size
            ds = ds.map_batches(step.fn, batch_format="numpy", **options)
        else:
            gpus = (1.0 if has_gpus else 0.0) if step.num_gpus == "auto" else float(step.num_gpus)
            ds = ds.map_batches(step.cls, fn_constructor_args=step.args, batch_size=step.batch_size,
                                batch_format="numpy", compute=ActorPoolStrategy(size=step.concurrency),
                                num_gpus=gpus or None, num_cpus=step.num_cpus)

    streaming = time.time()
    first: float | None = None
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            if first is None:
                # Start-up: Ray Data planning, worker and actor start, model load, first rows.
                first = time.time()
                timings["until_first_result_s"] = first - streaming
                _gate(p)
            gather.add(batch)
    except KeyboardInterrupt:
        console.print(f"[{ctx.key}] interrupted; shards finished this run are kept")
        raise
    except Exception as exc:
        _gate(p)  # a failed gate explains a failed stream (and stops it): raised as is
        gather.fail_open(exc)
    _gate(p)
    gather.close_all()
    if first is not None:
        timings["streaming_s"] = time.time() - first


def _run_local(p: BatchPass, shards: list[str], gather: _Gather, timings: dict[str, float]) -> None:
    """In-process execution (CURATE_EXECUTOR=local): for tests, profiling and debugging."""
    reader, later = p.steps[0], p.steps[1:]
    assert isinstance(reader, TaskStep)
    actors: dict[int, Any] = {}
    started = time.time()
    first: float | None = None
    for sid in shards:
        try:
            for batch in _batches(reader.fn({p.shard_column: np.array([sid], dtype=object)}, **reader.kwargs)):
                for out in _through(later, 0, batch, actors):
                    if first is None:
                        first = time.time()
                        timings["until_first_result_s"] = first - started
                        _gate(p)
                    gather.add(out)
        except Exception as exc:  # this shard fails (unless the gate is shut); the next one goes on
            _gate(p)
            gather.fail_one(sid, exc)
            continue
        _gate(p)
        gather.close(sid)  # its reader is done: no more rows will come
    if first is not None:
        timings["streaming_s"] = time.time() - first


def _gate(p: BatchPass) -> None:
    if p.ready is not None:
        p.ready()


def _through(steps: list[TaskStep | ActorStep], k: int, batch: Batch, actors: dict[int, Any]) -> Iterator[Batch]:
    """`batch` through steps[k:], in order."""
    if k == len(steps):
        yield batch
        return
    step = steps[k]
    if isinstance(step, TaskStep):
        for out in _batches(step.fn(batch, **step.kwargs)):
            yield from _through(steps, k + 1, out, actors)
        return
    if k not in actors:
        try:
            actors[k] = step.cls(*step.args)
        except Exception as exc:
            actors[k] = exc  # constructed once: a failure fails every shard, as a dead actor pool would
    actor = actors[k]
    if isinstance(actor, Exception):
        raise actor
    for chunk in _chunks(batch, step.batch_size):
        yield from _through(steps, k + 1, actor(chunk), actors)


def _batches(result: Batch | Iterable[Batch]) -> Iterable[Batch]:
    return [result] if isinstance(result, Mapping) else result


def _rows(batch: Batch) -> int:
    return len(next(iter(batch.values()))) if batch else 0


def _chunks(batch: Batch, size: int | None) -> Iterator[Batch]:
    n = _rows(batch)
    if size is None or n <= size:
        yield batch
        return
    for i in range(0, n, size):
        yield {k: v[i:i + size] for k, v in batch.items()}


def _split_by_shard(batch: Batch, column: str) -> list[tuple[str, Batch]]:
    ids = batch[column].astype(str)
    unique = np.unique(ids)
    if len(unique) == 1:
        return [(str(unique[0]), batch)]
    return [(str(sid), {k: v[ids == sid] for k, v in batch.items()}) for sid in unique]


def _first_error(part: Batch, column: str | None) -> str:
    if column is None or column not in part:
        return ""
    return next((str(e) for e in part[column].tolist() if e), "")


def _concat(parts: list[Batch]) -> Batch:
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
