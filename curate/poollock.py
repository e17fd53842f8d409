"""One writer per stage per pool: a lock object with owner, host and heartbeat, on any fsspec store.

`_locks/<stage>.json` holds {token, host, pid, command, since, heartbeat}. It is created with an
exclusive create (a hard link of a fully written file on local disks, a conditional PUT,
If-None-Match: *, on S3), so of two runs starting together exactly one gets it; the other stops
with one line naming the holder. While a run holds the lock, a thread rewrites `heartbeat` every
`stale_after / 10` seconds and checks the token is still its own.

A lock is stale, and is taken over with a message, when its heartbeat is older than `stale_after`
seconds (CURATE_LOCK_STALE_SECONDS, default 300), or at once when its holder ran on this host and
that process is gone (a crashed or killed run). Taking over deletes the stale object only if it
still holds the token that was judged stale, then creates anew exclusively. Stores without
conditional deletes leave a window of milliseconds in which two runs taking over the same stale
lock at the same instant could both delete; the heartbeat thread then finds the other token and
the run that lost fails at its end with one line instead of reporting success.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from curate.errors import PoolError
from curate.pool import TMP_MARK, Pool
from curate.progress import console

LOCK_DIR = "_locks"
STALE_ENV = "CURATE_LOCK_STALE_SECONDS"
DEFAULT_STALE_S = 300.0



@dataclass
class LockInfo:
    token: str
    host: str
    pid: int
    command: str
    since: float
    heartbeat: float

    def describe(self) -> str:
        return (f"pid {self.pid} on host {self.host} ({self.command!r}) since {_utc(self.since)}, "
                f"last heartbeat {max(0.0, time.time() - self.heartbeat):.0f}s ago")


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _command() -> str:
    """What the holder runs, for the refusal message: `curate download …` (first words only)."""
    words = list(sys.argv[:4]) or ["python"]
    words[0] = os.path.basename(words[0])
    if words[0] in ("__main__.py", "cli.py"):
        words[0] = "curate"
    return " ".join(words)[:200]


def stale_after_default() -> float:
    raw = os.environ.get(STALE_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_STALE_S
    except ValueError:
        raise PoolError(f"{STALE_ENV}={raw!r}: expected seconds (a number > 0)") from None
    if value <= 0:
        raise PoolError(f"{STALE_ENV}={raw!r}: expected seconds (a number > 0)")
    return value


class StageLock:
    """Exclusive right to write one stage of one pool; use as a context manager."""

    def __init__(self, pool: Pool, stage: str, *, stale_after: float | None = None,
                 heartbeat_every: float | None = None, quiet: bool = False) -> None:
        self.pool = pool
        self.stage = stage
        self.rel = posixpath.join(LOCK_DIR, f"{stage.replace('/', '_')}.json")
        self.stale_after = stale_after if stale_after is not None else stale_after_default()
        self.heartbeat_every = heartbeat_every if heartbeat_every is not None else max(1.0, self.stale_after / 10)
        self.quiet = quiet
        self.info = LockInfo(token=uuid.uuid4().hex, host=socket.gethostname(), pid=os.getpid(),
                             command=_command(), since=time.time(), heartbeat=time.time())
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ state on the store
    def read(self) -> LockInfo | None:
        """The lock as stored; None when there is none. A damaged lock object reads as a stale one."""
        try:
            raw = self.pool.read_bytes(self.rel)
        except FileNotFoundError:
            return None
        try:
            doc = json.loads(raw)
            return LockInfo(token=str(doc["token"]), host=str(doc["host"]), pid=int(doc["pid"]),
                            command=str(doc.get("command", "")), since=float(doc["since"]),
                            heartbeat=float(doc["heartbeat"]))
        except (ValueError, KeyError, TypeError):
            return LockInfo(token=f"damaged:{raw[:64]!r}", host="?", pid=-1, command="?", since=0.0, heartbeat=0.0)

    def _payload(self) -> bytes:
        return (json.dumps(asdict(self.info), indent=2, sort_keys=True) + "\n").encode()

    def _create_exclusive(self) -> bool:
        """Write the lock only if none exists; True if this call created it."""
        final = self.pool.path(self.rel)
        self.pool.fs.makedirs(posixpath.dirname(final), exist_ok=True)
        if self.pool.is_local:
            # A hard link of a complete file: atomic, fails if the name exists, never half-written.
            tmp = f"{final}{TMP_MARK}{uuid.uuid4().hex[:12]}"
            with open(tmp, "wb") as fh:
                fh.write(self._payload())
            try:
                os.link(tmp, final)
                return True
            except FileExistsError:
                return False
            except OSError:  # a filesystem without hard links: O_EXCL is atomic too
                return self._create_local_excl(final)
            finally:
                os.unlink(tmp)
        try:
            # s3fs sends If-None-Match: * (atomic on S3); fsspec's generic fallback checks first.
            self.pool.fs.pipe_file(final, self._payload(), mode="create")
        except FileExistsError:
            return False
        # Read back: on a store whose create is not atomic, the last of two writers wins and the
        # other sees a foreign token here.
        held = self.read()
        return held is not None and held.token == self.info.token

    def _create_local_excl(self, final: str) -> bool:
        try:
            fd = os.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as fh:
            fh.write(self._payload())
        return True

    def stale_reason(self, held: LockInfo) -> str | None:
        """Why `held` may be taken over, or None while its owner is alive."""
        if held.token.startswith("damaged:"):
            return f"{self.pool.uri(self.rel)} is damaged"
        age = time.time() - held.heartbeat
        if age > self.stale_after:
            return f"its heartbeat is {age:.0f}s old (stale after {self.stale_after:.0f}s, {STALE_ENV})"
        if held.host == self.info.host and held.pid != self.info.pid and not _process_alive(held.pid):
            return f"process {held.pid} on this host ({held.host}) is gone"
        return None

    # ------------------------------------------------------------------ acquire / release
    def acquire(self) -> None:
        for _ in range(5):
            self.info.since = self.info.heartbeat = time.time()
            if self._create_exclusive():
                break
            held = self.read()
            if held is None:
                continue  # released between our attempt and the read: try again
            reason = self.stale_reason(held)
            if reason is None:
                raise PoolError(
                    f"{self.pool.url}: stage {self.stage} is locked by {held.describe()}; one writer per stage "
                    f"per pool: wait for it, or if that run is dead delete {self.pool.uri(self.rel)}"
                )
            if not self.quiet:
                console.print(f"[{self.stage}] taking over the lock of {held.describe()}: {reason}",
                              markup=False, highlight=False, soft_wrap=True)
            again = self.read()
            if again is not None and again.token == held.token:
                with contextlib.suppress(FileNotFoundError):
                    self.pool.fs.rm(self.pool.path(self.rel))
        else:
            raise PoolError(f"{self.pool.uri(self.rel)}: could not take the lock of stage {self.stage} "
                            "(other runs keep taking it); try again")
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"lock-{self.stage}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_every):
            self.heartbeat()
            if self.lost:
                return

    def heartbeat(self) -> None:
        """Refresh the heartbeat if the lock is still ours; otherwise record who took it."""
        try:
            held = self.read()
            if held is None or held.token != self.info.token:
                self.lost = held.describe() if held is not None else "nobody (the lock object was deleted)"
                return
            self.info.heartbeat = time.time()
            self.pool.write_bytes(self.rel, self._payload())
        except Exception as exc:  # a store hiccup: the next beat tries again, well within stale_after
            if not self.quiet:
                console.print(f"[{self.stage}] lock heartbeat failed: {type(exc).__name__}: {exc}",
                              markup=False, highlight=False, soft_wrap=True)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        held = self.read()
        if held is not None and held.token == self.info.token:
            with contextlib.suppress(FileNotFoundError):
                self.pool.fs.rm(self.pool.path(self.rel))
        elif self.lost is None:
            self.lost = held.describe() if held is not None else "nobody (the lock object was deleted)"

    def __enter__(self) -> StageLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.release()
        if exc_type is None and self.lost:
            raise PoolError(
                f"{self.pool.url}: the lock of stage {self.stage} was taken over during this run (now held by "
                f"{self.lost}); its outputs may mix with that run's: run the stage again with --rerun once "
                "that run is over"
            )

