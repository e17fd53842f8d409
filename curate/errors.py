"""Errors a user can act on. The CLI prints them as one line and exits non-zero."""

from __future__ import annotations


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line errors."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


class CurateError(Exception):
    """Base class for errors that are the user's input, not a bug in curate."""


class ConfigError(CurateError):
    """A pipeline config, filter spec or metadata file is malformed."""


class PoolError(CurateError):
    """A pool is missing a table a stage needs, or holds something unexpected."""


class ModelNotFoundError(CurateError):
    """A model is not available offline; the message says what to download and where."""


class StageFailed(CurateError):
    """Some shards of a stage still failed after their retries."""

    def __init__(self, stage: str, failed: dict[str, str]) -> None:
        self.stage = stage
        self.failed = failed
        names = ", ".join(sorted(failed)[:10]) + (" …" if len(failed) > 10 else "")
        super().__init__(f"{stage}: {len(failed)} shard(s) failed: {names}")
