"""Load YAML while remembering the line of every key, and validate it with pydantic.

Errors must name the file, the line and the key, so a user can fix a config without
reading a traceback. PyYAML's composer keeps node positions; we walk the node tree once
to map each key path to its line, then translate pydantic's error locations through it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from curate.errors import ConfigError

M = TypeVar("M", bound=BaseModel)
KeyPath = tuple[str | int, ...]


def _walk(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            lines[(*path, key)] = key_node.start_mark.line + 1
            _walk(value_node, (*path, key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _walk(item, (*path, index), lines)


def load_yaml(path: str | Path) -> tuple[Any, dict[KeyPath, int]]:
    """Return the parsed document and a map from key path to 1-based line number."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    lines: dict[KeyPath, int] = {}
    if node is not None:
        _walk(node, (), lines)
    return data, lines


def line_of(lines: dict[KeyPath, int], loc: KeyPath) -> int | None:
    """The line of the deepest prefix of `loc` that appears in the document."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def dotted(loc: KeyPath) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def format_validation_error(
    exc: ValidationError, source: str | Path, lines: dict[KeyPath, int], prefix: KeyPath = ()
) -> str:
    """One line per problem: `file:line: key: what was expected (got …)`."""
    messages = []
    for err in exc.errors():
        # pydantic adds the tag of a tagged union / function validator names to loc; drop them
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        full = (*prefix, *loc)
        line = line_of(lines, full)
        where = f"{source}:{line}" if line is not None else str(source)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        got = err.get("input")
        suffix = ""
        if err["type"] not in ("missing", "extra_forbidden") and not isinstance(got, dict | list):
            suffix = f" (got {got!r})"
        messages.append(f"{where}: {dotted(full)}: {msg}{suffix}")
    return "\n".join(messages)


def validate_yaml(model: type[M], path: str | Path) -> M:
    """Load `path` and validate it as `model`, raising ConfigError with file:line messages."""
    data, lines = load_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, path, lines)) from None
