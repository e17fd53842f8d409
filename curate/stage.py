"""The stage contract: what a stage declares, and what it may ask of the runner.

A stage is a subclass of `Stage` in its own package. It declares its config section, the pool
tables it reads and writes, and its passes; the runner (curate/runner.py) owns everything else:
the pool lock, completion markers, the one resume rule, the executor (in-process, Ray tasks or
Ray Data), progress lines, the failure summary and the report schema.

    class Export(Stage):
        name = "export"
        config_class = ExportConfig
        reads = ("shards", "subsets")
        writes = ("exports",)

        def run(self, ctx: StageContext) -> dict:
            plan = ...                                              # driver-side planning
            result = ctx.run_pass(Pass("write", export_shard, shards, settings,
                                       fingerprint=plan.fingerprint))  # one sharded map
            return {"samples_written": ...}                         # extra report fields

A pass is one sharded map `fn(pool, shard_id, payload, settings) -> stats`. `ctx.run_pass` runs
the shards not yet done and returns once all have finished; between passes the stage's `run` does
what a driver does (merge parts, fit a threshold). `ctx.gather` is a pass whose per-shard results
come back to the driver instead of being written (cut-offs, k-means points): no markers.
A `BatchPass` is the same for model inference: shards streamed through map steps (a reader task,
then actor pools that load a model once) on Ray Data, rows gathered per shard on the driver and
written by `finish` (curate/runner_data.py); resume, markers and report are those of a Pass.

Resume, for every stage: a shard of a pass is done when `_done/<key>/<pass>/<shard>.json` exists,
is a JSON object, names every output `Pass.outputs` lists, and carries the fingerprint of the
pass's inputs and config (`Pass.fingerprint`, plus `Pass.shard_inputs` for one shard's own
inputs). Anything else runs again; a changed fingerprint says so in one line.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from curate.pool import Pool

ShardFn = Callable[["Pool", str, Any, Any], Mapping[str, Any] | None]
OutputsFn = Callable[[str, Any, Mapping[str, Any]], list[str]]


@dataclass(frozen=True)
class Resources:
    """What one shard task of a pass reserves on the cluster."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory_mb: int | None = None
    max_retries: int = 2


@dataclass
class Pass:
    """One sharded map of a stage: `fn(pool, shard_id, payload, settings) -> stats` for every shard.

    stats follow one convention: {"samples": n_in, "counts": {reason: n}, ...}; numbers are summed
    and dicts merged over shards; "errors" ({message: n}) is merged capped at 100 messages, the rest
    under "other" (curate.counters); keys starting with "_" are the runner's."""

    name: str
    fn: ShardFn
    shards: Mapping[str, Any]
    settings: Any = None
    # JSON-serialisable description of everything the pass's outputs depend on besides the shard
    # itself (config, thresholds, model, upstream tables): a change redoes every finished shard.
    fingerprint: Any = None
    # One shard's own inputs (its input file's size, say): a change redoes that shard only.
    shard_inputs: Callable[[str, Any], Any] | None = None
    # The files a finished shard has: a marked shard missing one (a phantom) runs again. Pool-relative
    # paths, or absolute paths/URLs for outputs outside the pool (a trained model's directory).
    outputs: OutputsFn | None = None
    resources: Resources = field(default_factory=Resources)
    # Which stats key the end-of-pass summary table shows.
    counts_key: str = "counts"
    # Run the shards in the driver process whatever the executor: for work that schedules its own
    # parallelism (DFN training starts Ray Train or torch workers itself).
    in_driver: bool = False


@dataclass(frozen=True)
class TaskStep:
    """A function step of a BatchPass, run as Ray Data CPU tasks.

    The first step of a pass is its reader: `fn({shard_column: [shard id]}, **kwargs)` yields the
    shard's rows as numpy batches (dicts of column arrays), each with the shard column. A later
    task step maps a batch: `fn(batch, **kwargs)` returns or yields batches."""

    fn: Callable[..., Any]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    num_cpus: float = 1.0
    # Also keeps Ray Data from fusing this step into the actor step after it.
    memory_mb: int | None = None
    batch_size: int | None = None  # later steps only; the reader gets one shard id per call


@dataclass(frozen=True)
class ActorStep:
    """A class step of a BatchPass: a pool of `concurrency` actors, each `cls(*args)` once (a model
    loads once per actor), then `actor(batch) -> batch` on batches of up to `batch_size` rows."""

    cls: type
    args: tuple[Any, ...] = ()
    concurrency: int = 1
    batch_size: int | None = None
    num_cpus: float = 1.0
    # "auto": one GPU per actor when the cluster has GPUs, none otherwise.
    num_gpus: float | str = 0.0


Batch = dict[str, Any]  # column -> numpy array, Ray Data's "numpy" batch format


@dataclass
class BatchPass:
    """A sharded map for batch inference: every shard's rows stream through `steps` in order; on the
    driver, once a shard's rows are all in, `finish(pool, shard, rows) -> stats` writes its outputs
    and the runner writes its marker. Resume, fingerprint, outputs and report are those of a Pass.

    rows: the shard's batches concatenated in arrival order (not sorted; {} when the shard had no
    rows). A shard's rows are all in once `expected(pool, shard)` of them arrived, or the stream
    ended; a row whose `error_column` is not empty fails its shard with that text (a reader reports
    a shard it cannot read this way, rather than failing the whole dataset)."""

    name: str
    shards: Mapping[str, Any]
    steps: list[TaskStep | ActorStep]
    expected: Callable[[Pool, str], int]
    finish: Callable[[Pool, str, Batch], Mapping[str, Any] | None]
    fingerprint: Any = None
    shard_inputs: Callable[[str, Any], Any] | None = None
    outputs: OutputsFn | None = None
    counts_key: str = "counts"
    shard_column: str = "shard"
    error_column: str | None = "shard_error"
    # Called on the driver with the Ray cluster's resources (ray.cluster_resources()) before the
    # dataset starts: a stage refuses a plan that cannot run there (Ray Data would wait forever).
    check_cluster: Callable[[Mapping[str, float]], None] | None = None
    # A gate on the driver before any shard is finished (at the first rows, or at the end when none
    # came) and again when the stream fails: an exception from it stops the pass and is raised as is
    # (score's model checks, which run on a thread while Ray starts; a missing model is reported as
    # such, not as the actor crash it causes). It must raise the same error every time it is called.
    ready: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if not self.steps or not isinstance(self.steps[0], TaskStep):
            raise ValueError(f"batch pass {self.name!r}: the first step must be a TaskStep (the reader)")


@dataclass
class PassResult:
    name: str
    done: dict[str, dict[str, Any]]
    ran: list[str]
    skipped: list[str]
    failed: dict[str, str]
    totals: dict[str, Any]
    # Where a BatchPass's wall time went (ray_start_s, until_first_result_s, streaming_s).
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


class PassReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shards_total: int
    shards_done: int
    shards_failed: dict[str, str] = Field(default_factory=dict)
    shards_run_now: int = 0
    shards_skipped_as_done: int = 0
    wall_seconds_this_run: float = 0.0
    fingerprint: str | None = None
    totals: dict[str, Any] = Field(default_factory=dict)


class StageReport(BaseModel):
    """reports/<stage>.json: the same fields for every stage, then the stage's own (`Stage.run`'s return).

    The shard counts and totals at the top are those of the stage's last recorded pass (its main
    output); `passes` has every pass."""

    model_config = ConfigDict(extra="allow")

    stage: str
    key: str
    shards_total: int = 0
    shards_done: int = 0
    shards_failed: dict[str, str] = Field(default_factory=dict)
    shards_run_now: int = 0
    shards_skipped_as_done: int = 0
    wall_seconds_this_run: float = 0.0
    totals: dict[str, Any] = Field(default_factory=dict)
    passes: dict[str, PassReport] = Field(default_factory=dict)


class Stage:
    """Base class of a pipeline stage; subclasses set the class attributes and write `run`."""

    name: ClassVar[str]
    # The pipeline YAML section (`PipelineConfig.<name>`), validated before any work.
    config_class: ClassVar[type[BaseModel]]
    # Pool tables (curate.layout.TABLES) the stage reads and writes: `curate run` checks the chain.
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()

    def key(self, config: Any) -> str:
        """The run target: markers live in _done/<key>/; stages that write named outputs (filter
        subsets, balanced sets, exports) return `<stage>/<name>` so two names never share markers."""
        return self.name

    def requires(self, config: Any) -> tuple[str, ...]:
        """The tables this config needs before the stage starts (default: all of `reads`)."""
        return self.reads

    def run(self, ctx: StageContext) -> Mapping[str, Any] | None:
        """The stage's workflow: plan, `ctx.run_pass` each pass, merge; returns extra report fields."""
        raise NotImplementedError


@dataclass
class StageContext:
    """What `Stage.run` gets: the pool, its config section, and the runner's services."""

    stage: Stage
    pool: Pool
    config: Any
    key: str
    ray_address: str | None = None
    rerun: bool = False
    quiet: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    passes: dict[str, PassReport] = field(default_factory=dict)
    last_pass: str | None = None
    started: float = field(default_factory=time.time)

    def run_pass(self, p: Pass | BatchPass, *, check: bool = True) -> PassResult:
        """Run the shards of `p` not yet done; with `check`, raise StageFailed (after writing the
        report) if any still failed after its retries."""
        from curate.runner import run_pass

        return run_pass(self, p, check=check)

    def gather(self, p: Pass, what: str | None = None) -> list[Any]:
        """`p.fn`'s return value for every shard, in shard order; nothing is written or marked."""
        from curate.runner import gather

        return gather(self, p, what)

    def say(self, message: str) -> None:
        from curate.progress import console

        if not self.quiet:
            console.print(f"[{self.key}] {message}", markup=False, highlight=False, soft_wrap=True)

    def fail_if_failed(self, extra: Mapping[str, Any] | None = None) -> None:
        """Raise StageFailed, after writing the report (with `extra` fields), if a pass left failed shards."""
        from curate.runner import raise_failures

        raise_failures(self, extra)


def fingerprint_of(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (sorted keys; other objects by str())."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
