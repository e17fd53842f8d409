"""Ray runtime: a local Ray started on demand, or an existing cluster by address."""

from __future__ import annotations

import logging
import os

import ray


def ensure_ray(address: str | None = None) -> None:
    """Connect to Ray once per process.

    `address` None starts a local Ray sized to this machine (CURATE_RAY_NUM_CPUS and
    CURATE_RAY_OBJECT_STORE_MB cap it, e.g. in tests); "auto" or "ray://host:port" joins a
    cluster, whose workers must have curate installed.
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
    if address:
        ray.init(address=address, **kwargs)
        return
    if os.environ.get("CURATE_RAY_NUM_CPUS"):
        kwargs["num_cpus"] = int(os.environ["CURATE_RAY_NUM_CPUS"])
    if os.environ.get("CURATE_RAY_OBJECT_STORE_MB"):
        kwargs["object_store_memory"] = int(os.environ["CURATE_RAY_OBJECT_STORE_MB"]) * 1024 * 1024
    # Ray's own worker-dedup and usage prompts are noise on a CLI.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    ray.init(**kwargs)


def cluster_cpus() -> int:
    ensure_ray()
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def cluster_gpus() -> int:
    ensure_ray()
    return int(ray.cluster_resources().get("GPU", 0))
