"""Ray runtime: a local Ray started on demand, or an existing cluster by address."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import ray


def ensure_ray(address: str | None = None) -> None:
    """Connect to Ray once per process.

    `address` None (and no CURATE_RAY_ADDRESS) starts a new local Ray sized to this machine
    (CURATE_RAY_NUM_CPUS and CURATE_RAY_OBJECT_STORE_MB cap it, e.g. in tests), even when a
    `ray start` cluster or RAY_ADDRESS is around: local means local. "auto" or "ray://host:port"
    joins a cluster, whose workers must have curate installed.
    """
    if ray.is_initialized():
        return
    address = address or os.environ.get("CURATE_RAY_ADDRESS") or None
    kwargs: dict = {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "log_to_driver": True,
        "configure_logging": True,
    }
    if address and address != "local":
        ray.init(address=address, **kwargs)
        return
    if os.environ.get("CURATE_RAY_NUM_CPUS"):
        kwargs["num_cpus"] = int(os.environ["CURATE_RAY_NUM_CPUS"])
    if os.environ.get("CURATE_RAY_OBJECT_STORE_MB"):
        kwargs["object_store_memory"] = int(os.environ["CURATE_RAY_OBJECT_STORE_MB"]) * 1024 * 1024
    # Ray's own worker-dedup and usage prompts are noise on a CLI.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # address="local": ray.init() with no address would join a `ray start` cluster found through
    # RAY_ADDRESS or the address file in Ray's temp dir (and then refuse num_cpus with a traceback).
    with _dashboard_without_cloud_probe():
        ray.init(address="local", **kwargs)


@contextlib.contextmanager
def _dashboard_without_cloud_probe() -> Iterator[None]:
    """Start Ray's dashboard process with a HOME that holds an empty `ray_bootstrap_config.yaml`.

    Even with include_dashboard=False and usage stats off, Ray (2.x) starts its dashboard process
    with the UsageStatsHead module, whose run() calls get_cluster_config_to_report() before it
    checks the opt-out; without ~/ray_bootstrap_config.yaml that function probes the cloud metadata
    services (HTTP to 169.254.169.254, a DNS lookup of metadata.google.internal). With the file
    present it reads the (empty) config and sends nothing. Only the dashboard process gets this
    HOME (with the paths Ray reads from the real one passed on): workers keep the user's. Ray has
    no supported switch for this (docs/run.md).
    """
    try:
        import ray._private.services as services
        from ray._private.ray_constants import PROCESS_TYPE_DASHBOARD
    except ImportError:  # another Ray layout: start as is, the suite's network guard will tell
        yield
        return
    home = tempfile.mkdtemp(prefix="curate-ray-dashboard-home-")
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    with open(os.path.join(home, "ray_bootstrap_config.yaml"), "w", encoding="utf-8") as f:
        f.write("{}\n")
    real_start = services.start_ray_process

    def dashboard_env() -> dict[str, str]:
        env = {"HOME": home}
        # What Ray's processes read from the real HOME: the opt-out `ray disable-usage-stats`
        # writes, and the cluster's auth token (ray.init creates it before the dashboard starts).
        if "RAY_USAGE_STATS_CONFIG_PATH" not in os.environ:
            env["RAY_USAGE_STATS_CONFIG_PATH"] = os.path.expanduser("~/.ray/config.json")
        token = os.path.expanduser("~/.ray/auth_token")
        if not {"RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"} & set(os.environ) and os.path.exists(token):
            env["RAY_AUTH_TOKEN_PATH"] = token
        return env

    def start_ray_process(command: list[str], process_type: str, *args: Any, **kwargs: Any) -> Any:
        if process_type == PROCESS_TYPE_DASHBOARD:
            kwargs["env_updates"] = {**(kwargs.get("env_updates") or {}), **dashboard_env()}
        return real_start(command, process_type, *args, **kwargs)

    services.start_ray_process = start_ray_process
    try:
        yield
    finally:
        services.start_ray_process = real_start


def cluster_cpus() -> int:
    ensure_ray()
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def cluster_gpus() -> int:
    ensure_ray()
    return int(ray.cluster_resources().get("GPU", 0))
