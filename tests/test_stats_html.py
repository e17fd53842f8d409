"""The stats page in a real browser: headless Chromium renders it with no console errors."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from curate.config import StatsConfig
from curate.stats import write_report
from tests.pool_helpers import make_image_pool

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (scripts/system_deps.sh)")
CONSOLE_LINE = re.compile(r":CONSOLE[^\]]*\]\s*(.*)")


def render(page: Path, profile: Path) -> tuple[str, list[str]]:
    """The DOM after scripts ran, and every console message the page produced."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
           "--dump-dom", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # The page never logs on purpose, so any console line (an exception, a failed load) is an error.
    return proc.stdout, [m.group(1) for m in map(CONSOLE_LINE.search, proc.stderr.splitlines()) if m]


def test_console_check_catches_a_broken_page(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>throw new Error('boom')</script></body></html>")
    _, errors = render(page, tmp_path / "profile")
    assert any("boom" in e for e in errors)


def test_stats_page_renders_in_chromium_without_console_errors(tmp_path: Path) -> None:
    data = make_image_pool(tmp_path / "pool", n_shards=2, per_shard=16)
    write_report(data.pool, StatsConfig(grid_samples=3), quiet=True)
    dom, errors = render(Path(data.pool.path("reports/index.html")), tmp_path / "profile")
    assert errors == []
    assert 'data-rendered="true"' in dom  # the page's script ran to the end
    toc = re.search(r'<nav id="toc">(.*?)</nav>', dom, re.S)
    assert toc is not None
    for title in ("Funnel", "Download", "Score distributions", "Language mix", "Caption lengths", "Image sizes",
                  "Duplicates", "Filter conditions", "Samples around each threshold", "Balancing"):
        assert f">{title}</a>" in toc.group(1), title
    assert ">Exports (absent)</a>" in toc.group(1)  # nothing exported in this pool, and the page says so
    assert dom.count("<svg") >= 10 and dom.count("data:image/jpeg;base64,") == 6
