"""Per-host politeness inside one shard task: at most N requests in flight and R requests/s per host."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator


class DeadlineExceeded(Exception):
    """A wait would run past the request's or shard's deadline."""


class HostLimiter:
    """Concurrency (semaphore) and rate (evenly spaced slots) limits, keyed by host name."""

    def __init__(self, concurrency: int, rate: float) -> None:
        self.concurrency = concurrency
        self.interval = 1.0 / rate
        self._lock = threading.Lock()
        self._semaphores: dict[str, threading.BoundedSemaphore] = {}
        self._next_slot: dict[str, float] = {}

    def _semaphore(self, host: str) -> threading.BoundedSemaphore:
        with self._lock:
            sem = self._semaphores.get(host)
            if sem is None:
                sem = self._semaphores[host] = threading.BoundedSemaphore(self.concurrency)
            return sem

    def _reserve_slot(self, host: str, deadline: float) -> float:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot.get(host, now))
            if slot > deadline:
                raise DeadlineExceeded(f"rate limit for {host} leaves no time before the deadline")
            self._next_slot[host] = slot + self.interval
            return slot

    @contextlib.contextmanager
    def request(self, host: str, deadline: float) -> Iterator[None]:
        """Hold one of the host's concurrency slots for the duration of a request."""
        sem = self._semaphore(host)
        if not sem.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise DeadlineExceeded(f"no free connection slot for {host} before the deadline")
        try:
            wait = self._reserve_slot(host, deadline) - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            yield
        finally:
            sem.release()
