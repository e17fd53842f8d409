"""A per-shard-task budget of decode memory shared by the fetch threads.

Each image is admitted with its estimated peak bytes (from its header, before any decode) while the
images already admitted leave room for it; an image bigger than the whole budget is admitted only
when nothing else is held, so it runs alone. Admission is first come, first served: a large image
waiting for room is not overtaken by a stream of small ones. The task's decode memory is thereby
at most max(budget, largest single image), whatever thread_count is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
MMAP_THRESHOLD = 1 << 20


def return_freed_images_to_the_os() -> bool:
    """Serve allocations of 1 MiB and more with their own mmap, so freeing them returns them to the OS.

    glibc otherwise raises its mmap threshold after the first large free (up to 32 MiB) and keeps
    freed decode buffers in per-thread arenas (up to 8 per core): with 64 fetch threads the process
    then holds many images' worth of freed memory, whatever the budget admits at once (a test with
    64 hostile 1-megapixel images peaked at 230 MiB instead of 25). A fixed threshold turns that
    adjustment off. A no-op returning False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False


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
