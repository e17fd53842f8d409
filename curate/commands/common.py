"""Options shared by subcommands, and helpers to load config sections for a command."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import BaseModel

if TYPE_CHECKING:
    from pydantic import ValidationError

    from curate.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

PoolOpt = Annotated[str, typer.Option("--pool", "-p", help="Pool directory or URL (s3://, gs://).")]
RayAddressOpt = Annotated[
    str | None,
    typer.Option("--ray-address", help="Ray cluster to join ('auto', 'ray://host:10001'); default: local Ray."),
]
RerunOpt = Annotated[bool, typer.Option("--rerun", help="Forget finished shards of this stage and redo all.")]


def from_options(model: type[M], data: dict[str, Any], what: str) -> M:
    """Validate a config section built from command-line options: a refused value (`--name ../x`) is
    one ConfigError line, `what: key: problem (got …)`, not a traceback."""
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise options_error(exc, what) from None


def options_error(exc: ValidationError, what: str) -> ConfigError:
    """The one line a refused command-line value becomes."""
    from curate.errors import ConfigError
    from curate.yamlconf import format_validation_error

    return ConfigError(format_validation_error(exc, what, {}).replace("\n", "; "))
