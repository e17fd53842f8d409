"""Options shared by subcommands, and helpers to load config sections for a command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

PoolOpt = Annotated[str, typer.Option("--pool", "-p", help="Pool directory or URL (s3://, gs://).")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="Pipeline YAML; this command reads its own section.")
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option("--ray-address", help="Ray cluster to join ('auto', 'ray://host:10001'); default: local Ray."),
]
RerunOpt = Annotated[bool, typer.Option("--rerun", help="Forget finished shards of this stage and redo all.")]


def from_options(model: type[M], data: dict[str, Any], what: str) -> M:
    """Validate a config section built from command-line options: a refused value (`--name ../x`) is
    one ConfigError line, `what: key: problem (got …)`, not a traceback."""
    from pydantic import ValidationError

    from curate.errors import ConfigError
    from curate.yamlconf import format_validation_error

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, what, {}).replace("\n", "; ")) from None
