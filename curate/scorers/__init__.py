"""Scorers: one module per scorer type, each registering itself with `curate.scorers.base.register`.

Modules import heavy libraries (torch, open_clip, fastText) only inside `setup`, so loading the
registry (for config validation) stays cheap.
"""

from __future__ import annotations

import importlib
import pkgutil

_loaded = False


def load_scorer_modules() -> None:
    """Import every scorer module so that each registers its class; idempotent."""
    global _loaded
    if _loaded:
        return
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name not in ("base",) and not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")
    _loaded = True
