"""Load YAML while remembering the line of every key, and validate it with pydantic.

Errors must name the file, the line and the key, so a user can fix a config without
reading a traceback. PyYAML's composer keeps node positions; we walk the node tree once
to map each key path to its line, then translate pydantic's error locations through it.

A config or spec may come from someone else, so the loader bounds what a small file can cost:
documents over MAX_YAML_BYTES, nesting deeper than MAX_YAML_DEPTH, aliases that would expand to more
than MAX_ALIAS_NODES nodes in all (a "billion laughs" file is a few hundred bytes) and duplicate keys
are refused with one line naming the file and line. Aliases are counted where they are composed,
before anything (the key-path walk, pydantic, an error message) could expand them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from curate.errors import ConfigError

M = TypeVar("M", bound=BaseModel)
KeyPath = tuple[str | int, ...]

MAX_YAML_BYTES = 4 * 1024 * 1024  # ~6 s for PyYAML; list thousands of inputs with a glob or crawl id instead
MAX_YAML_DEPTH = 64
MAX_ALIAS_NODES = 10_000  # nodes all aliases of a document may add when expanded
MAX_SHOWN_CHARS = 80  # of a value repeated in an error message
_MERGE_TAG = "tag:yaml.org,2002:merge"


def short(value: Any, limit: int = MAX_SHOWN_CHARS) -> str:
    """repr(value) on one line, cut to `limit` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses alias bombs, deep nesting and duplicate keys (see the module docstring)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._alias_nodes = 0
        # Expanded node count of every node composed so far; a node still open (an alias to one of
        # its own ancestors) is absent.
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None:
                size = self._sizes.get(id(node))
                if size is None:
                    raise yaml.composer.ComposerError(
                        None, None, f"alias *{event.anchor[:40]} refers to a node that contains it",
                        event.start_mark)
                self._alias_nodes += size
                if self._alias_nodes > MAX_ALIAS_NODES:
                    raise yaml.composer.ComposerError(
                        None, None, f"aliases expand to more than {MAX_ALIAS_NODES} nodes (an alias bomb?)",
                        event.start_mark)
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", self.peek_event().start_mark)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(node, yaml.MappingNode):
            size = 1 + sum(self._sizes.get(id(k), 1) + self._sizes.get(id(v), 1) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            size = 1 + sum(self._sizes.get(id(item), 1) for item in node.value)
        else:
            size = 1
        self._sizes[id(node)] = size
        return node  # type: ignore[no-any-return]

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                    continue  # merged keys may be overridden; non-scalar keys are refused as unhashable
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {short(key)} (first on line {seen[key] + 1})",
                        key_node.start_mark)
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


def parse_yaml(text: str) -> tuple[Any, yaml.Node | None]:
    """(data, node tree) of one YAML document, within the limits above; raises yaml.YAMLError."""
    if len(text) > MAX_YAML_BYTES:
        # a str of more characters than the byte cap is over it in UTF-8 too
        raise yaml.YAMLError(f"larger than {MAX_YAML_BYTES // (1024 * 1024)} MiB")
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return data, node


def yaml_error_line(exc: yaml.YAMLError, where: str | Path) -> str:
    """`where[:line]: invalid YAML: problem`, one line."""
    mark = getattr(exc, "problem_mark", None)
    at = f"{where}:{mark.line + 1}" if mark is not None else str(where)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{at}: invalid YAML: {one_line(problem)}"


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
        with path.open("rb") as fh:
            raw = fh.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({one_line(exc.strerror or type(exc).__name__)})") from None
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_YAML_BYTES // (1024 * 1024)} MiB; not read")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    try:
        data, node = parse_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error_line(exc, path)) from None
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
        loc = _yaml_loc(tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))),
                        prefix, lines)
        full = (*prefix, *loc)
        line = line_of(lines, full)
        where = f"{source}:{line}" if line is not None else str(source)
        msg = one_line(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        got = err.get("input")
        suffix = ""
        if err["type"] not in ("missing", "extra_forbidden") and not isinstance(got, dict | list):
            suffix = f" (got {short(got)})"
        messages.append(f"{where}: {one_line(dotted(full), 200)}: {msg}{suffix}")
    return "\n".join(messages)


def _yaml_loc(loc: KeyPath, prefix: KeyPath, lines: dict[KeyPath, int]) -> KeyPath:
    """`loc` without the tags of tagged unions (`scorers[0].clip.name` is `scorers[0].name` in the file)."""
    kept: list[str | int] = []
    for i, part in enumerate(loc):
        here = (*prefix, *kept)
        if (isinstance(part, str) and i + 1 < len(loc) and (*here, part) not in lines
                and (*here, loc[i + 1]) in lines):
            continue
        kept.append(part)
    return tuple(kept)


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
