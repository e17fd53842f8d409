"""The whole pipeline over one pool: stages in order, each resuming where it stopped.

The resolved config is written to <pool>/pipeline.yaml with a hash per stage section. A stage that
already finished under a different section hash is not silently re-used or mixed: the run stops and
says which stage changed, unless the caller asks to redo changed stages (and everything after them).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import time
from collections.abc import Callable
from typing import Any

import yaml
from pydantic import BaseModel

from curate import layout
from curate.config import PipelineConfig
from curate.errors import ConfigError, CurateError, PoolError
from curate.pool import Pool
from curate.poollock import StageLock
from curate.progress import console
from curate.stage import Stage
from curate.yamlconf import parse_yaml, yaml_error_line

STAGES: tuple[str, ...] = (
    "ingest", "download", "train_dfn", "score", "dedup", "filter", "balance", "export", "stats",
)
STAGE_MODULES = {stage: f"curate.stages.{stage}" for stage in STAGES}
STAGE_MODULES["stats"] = "curate.stats"
STAGE_MODULES["train_dfn"] = "curate.dfn.stage"
PIPELINE_FILE = layout.PIPELINE_FILE


def section_hash(section: BaseModel | None) -> str | None:
    if section is None:
        return None
    canonical = json.dumps(section.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def config_hash(cfg: PipelineConfig) -> str:
    canonical = json.dumps(cfg.model_dump(mode="json", exclude={"ray_address"}), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def select_stages(cfg: PipelineConfig, start: str | None, stop: str | None) -> list[str]:
    for name, value in (("--from", start), ("--to", stop)):
        if value is not None and value not in STAGES:
            raise ConfigError(f"{name}: unknown stage {value!r}; stages are {', '.join(STAGES)}")
    lo = STAGES.index(start) if start else 0
    hi = STAGES.index(stop) if stop else len(STAGES) - 1
    if lo > hi:
        raise ConfigError(f"--from {start} comes after --to {stop}")
    return [s for s in STAGES[lo : hi + 1] if getattr(cfg, s) is not None]


def read_recorded(pool: Pool) -> dict[str, Any]:
    """The pool's pipeline.yaml (what earlier runs recorded); a damaged one is one PoolError naming it."""
    if not pool.exists(PIPELINE_FILE):
        return {}
    where = pool.uri(PIPELINE_FILE)
    # The same bounded loader as configs: a pool may be shared, and its pipeline.yaml edited by anyone.
    try:
        doc, _ = parse_yaml(pool.read_bytes(PIPELINE_FILE).decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PoolError(f"{where}: not UTF-8 text ({exc.reason}); "
                        "move it aside to run again (it only records earlier runs' configs)") from None
    except yaml.YAMLError as exc:
        raise PoolError(f"{yaml_error_line(exc, where)}; "
                        "move it aside to run again (it only records earlier runs' configs)") from None
    if doc is None:
        return {}
    hashes = doc.get("stage_hashes", {}) if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or not isinstance(hashes, dict):
        what = type(doc).__name__ if not isinstance(doc, dict) else f"stage_hashes {type(hashes).__name__}"
        raise PoolError(f"{where}: expected a mapping with stage_hashes as written by `curate run`, found a {what}; "
                        "move it aside to run again")
    return doc


def stage_finished(pool: Pool, stage: str) -> bool:
    """A stage counts as finished once its report exists and names no failed shards."""
    report = pool.read_report(stage)
    return isinstance(report, dict) and bool(report) and not report.get("shards_failed")


def check_changed_stages(pool: Pool, cfg: PipelineConfig, stages: list[str]) -> list[str]:
    """Stages that finished under a different config than `cfg` asks for."""
    recorded = read_recorded(pool).get("stage_hashes", {})
    changed = []
    for stage in stages:
        old = recorded.get(stage)
        if old is not None and old != section_hash(getattr(cfg, stage)) and stage_finished(pool, stage):
            changed.append(stage)
    return changed


def record_config(pool: Pool, cfg: PipelineConfig, stages_done: list[str]) -> None:
    recorded = read_recorded(pool)
    hashes = dict(recorded.get("stage_hashes", {}))
    for stage in stages_done:
        hashes[stage] = section_hash(getattr(cfg, stage))
    doc = {
        "config_hash": config_hash(cfg),
        "stage_hashes": hashes,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": cfg.model_dump(mode="json"),
    }
    pool.write_bytes(PIPELINE_FILE, yaml.safe_dump(doc, sort_keys=False).encode())


def stage_runner(stage: str) -> Callable[..., Any]:
    module = importlib.import_module(STAGE_MODULES[stage])
    return module.run


def stage_class(stage: str) -> type[Stage]:
    """The Stage subclass a stage's package defines (the one whose `name` is `stage`)."""
    module = importlib.import_module(STAGE_MODULES[stage])
    # __all__ too: a package may load its driver side lazily (score's workers import it for the decoder).
    for value in [*vars(module).values(), *(getattr(module, n) for n in getattr(module, "__all__", ()))]:
        if isinstance(value, type) and issubclass(value, Stage) and getattr(value, "name", None) == stage:
            return value
    raise TypeError(f"{STAGE_MODULES[stage]} defines no Stage subclass named {stage!r}")


def tables_in_pool(pool: Pool) -> set[str]:
    """The pool tables (curate.layout.TABLES) that already hold something."""
    def has(rel: str, suffix: str = "") -> bool:
        return any(n.endswith(suffix) for n in pool.listdir(rel))

    present = {name for name, rel in (("candidates", layout.CANDIDATES), ("scores", layout.SCORES),
                                      ("embeddings", layout.EMBEDDINGS), ("dedup", layout.DEDUP),
                                      ("subsets", layout.SUBSETS), ("balanced", layout.BALANCED),
                                      ("exports", layout.EXPORTS)) if has(rel)}
    if pool.marker_ids(layout.DOWNLOAD_MARKERS):
        present |= {"shards", "population"}
    if pool.exists(layout.IMPORT_MANIFEST):
        present |= {"metadata", "population"}
    return present


def check_chain(pool: Pool, cfg: PipelineConfig, stages: list[str]) -> None:
    """Before any work: every table a selected stage needs is in the pool or written by a stage before it."""
    available = tables_in_pool(pool)
    for stage in stages:
        cls = stage_class(stage)
        missing = [t for t in cls().requires(getattr(cfg, stage)) if t not in available]
        if missing:
            writers = [s for s in STAGES if any(t in stage_class(s).writes for t in missing)] if missing else []
            raise ConfigError(
                f"stage {stage} reads {', '.join(missing)} ({', '.join(layout.TABLES[t] for t in missing)}), "
                f"which {pool.url} does not hold and no earlier stage of this run writes; "
                f"add {' or '.join(writers) or 'the stage that writes it'} to the run (or its --from range)")
        available |= set(cls.writes)


def run_pipeline(
    cfg: PipelineConfig,
    *,
    start: str | None = None,
    stop: str | None = None,
    ray_address: str | None = None,
    redo_changed: bool = False,
) -> dict[str, Any]:
    """Run the configured stages in order; returns {stage: report}."""
    pool = Pool(cfg.pool)
    stages = select_stages(cfg, start, stop)
    if not stages:
        raise ConfigError("no configured stage in the selected range")
    check_chain(pool, cfg, stages)
    changed = check_changed_stages(pool, cfg, stages)
    if changed and not redo_changed:
        raise CurateError(
            f"stage(s) {', '.join(changed)} already finished in {pool.url} with a different config; "
            "re-run with --redo-changed to redo them and the stages after them, or use a new pool"
        )
    if changed:
        first = min(STAGES.index(s) for s in changed)
        for stage in STAGES[first:]:
            if stage in stages:
                with StageLock(pool, stage):  # not while another run writes that stage
                    pool.clear_stage(stage)
    address = ray_address or cfg.ray_address
    reports: dict[str, Any] = {}
    started = time.time()
    for stage in stages:
        console.print(f"[bold]== {stage}[/bold]")
        t0 = time.time()
        reports[stage] = stage_runner(stage)(pool, getattr(cfg, stage), ray_address=address)
        record_config(pool, cfg, [stage])
        console.print(f"== {stage} done in {time.time() - t0:.1f}s")
    console.print(f"pipeline {cfg.name!r}: {len(stages)} stage(s) in {time.time() - started:.1f}s; pool: {pool.url}")
    return reports
