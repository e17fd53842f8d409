"""Register curate's tiny open_clip configurations, used by tests and the demo.

Real weights cannot be downloaded everywhere curate is tested, so tests train these tiny
models on generated data; the loading path is the same one real models take.
"""

from __future__ import annotations

from pathlib import Path

import open_clip

CONFIG_DIR = Path(__file__).parent / "configs"
TINY_MODEL = "curate-tiny"
_registered = False


def register_tiny_configs() -> None:
    """Make `curate-tiny` (and any config in models/configs) known to open_clip; idempotent."""
    global _registered
    if not _registered:
        open_clip.add_model_config(CONFIG_DIR)
        _registered = True
