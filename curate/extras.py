"""Optional extras: packages only some stages need, imported where they are needed.

The base install runs ingest, download, the CPU scorers, filter, balance, export and stats.
CLIP models (torch, open_clip) come with `curate[models]`, faiss with `curate[dedup]`
(pyproject.toml lists them). Code that needs one imports it through `require`, so a missing
extra is one line naming what needs it and the install command, not a ModuleNotFoundError
from deep inside a Ray worker.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from curate.errors import ConfigError


def check_installed(module: str, extra: str, purpose: str) -> None:
    """`require` without the import: the same error when `module` is not installed, in microseconds
    (a preflight must not spend the seconds importing torch costs in a driver that never uses it)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module entry blocked by None
        found = False
    if not found:
        raise ConfigError(f"{purpose} needs {module.split('.')[0]}: pip install 'curate[{extra}]'")


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import `module` (a package of the `extra` extra); when it is not installed, a ConfigError that says
    `<purpose> needs <package>: pip install 'curate[<extra>]'`."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        # Only the package itself being absent means the extra is missing; a module it fails to find
        # inside itself is a broken install, and its own error says more.
        if exc.name is None or exc.name.split(".")[0] != top:
            raise
        raise ConfigError(f"{purpose} needs {top}: pip install 'curate[{extra}]'") from None
