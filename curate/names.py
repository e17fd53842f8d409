"""Names that become directories or files in a pool: scorer, subset, spec, dedup, balance and export names.

Each is one path segment, so every user-given name that ends up in a pool path is checked by this
one rule: letters, digits, `_`, `.` and `-`, starting with a letter or digit, at most 128
characters. That excludes `/`, `..`, leading dots (hidden files, `.`), empty names and anything a
shell or an object store would treat specially. Pool.path refuses `..` and absolute parts as
well, so a name that slipped past a check still cannot leave the pool.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

from curate.errors import ConfigError
from curate.yamlconf import short

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
RULE = "one path segment: letters, digits, '_', '.', '-', starting with a letter or digit, at most 128 characters"


def name_problem(value: str) -> str | None:
    """Why `value` cannot be a name, or None when it can."""
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    if NAME_RE.fullmatch(value):
        return None
    return f"not a valid name ({RULE})"


def check_name(value: str, what: str) -> str:
    """`value` if it is a valid name; otherwise a ConfigError `what: 'value' is not a valid name (…)`."""
    problem = name_problem(value)
    if problem:
        raise ConfigError(f"{what}: {short(value)} is {problem}")
    return value


def _validate(value: str) -> str:
    problem = name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


# A pydantic field type for config keys whose value names something in a pool.
PoolName = Annotated[str, AfterValidator(_validate)]
