"""`curate spec validate`: check a filter spec before applying it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curate.cli import app
from curate.progress import console

spec_app = typer.Typer(
    help="Work with filter specs (YAML; see docs/spec-reference.md).", no_args_is_help=True,
)
app.add_typer(spec_app, name="spec")


@spec_app.command("validate")
def validate(
    spec: Annotated[Path, typer.Argument(help="Filter spec YAML to check (includes are followed).")],
    pool: Annotated[
        str | None,
        typer.Option("--pool", "-p", help="Also check columns, types and dedup methods against this pool "
                     "(reads parquet schemas only, no data)."),
    ] = None,
) -> None:
    """Validate a filter spec: its grammar always, and its columns against a pool with --pool.

    Every problem is printed as FILE:LINE: KEY: what was expected; an unknown column lists the
    columns the pool has. Exits 0 when the spec is valid, 2 otherwise. Reads no data.
    """
    from curate.pool import Pool
    from curate.stages.filter import prepare
    from curate.stages.filter.check import check_survivors_placement
    from curate.stages.filter.spec import load_spec

    if pool:
        loaded, _, catalog = prepare(Pool(pool), spec)
        where = f" against {pool} ({len(catalog.sources)} columns, dedup: {', '.join(catalog.dedup_methods) or '-'})"
    else:
        loaded, sources = load_spec(spec)
        check_survivors_placement(loaded, sources)
        where = " (grammar only; pass --pool to check columns)"
    console.print(f"{spec}: valid spec {loaded.name!r} with {len(loaded.conditions)} top-level condition(s){where}")
    for i, cond in enumerate(loaded.conditions):
        console.print(f"  {i}. {cond.label()}")
