"""Options shared by subcommands, and helpers to load config sections for a command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

PoolOpt = Annotated[str, typer.Option("--pool", "-p", help="Pool directory or URL (s3://, gs://).")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="Pipeline YAML; this command reads its own section.")
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option("--ray-address", help="Ray cluster to join ('auto', 'ray://host:10001'); default: local Ray."),
]
RerunOpt = Annotated[bool, typer.Option("--rerun", help="Forget finished shards of this stage and redo all.")]
