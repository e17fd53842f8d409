"""Suite-wide settings: a small local Ray shared by every test in the session, and the network guard."""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from pathlib import Path

# Set before anything imports ray: a 2-core CI machine must not start more than it has.
os.environ.setdefault("CURATE_RAY_NUM_CPUS", "2")
os.environ.setdefault("CURATE_RAY_OBJECT_STORE_MB", "300")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Every Python process the suite starts (this one, `curate` subprocesses, Ray's workers and
# dashboard) refuses and records connections past this machine: tests/netguard/sitecustomize.py.
NETGUARD_DIR = Path(__file__).resolve().parent / "netguard"
if not os.environ.get("CURATE_NETGUARD_LOG"):
    os.environ["CURATE_NETGUARD_LOG"] = str(Path(tempfile.mkdtemp(prefix="curate-netguard-")) / "attempts.jsonl")
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(NETGUARD_DIR), *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)])
_spec = importlib.util.spec_from_file_location("curate_netguard", NETGUARD_DIR / "sitecustomize.py")
assert _spec is not None and _spec.loader is not None
_spec.loader.exec_module(importlib.util.module_from_spec(_spec))

import pytest  # noqa: E402 - after the environment above, which Ray reads at import

pytest_plugins = ["tests.reliability_plugin", "tests.clip_fixtures"]


def netguard_attempts(kind: str | None = None) -> list[dict]:
    """What suite processes tried so far past this machine: "connect"ions and name "lookup"s (both refused)."""
    path = Path(os.environ["CURATE_NETGUARD_LOG"])
    if not path.exists():
        return []
    attempts = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [a for a in attempts if kind is None or a["kind"] == kind]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    def describe(attempts: list[dict]) -> str:
        return "\n".join(f"  pid {a['pid']} {' '.join(a['argv'])}: {a['event']} {a['target']}" for a in attempts)

    lookups = netguard_attempts("lookup")
    if lookups:  # refused, so nothing was sent; the download tests and the demo try dead hosts on purpose
        print(f"\nnetwork guard: refused {len(lookups)} name lookup(s) of other hosts:\n{describe(lookups)}")
    connects = netguard_attempts("connect")
    if connects:
        print(f"\nnetwork guard: {len(connects)} connection attempt(s) past this machine during the suite:\n"
              f"{describe(connects)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def ray_runtime():
    """A local Ray for the whole session; stage code calls ensure_ray() and finds it running."""
    import ray

    from curate.runtime import ensure_ray

    ensure_ray()
    yield ray
    ray.shutdown()


@pytest.fixture
def local_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run stages' passes in this process (CURATE_EXECUTOR=local) instead of as Ray tasks."""
    monkeypatch.setenv("CURATE_EXECUTOR", "local")
