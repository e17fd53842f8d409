"""Collects the faults and bad inputs the suite tries, for docs/reliability.md.

A test marked `@pytest.mark.fault(stage, fault, outcome)` documents one fault: what was done to
which stage and what curate does about it. With CURATE_RELIABILITY_OUT=path set, the session writes
the table of every such test and whether it passed; `make reliability-doc` regenerates the doc.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_results: dict[str, dict] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fault(stage, fault, outcome): a fault or bad input this test tries")


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> None:
    marker = item.get_closest_marker("fault")
    if marker is None or call.when != "call":
        return
    stage, fault, outcome = marker.args
    test = item.nodeid.split("[", 1)[0]  # parametrized cases share one row
    row = _results.setdefault(test, {"stage": stage, "fault": fault, "outcome": outcome, "test": test,
                                     "passed": 0, "total": 0})
    row["total"] += 1
    row["passed"] += call.excinfo is None


def render(results: dict[str, dict]) -> str:
    lines = [
        "# Reliability: faults and bad inputs tried",
        "",
        "Generated from the test suite (`make reliability-doc`): each row is a test marked",
        "`@pytest.mark.fault`, what it does to curate, what curate does, and the test's result.",
        "",
        "| stage | fault or bad input | what happens | test | result |",
        "|---|---|---|---|---|",
    ]
    for r in sorted(results.values(), key=lambda r: (r["stage"], r["test"])):
        verdict = "passed" if r["passed"] == r["total"] else "FAILED"
        cases = f" ({r['passed']}/{r['total']} cases)" if r["total"] > 1 else ""
        lines.append(f"| {r['stage']} | {r['fault']} | {r['outcome']} | `{r['test']}` | {verdict}{cases} |")
    return "\n".join(lines) + "\n"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    out = os.environ.get("CURATE_RELIABILITY_OUT")
    if out and _results:
        Path(out).write_text(render(_results), encoding="utf-8")
