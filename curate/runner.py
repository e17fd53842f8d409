"""The runner: executes stages written against curate.stage's contract.

`run(stage, pool, config)` takes the stage's pool lock, calls `Stage.run` with a StageContext and
writes reports/<stage>.json (curate.stage.StageReport). `run_pass` and `gather`, reached through the
context, run a pass's shards in this process (CURATE_EXECUTOR=local) or as Ray tasks, with
retries, the one resume rule, progress lines and a failure summary.

Stats convention: {"samples": n_in, "counts": {reason: n, ...}, ...}; numbers are summed and
dicts merged across shards into reports/<stage>.json.
"""

from __future__ import annotations

import json
import os
import posixpath
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from curate import layout
from curate.counters import merge_capped
from curate.errors import CurateError, StageFailed
from curate.pool import Pool
from curate.progress import ShardProgress, console, print_counts_table
from curate.stage import (
    BatchPass,
    Pass,
    PassReport,
    PassResult,
    Resources,
    ShardFn,
    Stage,
    StageContext,
    StageReport,
    fingerprint_of,
)

# Stats keys that count free-text messages (message -> n): merged capped, so a stage's totals hold at
# most counters.DEFAULT_CAP messages however many shards report different ones (img2dataset's idea).
CAPPED_KEYS = ("errors",)


def merge_stats(items: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Sum numbers and merge nested dicts (CAPPED_KEYS capped); other values keep the last one seen;
    "_" keys are the runner's."""
    out: dict[str, Any] = {}
    for item in items:
        for key, value in item.items():
            if key.startswith("_"):
                continue
            if key in CAPPED_KEYS and isinstance(value, Mapping):
                out[key] = merge_capped(out.get(key, {}), {k: v for k, v in value.items() if isinstance(v, int)})
            elif isinstance(value, bool):
                out[key] = value
            elif isinstance(value, int | float):
                out[key] = out.get(key, 0) + value
            elif isinstance(value, Mapping):
                out[key] = merge_stats([out.get(key, {}), value])
            else:
                out[key] = value
    return out


# Test-only fault point, free when unset: CURATE_TEST_PAUSE="STAGE:N:DIR". In STAGE, the first N
# shards to finish their work go on; the first attempt of one later shard stops before its
# completion marker (its outputs written, no marker), writes its pid to DIR/paused and waits until
# DIR/release exists. A test can then kill the run, or that worker, knowing the stage is mid-way
# (tests/test_pipeline_e2e.py). DIR/arrived-SHARD gets one line per attempt that reached this point.
_TEST_PAUSE = "CURATE_TEST_PAUSE"


def _test_pause(stage: str, shard_id: str, spec: str) -> None:
    pause_stage, after, directory = spec.split(":", 2)
    # STAGE names a stage (download), a target (filter/x) or one pass of it (balance/b/sample).
    if stage != pause_stage and not stage.startswith(pause_stage + "/"):
        return
    arrived = os.path.join(directory, f"arrived-{shard_id}")
    first_attempt = not os.path.exists(arrived)
    with open(arrived, "a", encoding="utf-8") as f:
        f.write(f"{os.getpid()}\n")
    # Counted after this shard's own file is in place: the (N+1)-th arrival always sees N+1.
    if not first_attempt or sum(n.startswith("arrived-") for n in os.listdir(directory)) <= int(after):
        return
    try:
        os.mkdir(os.path.join(directory, "paused.claim"))
    except FileExistsError:
        return  # another shard is the paused one
    with open(os.path.join(directory, "paused.tmp"), "w", encoding="utf-8") as f:
        f.write(f"{os.getpid()} {shard_id}\n")
    os.replace(os.path.join(directory, "paused.tmp"), os.path.join(directory, "paused"))
    parent = os.getppid()
    while not os.path.exists(os.path.join(directory, "release")):
        if os.getppid() != parent:  # the run was killed around this worker: do not linger
            os._exit(1)
        time.sleep(0.05)


class ShardError(Exception):
    """A shard's failure already put in words where it happened (a BatchPass row's error column)."""


def _short_error(exc: BaseException) -> str:
    """The last line of the root cause: what a user needs in a summary table."""
    if isinstance(exc, ShardError):
        return str(exc)[:500]
    cause = getattr(exc, "cause", None) or exc
    text = "".join(traceback.format_exception_only(type(cause), cause)).strip()
    return text.splitlines()[-1][:500] if text else type(cause).__name__


# ============================================================================ the stage contract
FINGERPRINT_KEY = "_fingerprint"


def run(stage: Stage, pool: Pool, config: Any, *, ray_address: str | None = None, rerun: bool = False,
        quiet: bool = False, **options: Any) -> dict[str, Any]:
    """Run one stage on `pool` under its lock; returns the report also written to reports/<stage>.json.

    Raises StageFailed, after writing the report, when shards of a pass still failed."""
    from curate.poollock import StageLock

    key = stage.key(config)
    with StageLock(pool, stage.name, quiet=quiet):
        if rerun:
            pool.remove(layout.stage_markers(key), recursive=True)
        ctx = StageContext(stage, pool, config, key, ray_address, rerun, quiet, dict(options))
        extra = dict(stage.run(ctx) or {})
        return write_report(ctx, extra, ctx.started)


def write_report(ctx: StageContext, extra: Mapping[str, Any], started: float) -> dict[str, Any]:
    """reports/<stage>.json (and reports/<key>.json for a named target) in StageReport's schema."""
    main = ctx.passes.get(ctx.last_pass or "")
    failed = {sid: f"{name}: {err}" for name, p in ctx.passes.items() for sid, err in p.shards_failed.items()}
    fields: dict[str, Any] = {"stage": ctx.stage.name, "key": ctx.key, "passes": ctx.passes,
                              "wall_seconds_this_run": round(time.time() - started, 3), "shards_failed": failed}
    if main is not None:
        fields.update(shards_total=main.shards_total, shards_done=main.shards_done,
                      shards_run_now=main.shards_run_now, shards_skipped_as_done=main.shards_skipped_as_done,
                      totals=main.totals)
    fields.update(extra)
    report = StageReport.model_validate(fields).model_dump(mode="json")
    ctx.pool.write_json(layout.report(ctx.stage.name), report)
    if ctx.key != ctx.stage.name:
        ctx.pool.write_json(layout.report(ctx.key), report)
    return report


def raise_failures(ctx: StageContext, extra: Mapping[str, Any] | None = None) -> None:
    failed = {sid: err for p in ctx.passes.values() for sid, err in p.shards_failed.items()}
    if failed:
        write_report(ctx, extra or {}, ctx.started)
        raise StageFailed(ctx.key, failed)


def _marker_fingerprint(p: Pass | BatchPass, pass_fp: str | None, sid: str) -> str | None:
    if p.shard_inputs is None:
        return pass_fp
    return fingerprint_of(pass_fp, p.shard_inputs(sid, p.shards[sid]))


def finished_shards(ctx: StageContext, p: Pass | BatchPass, pass_fp: str | None) -> dict[str, dict[str, Any]]:
    """Markers of `p` that count as done (the one resume rule); the others are removed, with one line each
    for damaged or phantom markers and one line in all for markers made with other inputs or config."""
    pool = ctx.pool
    where = layout.markers_dir(ctx.key, p.name)
    done, damaged = pool.read_marker_dir(where)
    redo = {sid: f"{why}; redoing the shard" for sid, why in damaged.items() if sid in p.shards}
    stale = [sid for sid, st in done.items()
             if sid in p.shards and st.get(FINGERPRINT_KEY) != _marker_fingerprint(p, pass_fp, sid)]
    if p.outputs is not None:
        wanted = {sid: p.outputs(sid, p.shards[sid], done[sid]) for sid in done if sid in p.shards and sid not in stale}
        present: dict[str, set[str]] = {}
        for rel in {posixpath.dirname(r) for rels in wanted.values() for r in rels if not _outside(r)}:
            present[rel] = set(pool.listdir(rel))  # one listing per directory, not one request per file
        for sid, rels in wanted.items():
            missing = [r for r in rels if (not _exists_outside(r) if _outside(r)
                                           else posixpath.basename(r) not in present[posixpath.dirname(r)])]
            if missing:
                shown = missing[0] if _outside(missing[0]) else pool.uri(missing[0])
                redo[sid] = (f"{pool.uri(layout.marker(ctx.key, p.name, sid))} marks shard {sid} done but "
                             f"{shown} is missing; redoing the shard")
    for sid, why in sorted(redo.items()):
        done.pop(sid, None)
        pool.remove(layout.marker(ctx.key, p.name, sid))
        ctx.say(why)
    if stale:
        for sid in stale:
            done.pop(sid, None)
            pool.remove(layout.marker(ctx.key, p.name, sid))
        ctx.say(f"{p.name}: {len(stale)} finished shard(s) were made from other inputs or config; redoing them")
    return {sid: {k: v for k, v in st.items() if k != FINGERPRINT_KEY} for sid, st in done.items() if sid in p.shards}


def _outside(path: str) -> bool:
    return path.startswith("/") or "://" in path


def _exists_outside(path: str) -> bool:
    import fsspec

    fs, where = fsspec.core.url_to_fs(path)
    return bool(fs.exists(where))


def run_pass(ctx: StageContext, p: Pass | BatchPass, *, check: bool = True) -> PassResult:
    """Run every shard of `p` not already done (see curate.stage for the rule), then record the pass."""
    if p.name in ctx.passes:
        raise ValueError(f"stage {ctx.key}: pass {p.name!r} ran twice in one run")
    label = f"{ctx.key}/{p.name}"
    pass_fp = fingerprint_of(p.fingerprint) if p.fingerprint is not None else None
    done_before = finished_shards(ctx, p, pass_fp)
    todo = {sid: payload for sid, payload in p.shards.items() if sid not in done_before}
    skipped = [sid for sid in p.shards if sid in done_before]
    progress = ShardProgress(label, len(p.shards), skipped=len(skipped))
    progress.enabled = not ctx.quiet
    failed: dict[str, str] = {}
    ran: list[str] = []
    # The stats of every finished shard: those found done, then each shard's as its task returns them,
    # through the same JSON round trip as its marker (numpy numbers become what the marker holds), so
    # no marker is read back after the pass.
    done = dict(done_before)
    started = time.time()
    markers = layout.markers_dir(ctx.key, p.name)
    fingerprints = {sid: _marker_fingerprint(p, pass_fp, sid) for sid in todo}

    def finished(sid: str, outcome: dict[str, Any] | BaseException) -> None:
        if isinstance(outcome, BaseException):
            failed[sid] = _short_error(outcome)
            progress.update(failed=True)
        else:
            ran.append(sid)
            done[sid] = json.loads(json.dumps(outcome, sort_keys=True, default=str))
            progress.update(int(outcome.get("samples", 0)))

    timings: dict[str, float] = {}
    if todo and isinstance(p, BatchPass):
        from curate.runner_data import execute_batches

        execute_batches(ctx, p, label, markers, fingerprints, finished, timings)
    elif todo:
        task = _MarkedShard(p.fn, label, markers)
        _execute(ctx, p.resources, task, {sid: (payload, fingerprints[sid]) for sid, payload in todo.items()},
                 p.settings, finished, in_driver=p.in_driver)
    else:
        ctx.say(f"{p.name}: all {len(p.shards)} shards already done; nothing to run")
    done = {sid: done[sid] for sid in sorted(done) if sid in p.shards}  # id order, as a marker listing gives
    totals = merge_stats(list(done.values()))
    ctx.passes[p.name] = PassReport(
        shards_total=len(p.shards), shards_done=len(done), shards_failed=failed, shards_run_now=len(ran),
        shards_skipped_as_done=len(skipped), wall_seconds_this_run=round(time.time() - started, 3),
        fingerprint=pass_fp, totals=totals)
    ctx.last_pass = p.name
    if not ctx.quiet:
        counts = totals.get(p.counts_key) or {}
        if counts:
            print_counts_table(f"{label}: counts over {len(done)} shards", counts, totals.get("samples"))
        for sid, err in sorted(failed.items()):
            console.print(f"[red][{label}] shard {sid} FAILED: {err}[/red]")
    if check and failed:
        raise_failures(ctx)
    return PassResult(p.name, done, ran, skipped, failed, totals, timings)


def gather(ctx: StageContext, p: Pass, what: str | None = None) -> list[Any]:
    """`p.fn(pool, shard, payload, settings)` for every shard, returned in shard order (not completion
    order: k-means training depends on the order of its points); nothing is marked or written."""
    label = f"{ctx.key}/{what or p.name}"
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    user_errors: dict[str, CurateError] = {}  # bad input: re-raised as is, one line naming the file
    started = time.time()
    total = len(p.shards)

    def finished(sid: str, outcome: Any) -> None:
        if isinstance(outcome, BaseException):
            errors[sid] = _short_error(outcome)
            cause = getattr(outcome, "cause", None) or outcome
            if isinstance(cause, CurateError):
                user_errors.setdefault(sid, cause)
            return
        results[sid] = outcome
        n = len(results)
        if not ctx.quiet and (n == total or n % max(1, total // 10) == 0):
            console.print(f"[{label}] {n}/{total} shards read ({time.time() - started:.1f}s)", markup=False)

    _execute(ctx, p.resources, _PlainShard(p.fn), {sid: (payload, None) for sid, payload in p.shards.items()},
             p.settings, finished)
    if user_errors:
        raise user_errors[min(user_errors)]
    if errors:
        raise StageFailed(label, errors)
    return [results[sid] for sid in p.shards]


class _PlainShard:
    """A gather task: the function's result goes back to the driver."""

    def __init__(self, fn: ShardFn) -> None:
        self.fn = fn

    def __call__(self, pool: Pool, sid: str, payload: Any, _fingerprint: str | None, settings: Any) -> Any:
        return self.fn(pool, sid, payload, settings)


class _MarkedShard:
    """A pass task: run the shard, then write its marker (stats + fingerprint) last."""

    def __init__(self, fn: ShardFn, label: str, markers: str) -> None:
        self.fn, self.label, self.markers = fn, label, markers

    def __call__(self, pool: Pool, sid: str, payload: Any, fingerprint: str | None, settings: Any) -> dict:
        start = time.time()
        stats = dict(self.fn(pool, sid, payload, settings) or {})
        stats.setdefault("seconds", round(time.time() - start, 3))
        if _TEST_PAUSE in os.environ:
            _test_pause(self.label, sid, os.environ[_TEST_PAUSE])
        pool.write_json(posixpath.join(self.markers, f"{sid}.json"), {**stats, FINGERPRINT_KEY: fingerprint})
        return stats


def _call(task: Any, pool: Pool, sid: str, payload: Any, fingerprint: str | None, settings: Any) -> Any:
    return task(pool, sid, payload, fingerprint, settings)


def _execute(ctx: StageContext, res: Resources, task: Any, todo: Mapping[str, tuple[Any, str | None]],
             settings: Any, finished: Callable[[str, Any], None], in_driver: bool = False) -> None:
    """Every shard of `todo` through `task`, in this process (CURATE_EXECUTOR=local, or `in_driver`)
    or as Ray tasks, with retries; `finished(shard, result or exception)` is called on the driver as
    each one ends."""
    if in_driver or os.environ.get("CURATE_EXECUTOR") == "local":
        for sid, (payload, fp) in todo.items():
            for attempt in range(res.max_retries + 1):
                try:
                    outcome = task(ctx.pool, sid, payload, fp, settings)
                except Exception as exc:
                    if attempt == res.max_retries:
                        finished(sid, exc)
                    continue
                finished(sid, outcome)
                break
        return
    import ray

    from curate.runtime import ensure_ray

    ensure_ray(ctx.ray_address)
    options: dict[str, Any] = {"num_cpus": res.num_cpus, "max_retries": res.max_retries, "retry_exceptions": True}
    if res.num_gpus:
        options["num_gpus"] = res.num_gpus
    if res.memory_mb:
        options["memory"] = res.memory_mb * 1024 * 1024
    remote = ray.remote(_call).options(**options)
    # Large objects (the task, its settings) are put once, not once per shard.
    task_ref, settings_ref = ray.put(task), ray.put(settings)
    pending = {remote.remote(task_ref, ctx.pool, sid, payload, fp, settings_ref): sid
               for sid, (payload, fp) in todo.items()}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                sid = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as exc:
                    finished(sid, exc)
                    continue
                finished(sid, outcome)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        console.print(f"[{ctx.key}] interrupted; shards finished this run are kept")
        raise
