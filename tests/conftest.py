"""Suite-wide settings: a small local Ray shared by every test in the session."""

from __future__ import annotations

import os

# Set before anything imports ray: a 2-core CI machine must not start more than it has.
os.environ.setdefault("CURATE_RAY_NUM_CPUS", "2")
os.environ.setdefault("CURATE_RAY_OBJECT_STORE_MB", "300")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

pytest_plugins = ["tests.reliability_plugin", "tests.clip_fixtures"]


@pytest.fixture(scope="session")
def ray_runtime():
    """A local Ray for the whole session; stage code calls ensure_ray() and finds it running."""
    import ray

    from curate.runtime import ensure_ray

    ensure_ray()
    yield ray
    ray.shutdown()
