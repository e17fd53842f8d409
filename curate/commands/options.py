"""Command-line options generated from the config section models, so each option is written once.

A stage command declares which section model it runs (`@section_options(ExportConfig, "export")`)
and receives the validated section as its `section` argument. Each scalar, literal, list or mapping
key of the model becomes a flag (`samples_per_shard` → `--samples-per-shard`, help from the Field
description), plus `--config PIPELINE.yaml` and a generic `--set KEY=VALUE` for any key, nested ones
too. The section is built in this order: the model's defaults, the `--config` file's section, the
flags given, then the `--set`s; flags left out change nothing. docs/config.md is generated from the
same models and the registry below (curate/docs_config.py).
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from curate.commands.common import options_error
from curate.errors import ConfigError

M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])

SCALARS = (bool, int, float, str)
SET_FLAG = "--set"
CONFIG_FLAGS = ("--config", "-c")
_CONFIG_PARAM = "opt__config"
_SET_PARAM = "opt__set"
_FIELD_PREFIX = "opt_"


@dataclass(frozen=True)
class FieldFlag:
    """The flag of one section key."""

    key: str
    names: tuple[str, ...]  # what a user types: ("--subset", "-s"); a bool's first name switches it on
    off: str | None  # a bool's off-switch
    kind: Literal["scalar", "list", "mapping"]
    param: str  # the Python parameter name typer sees

    @property
    def all_names(self) -> tuple[str, ...]:
        return (*self.names, *([self.off] if self.off else []))


@dataclass
class SectionCommand:
    """What `section_options` generated for one command: read by docs/config.md's generator and its tests."""

    section: str
    model: type[BaseModel]
    command: str  # `curate <command>`
    flags: dict[str, FieldFlag] = field(default_factory=dict)  # key -> its flag
    set_only: list[str] = field(default_factory=list)  # keys only --set reaches (lists of models, …)
    skipped: dict[str, str] = field(default_factory=dict)  # key -> how the command sets it instead


SECTION_COMMANDS: dict[str, SectionCommand] = {}


def _strip_annotated(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _without_none(tp: Any) -> Any:
    """`X | None` → X; any other type unchanged (a union of two real types stays a union)."""
    tp = _strip_annotated(tp)
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _strip_annotated(args[0])
    return tp


def _is_scalar(tp: Any) -> bool:
    tp = _strip_annotated(tp)
    if get_origin(tp) is Literal:
        return all(isinstance(v, str) for v in get_args(tp))
    return tp in SCALARS


def flag_kind(info: FieldInfo) -> Literal["scalar", "list", "mapping"] | None:
    """How a key is given on the command line; None: only through --set (lists of models, unions, …)."""
    tp = _without_none(info.annotation)
    if _is_scalar(tp):
        return "scalar"
    origin = get_origin(tp)
    if origin is list and _is_scalar(get_args(tp)[0]):
        return "list"
    if origin is dict and _strip_annotated(get_args(tp)[0]) is str and _is_scalar(get_args(tp)[1]):
        return "mapping"
    return None


def format_default(info: FieldInfo) -> str | None:
    """The default as YAML would write it; None when the key is required."""
    if info.is_required():
        return None
    value = info.get_default(call_default_factory=True)
    return yaml_scalar(value)


def yaml_scalar(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(yaml_scalar(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_scalar(v)}" for k, v in value.items()) + "}"
    return str(value)


def description(model: type[BaseModel], key: str) -> str | None:
    """A key's description; a subclass that only changes a default keeps its base class's description."""
    for cls in model.__mro__:
        fields = getattr(cls, "model_fields", None)
        if isinstance(fields, dict) and key in fields and fields[key].description:
            return str(fields[key].description)
    return None


def _help(model: type[BaseModel], key: str, info: FieldInfo, kind: str) -> str:
    text = description(model, key) or key.replace("_", " ")
    first = text.split(" ", 1)[0]
    if first.isalpha() and first.islower():  # not `img2dataset`, `jpg/webp` or a code span
        text = text[0].upper() + text[1:]
    if kind == "list":
        text += " (repeatable; adds to the list)"
    elif kind == "mapping":
        text += " (repeatable KEY=VALUE; adds to the mapping)"
    default = format_default(info)
    # typer would show the parameter's default, None; the key's default is what applies.
    return f"{text}. [default: {default if default is not None else 'required'}]"


def _cli_annotation(info: FieldInfo, kind: str) -> Any:
    tp = _without_none(info.annotation)
    if kind == "scalar":
        return _strip_annotated(tp) | None  # type: ignore[operator]
    if kind == "list":
        return list[_strip_annotated(get_args(tp)[0])] | None  # type: ignore[misc]
    return list[str] | None


def section_options(
    model: type[M],
    section: str,
    *,
    aliases: dict[str, tuple[str, ...]] | None = None,
    off: dict[str, str] | None = None,
    skip: dict[str, str] | None = None,
    exclusive: Iterable[tuple[str, ...]] = (),
) -> Callable[[F], F]:
    """Give a stage command one flag per key of `model`, `--config` and `--set`; it gets `section: M`.

    aliases: extra names of a key's flag (a short `-s`, or an older spelling users rely on);
    off: a bool key's off-switch instead of `--no-KEY`; skip: keys the command sets another way
    (key -> how, for docs/config.md); exclusive: groups of keys of which setting one from the command
    line clears the others (balance's `t` and `tail_fraction`).
    """
    aliases, off, skip = aliases or {}, off or {}, skip or {}
    groups = [tuple(g) for g in exclusive]
    panel = f"Options of the `{section}:` section"

    def decorate(func: F) -> F:
        spec = SectionCommand(section=section, model=model, command=section, skipped=dict(skip))
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
               for p in inspect.signature(func, eval_str=True).parameters.values() if p.name != "section"]
        taken = {*CONFIG_FLAGS, SET_FLAG, *(n for p in own for n in _option_names(p.annotation))}
        generated: list[inspect.Parameter] = []
        for key, info in model.model_fields.items():
            if key in skip:
                continue
            kind = flag_kind(info)
            if kind is None:
                spec.set_only.append(key)
                continue
            primary = "--" + key.replace("_", "-")
            names = (primary, *aliases.get(key, ()))
            is_bool = kind == "scalar" and _without_none(info.annotation) is bool
            off_name = off.get(key, "--no-" + key.replace("_", "-")) if is_bool else None
            flag = FieldFlag(key, names, off_name, kind, _FIELD_PREFIX + key)
            clash = taken.intersection(flag.all_names)
            if clash:
                raise ValueError(f"{func.__name__}: flag {sorted(clash)} of key {key!r} is also a command option")
            taken.update(flag.all_names)
            decls = (f"{primary}/{off_name}", *names[1:]) if is_bool else names
            option = typer.Option(*decls, help=_help(model, key, info, kind), show_default=False,
                                  rich_help_panel=panel)
            generated.append(inspect.Parameter(flag.param, inspect.Parameter.KEYWORD_ONLY, default=None,
                                               annotation=Annotated[_cli_annotation(info, kind), option]))
            spec.flags[key] = flag
        config_opt = typer.Option(*CONFIG_FLAGS, help=f"Pipeline YAML; this command reads its `{section}:` "
                                  "section (the flags below override it).")
        set_opt = typer.Option(
            SET_FLAG, metavar="KEY=VALUE", rich_help_panel=panel,
            help=f"Set any key of the `{section}:` section, nested ones too (`KEY.SUBKEY=VALUE`, `LIST.0.KEY=VALUE`); "
            "VALUE is read as YAML (`8`, `true`, `null`, `[a, b]`, `{k: v}`) and replaces the key's value; "
            "applied after --config and the flags (repeatable). Keys: docs/config.md.")
        params = [
            *own,
            inspect.Parameter(_CONFIG_PARAM, inspect.Parameter.KEYWORD_ONLY, default=None,
                              annotation=Annotated[Path | None, config_opt]),
            *generated,
            inspect.Parameter(_SET_PARAM, inspect.Parameter.KEYWORD_ONLY, default=None,
                              annotation=Annotated[list[str] | None, set_opt]),
        ]

        def command(**kwargs: Any) -> Any:
            config = kwargs.pop(_CONFIG_PARAM)
            sets = kwargs.pop(_SET_PARAM) or []
            given = {key: kwargs.pop(flag.param) for key, flag in spec.flags.items()}
            built = build_section(model, section, config, given={k: v for k, v in given.items() if v is not None},
                                  sets=sets, exclusive=groups)
            return func(section=built, **kwargs)

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        for attr in ("__name__", "__qualname__", "__module__", "__doc__"):
            setattr(command, attr, getattr(func, attr))
        command.section_command = spec  # type: ignore[attr-defined]
        SECTION_COMMANDS[section] = spec
        return command  # type: ignore[return-value]

    return decorate


def _option_names(annotation: Any) -> list[str]:
    names: list[str] = []
    for meta in getattr(annotation, "__metadata__", ()):
        # Inside Annotated, typer keeps an option's first name where a default would go.
        first = getattr(meta, "default", None)
        for decl in [*([first] if isinstance(first, str) else []), *(getattr(meta, "param_decls", ()) or ())]:
            names.extend(part for part in str(decl).split("/") if part.startswith("-"))
    return names


def build_section(
    model: type[M],
    section: str,
    config: str | Path | None,
    given: dict[str, Any] | None = None,
    sets: Iterable[str] = (),
    exclusive: Iterable[tuple[str, ...]] = (),
) -> M:
    """Defaults < the `section` of the pipeline YAML `config` < flags `given` (key -> value) < `sets`."""
    from curate.config import load_pipeline

    loaded = getattr(load_pipeline(config), section) if config is not None else None
    data: dict[str, Any] = (loaded or model()).model_dump()
    given = given or {}
    touched = set(given)
    for key, value in given.items():
        kind = flag_kind(model.model_fields[key])
        if kind == "list":
            data[key] = [*(data.get(key) or []), *value]
        elif kind == "mapping":
            data[key] = {**(data.get(key) or {}), **_pairs(key, value)}
        else:
            data[key] = value
    assigned = [parse_set(item) for item in sets]
    touched.update(str(path[0]) for path, _, _ in assigned)
    for group in exclusive:
        # A threshold given on the command line replaces the config's, whichever key either used.
        chosen = touched.intersection(group)
        for key in group:
            if chosen and key not in chosen:
                data[key] = model.model_fields[key].get_default(call_default_factory=True)
    for path, value, _ in assigned:
        assign(data, path, value, section)
    return validate_options(model, data, section, assigned)


def _pairs(key: str, items: Iterable[str]) -> dict[str, str]:
    flag = "--" + key.replace("_", "-")
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE")
        out[name] = value
    return out


def parse_set(item: str) -> tuple[tuple[str | int, ...], Any, str]:
    """`a.b.0.c=VALUE` → (('a', 'b', 0, 'c'), VALUE read as YAML, VALUE as typed)."""
    import yaml

    from curate.yamlconf import one_line, parse_yaml

    key, sep, raw = item.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"{SET_FLAG} {item!r}: expected KEY=VALUE (KEY may be dotted: a.b, list.0.c)")
    try:
        value, _ = parse_yaml(raw)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{SET_FLAG} {key}: invalid YAML value {raw!r}: {one_line(problem)}") from None
    return tuple(int(p) if p.isdigit() else p for p in parts), value, raw


def assign(data: dict[str, Any], path: tuple[str | int, ...], value: Any, section: str) -> None:
    """Set `data[path]`; a missing mapping on the way is created, a list index must exist."""
    here: Any = data
    for depth, part in enumerate(path):
        shown = ".".join(map(str, path[: depth + 1]))
        last = depth == len(path) - 1
        if isinstance(here, dict):
            if last:
                here[str(part)] = value
            else:
                if str(part) not in here:
                    here[str(part)] = {}
                elif here[str(part)] is None:
                    # An absent section stays absent (under `curate run` it would add a stage): say so.
                    raise ConfigError(f"{SET_FLAG} {'.'.join(map(str, path))}: {section}.{shown} is not set; "
                                      f"give it whole: {SET_FLAG} '{shown}={{…}}'")
                here = here[str(part)]
        elif isinstance(here, list):
            if not isinstance(part, int) or part >= len(here):
                raise ConfigError(f"{SET_FLAG} {'.'.join(map(str, path))}: {section}.{shown}: no such list item "
                                  f"(the list has {len(here)})")
            if last:
                here[part] = value
            else:
                here = here[part]
        else:
            raise ConfigError(f"{SET_FLAG} {'.'.join(map(str, path))}: {section}.{shown.rsplit('.', 1)[0]} "
                              "holds a single value, not keys")


def validate_options(model: type[M], data: dict[str, Any], section: str,
                     assigned: Iterable[tuple[tuple[str | int, ...], Any, str]] = ()) -> M:
    """Validate a section built from command-line options; problems become one ConfigError line."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # `--set name=2024` reads 2024 as a number, which a string key refuses: take it as typed.
        retried = False
        for err in exc.errors():
            if err["type"] != "string_type":
                continue
            for path, value, raw in assigned:
                got = err.get("input")
                if (type(value) is type(got) and value == got and not isinstance(value, dict | list)
                        and path[-1] in err["loc"]):
                    assign(data, path, raw.strip(), section)
                    retried = True
        if retried:
            return validate_options(model, data, section)
        raise options_error(exc, f"{section} options") from None


def set_option_help(what: str) -> str:
    return (f"Set any key of {what}, nested ones too (`KEY.SUBKEY=VALUE`, `LIST.0.KEY=VALUE`); VALUE is read "
            "as YAML and replaces the key's value (repeatable).")


def apply_sets(model: type[M], data: dict[str, Any], sets: Iterable[str], what: str) -> M:
    """`--set` for commands whose YAML is not a pipeline section (train-dfn, run): dotted keys into `data`."""
    assigned = [parse_set(item) for item in sets]
    for path, value, _ in assigned:
        assign(data, path, value, what)
    return validate_options(model, data, what, assigned)


__all__ = [
    "SECTION_COMMANDS", "FieldFlag", "SectionCommand", "apply_sets", "build_section", "description", "flag_kind",
    "format_default", "section_options", "set_option_help",
]
