"""`curate eval`: does a curated subset train a better model than a random subset of the same size?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from curate.cli import app
from curate.commands.options import SET_FLAG, apply_sets, set_option_help
from curate.errors import ConfigError


@app.command("eval")
def eval_command(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="eval YAML (see docs/eval.md).")] = None,
    pool: Annotated[str | None, typer.Option("--pool", "-p", help="The pool the arms are drawn from.")] = None,
    subset: Annotated[list[str] | None, typer.Option(
        "--subset", "-s", help="A curated arm: subsets/NAME, balanced/NAME, exports/NAME or a uids file "
        "(repeatable).")] = None,
    evalset: Annotated[list[str] | None, typer.Option(
        "--evalset", "-e", help="An evaluation-set folder (repeatable; format in docs/eval.md).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Results go to POOL/evals/NAME/ (default eval).")] = None,
    preset: Annotated[str | None, typer.Option(
        "--preset", help="tiny (CPU), datacomp_small or datacomp_medium (GPU).")] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", min=1, help="Training seeds per arm (default 3).")] = None,
    no_random: Annotated[bool, typer.Option(
        "--no-random-control", help="Skip the random subset of the same size.")] = False,
    no_pool: Annotated[bool, typer.Option("--no-pool-control", help="Skip the unfiltered pool arm.")] = False,
    sets: Annotated[list[str] | None, typer.Option(
        SET_FLAG, metavar="KEY=VALUE", help=set_option_help("the eval config (`train.samples_seen=16384`)"))] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the final table.")] = False,
) -> None:
    """Train one small CLIP per arm and seed at equal compute, evaluate zero-shot and retrieval, compare.

    Arms: each --subset, a uniformly random subset of the pool of the same size (per seed), and the
    whole pool. Same model, samples seen, batch, schedule and seeds for every arm. Prints per arm
    mean ± std and, per curated arm, the paired difference to its controls with a bootstrap CI and
    a verdict; writes POOL/evals/NAME/results.json. A killed run resumes where it stopped.
    """
    from curate.evaluation.config import EvalConfig, load_eval_config
    from curate.evaluation.run import run_eval

    data: dict[str, Any] = load_eval_config(config).model_dump(exclude_unset=True) if config else {}
    if pool:
        data["pool"] = pool
    if subset:
        data["arms"] = [{"subset": s} for s in subset]
    if evalset:
        data["evalsets"] = list(evalset)
    for key, value in (("name", name), ("preset", preset), ("seeds", seeds)):
        if value is not None:
            data[key] = value
    if no_random or no_pool:
        controls = dict(data.get("controls") or {})
        if no_random:
            controls["random_same_size"] = False
        if no_pool:
            controls["full_pool"] = False
        data["controls"] = controls
    for required, flag in (("pool", "--pool"), ("arms", "--subset"), ("evalsets", "--evalset")):
        if not data.get(required):
            raise ConfigError(f"eval: give {flag} (or a --config YAML with `{required}:`)")
    cfg = apply_sets(EvalConfig, data, sets or [], "eval")
    run_eval(cfg, quiet=quiet)
