"""Nothing the suite starts reaches past this machine, and a plain local start stays local.

tests/netguard/sitecustomize.py records every attempt from any Python process of the suite (Ray's
included); `make test` also runs the suite in a loopback-only network namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import netguard_attempts

REPO = Path(__file__).resolve().parents[1]


def _wait_for(predicate, timeout: float, what: str) -> None:
    """Wait for an event the code under test signals (a file, a log line); the timeout only bounds a hang."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def test_network_guard_refuses_and_records_off_machine_connections(tmp_path: Path) -> None:
    """The guard itself: a child process's connect to a cloud metadata address fails and is logged."""
    log = tmp_path / "attempts.jsonl"
    code = ("import socket\n"
            "s = socket.socket()\n"
            "try:\n    s.connect(('169.254.169.254', 80))\nexcept OSError as e:\n    print('refused', e.errno)\n"
            "try:\n    socket.getaddrinfo('metadata.google.internal', 80)\nexcept OSError:\n    print('no lookup')\n"
            "t = socket.socket(); t.bind(('127.0.0.1', 0)); t.listen(); u = socket.socket()\n"
            "u.connect(t.getsockname()); print('loopback ok')\n")
    env = {**os.environ, "CURATE_NETGUARD_LOG": str(log)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["refused 101", "no lookup", "loopback ok"]
    attempts = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(a["kind"], a["event"], a["target"]) for a in attempts] == [
        ("connect", "socket.connect", "('169.254.169.254', 80)"),
        ("lookup", "socket.getaddrinfo", "'metadata.google.internal'")]


@pytest.mark.fault("runtime", "a local Ray start: Ray's dashboard process probes cloud metadata services "
                   "(169.254.169.254, metadata.google.internal) even with usage stats off",
                   "curate starts the dashboard with an empty ray_bootstrap_config.yaml, so nothing is sent; "
                   "the suite fails on any off-machine connection")
def test_local_ray_start_sends_nothing_off_machine(ray_runtime) -> None:
    from ray._private import worker

    node = worker._global_node
    assert node is not None, "the session's Ray was not started by this process"
    log = Path(node.get_logs_dir_path()) / "dashboard.log"
    # UsageStatsHead logs this right after get_cluster_config_to_report(), the call that probes.
    _wait_for(lambda: log.exists() and "Usage reporting is disabled" in log.read_text(errors="replace"), 180,
              "Ray's dashboard to finish its usage-stats start")
    ray_processes = [a for a in netguard_attempts() if "/ray/" in " ".join(a["argv"])]
    assert netguard_attempts("connect") == [] and ray_processes == []


def test_suite_runs_in_a_loopback_only_network_namespace() -> None:
    """`make test` sets CURATE_TEST_NETNS=1 inside `unshare -n`; there, only `lo` may exist."""
    if os.environ.get("CURATE_TEST_NETNS") != "1":
        pytest.skip("not run through scripts/hermetic.sh (`make test`), which sets CURATE_TEST_NETNS=1")
    assert [name for _, name in socket.if_nameindex()] == ["lo"]


def _start_cluster(ray_tmp: str) -> tuple[subprocess.Popen, str]:
    """A `ray start --head` cluster like a user's, using the same Ray temp dir as the curate run."""
    home = Path(ray_tmp) / "home"
    home.mkdir()
    (home / "ray_bootstrap_config.yaml").write_text("{}\n")  # keep its dashboard off cloud metadata
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "HOME": str(home), "RAY_AUTH_MODE": "disabled",
           # A `ray start` cluster sends a "usage stats disabled" ping; aim it at a closed local port.
           "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/"}
    ray_bin = str(Path(sys.executable).with_name("ray"))
    with socket.socket() as free:  # `ray start` takes 8265 with no retries; the suite's Ray may hold it
        free.bind(("127.0.0.1", 0))
        dashboard_port = free.getsockname()[1]
    log = Path(ray_tmp) / "ray-start.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([ray_bin, "start", "--head", "--block", "--num-cpus=3", "--port=0",
                                 "--include-dashboard=false", "--disable-usage-stats",
                                 f"--dashboard-port={dashboard_port}"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    address_file = Path(ray_tmp) / "ray" / "ray_current_cluster"
    _wait_for(lambda: (address_file.exists() and address_file.read_text().strip()) or proc.poll() is not None, 180,
              "`ray start --head` to write its address file")
    assert proc.poll() is None, log.read_text()[-3000:]
    return proc, address_file.read_text().strip()


def _curate_ray(ray_tmp: str, address: str | None, num_cpus: str | None) -> subprocess.CompletedProcess:
    """Connect the way every curate stage does (runtime.ensure_ray) and say which cluster it got."""
    code = ("import json, ray\nfrom curate.runtime import ensure_ray\n"
            f"ensure_ray({address!r})\n"
            "print(json.dumps({'gcs': ray.get_runtime_context().gcs_address,"
            " 'cpus': ray.cluster_resources().get('CPU')}))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CURATE_RAY_NUM_CPUS", "RAY_ADDRESS")}
    env |= {"RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "disabled"}
    if num_cpus:
        env["CURATE_RAY_NUM_CPUS"] = num_cpus
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          cwd=REPO)


@pytest.mark.fault("runtime", "a `ray start` cluster already running on the machine, a plain local run "
                   "(with and without CURATE_RAY_NUM_CPUS)",
                   "curate starts its own local Ray (honouring CURATE_RAY_NUM_CPUS), never joins it; "
                   "`--ray-address auto` joins it")
def test_plain_start_does_not_join_a_ray_start_cluster() -> None:
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths live under it
    proc, cluster = _start_cluster(ray_tmp)
    try:
        for num_cpus, expected_cpus in (("1", 1.0), (None, None)):
            out = _curate_ray(ray_tmp, None, num_cpus)
            assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
            got = json.loads(out.stdout.strip().splitlines()[-1])
            assert got["gcs"] != cluster, "a plain local run joined the `ray start` cluster"
            if expected_cpus is not None:
                assert got["cpus"] == expected_cpus
        joined = _curate_ray(ray_tmp, "auto", None)
        assert joined.returncode == 0, joined.stderr[-3000:]
        got = json.loads(joined.stdout.strip().splitlines()[-1])
        assert got["gcs"] == cluster and got["cpus"] == 3.0
    finally:
        # Only this test's cluster: its own process group (never `ray stop`, which stops every Ray here).
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)
