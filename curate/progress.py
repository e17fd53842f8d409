"""Progress lines and end-of-stage summary tables on the terminal (stderr)."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(stderr=True, highlight=False)


def _fmt_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


class ShardProgress:
    """Shards and samples done, rate and ETA, printed at most every `interval` seconds.

    Plain lines rather than a redrawn bar: they survive log files, CI and Ray's own output.
    """

    def __init__(self, stage: str, total_shards: int, skipped: int = 0, interval: float = 2.0) -> None:
        self.stage = stage
        self.total = total_shards
        self.skipped = skipped
        self.done = 0
        self.failed = 0
        self.samples = 0
        self.start = time.monotonic()
        self.interval = interval
        self._last = 0.0
        self.enabled = True

    def update(self, samples: int = 0, failed: bool = False, force: bool = False) -> None:
        if failed:
            self.failed += 1
        else:
            self.done += 1
        self.samples += samples
        now = time.monotonic()
        if force or now - self._last >= self.interval or self.done + self.failed == self.total:
            self._last = now
            self.print_line()

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        finished = self.done + self.failed
        rate = self.samples / elapsed if elapsed > 0 else 0.0
        eta = (self.total - finished) * elapsed / finished if finished else float("nan")
        eta_s = _fmt_duration(eta) if finished else "?"
        parts = [
            f"[{self.stage}] {finished}/{self.total} shards",
            f"{self.samples:,} samples",
            f"{rate:,.0f} samples/s",
            f"elapsed {_fmt_duration(elapsed)}",
            f"ETA {eta_s}",
        ]
        if self.skipped:
            parts.append(f"{self.skipped} already done")
        if self.failed:
            parts.append(f"{self.failed} FAILED")
        return ", ".join(parts)

    def print_line(self) -> None:
        if self.enabled:
            print(self.line(), file=sys.stderr, flush=True)


def print_counts_table(title: str, counts: Mapping[str, Any], total: int | None = None) -> None:
    """A two- or three-column table of per-reason counts, largest first."""
    table = Table(title=title, title_justify="left")
    table.add_column("reason")
    table.add_column("count", justify="right")
    if total:
        table.add_column("share", justify="right")
    for key, value in sorted(counts.items(), key=lambda kv: (-_num(kv[1]), kv[0])):
        row = [str(key), f"{_num(value):,}"]
        if total:
            row.append(f"{100.0 * _num(value) / total:.1f}%")
        table.add_row(*row)
    console.print(table)


def _num(v: Any) -> float:
    return v if isinstance(v, int | float) else 0
