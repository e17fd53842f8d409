"""A per-shard-task budget of decode memory shared by the fetch threads.

Each image is admitted with its estimated peak bytes (from its header, before any decode) while the
images already admitted leave room for it; an image bigger than the whole budget is admitted only
when nothing else is held, so it runs alone. Admission is first come, first served: a large image
waiting for room is not overtaken by a stream of small ones. The task's decode memory is thereby
at most max(budget, largest single image), whatever thread_count is.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager


class MemoryBudget:
    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self.in_use = 0
        self.peak = 0  # highest sum of admitted estimates, for tests and benchmarks
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()

    @contextmanager
    def hold(self, cost: int) -> Iterator[None]:
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            while self._queue[0] is not ticket or (self.in_use > 0 and self.in_use + cost > self.limit):
                self._cond.wait()
            self._queue.popleft()
            self.in_use += cost
            self.peak = max(self.peak, self.in_use)
            self._cond.notify_all()  # the next in line may fit too
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= cost
                self._cond.notify_all()
