"""The `curate` command: one subcommand per stage over one pool."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

from curate import __version__
from curate.errors import CurateError

app = typer.Typer(
    name="curate",
    help=(
        "Curate web-scale image-text data for CLIP-style training: ingest Common Crawl, "
        "download, score, dedup, filter, balance, export. See docs/ for each command."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"curate {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Curate web-scale image-text data for CLIP-style training."""


def _register_commands() -> None:
    import curate.commands as pkg

    for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if mod.name != "common":
            importlib.import_module(f"curate.commands.{mod.name}")


_register_commands()


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 2."""
    try:
        app()  # standalone mode: click reports usage errors itself and exits 2
    except CurateError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
