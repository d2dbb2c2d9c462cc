"""Turn TOML tables into the packages' frozen settings dataclasses.

Each package declares a frozen dataclass whose fields carry `metadata`:

- ``doc``: one line, shown by ``run.py check`` and mirrored in config.toml;
- ``min`` / ``max`` / ``choices``: bounds on the value;
- ``secret``: masked when printed; may also be given as ``<name>_file`` (a path);
- ``check``: a callable that raises ``ValueError("why")`` for a bad value;
- ``example``: how to write the value, added to a message when its shape is wrong.

A dataclass may add ``problems(self) -> list[tuple[str, str]]`` for checks across fields.

`build` never stops at the first problem: every problem is collected as a `Problem` naming
its key path and the bad value, so one run of ``run.py check`` shows all of them.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from porter_errors import Internal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "MASK",
    "ConfigError",
    "Problem",
    "build",
    "defaults_of",
    "dump",
    "env_overrides",
    "keys_of",
    "merge",
    "table_key",
    "tomllib",
]

_MISSING = object()


@dataclass(frozen=True)
class Problem:
    """One thing wrong in the configuration."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


class ConfigError(Internal):
    """The configuration has problems; `problems` lists every one of them."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}: {len(problems)} problem(s) in the configuration"]
        lines += [f"  {p}" for p in problems]
        super().__init__("\n".join(lines))


def show(value: Any) -> str:
    """A short, printable form of a configured value for error messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def type_name(tp: Any) -> str:
    optional, inner = _is_optional(tp)
    if optional:
        return f"{type_name(inner)} or nothing"
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {type_name(args[0])}"
        return "list of [" + ", ".join(type_name(a) for a in args) + "]"
    if dataclasses.is_dataclass(tp):
        return "table"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(tp, str(tp))


# The TOML values each scalar type takes (a bool is not a number; an integer is a float).
_SCALARS: dict[Any, Callable[[Any], bool]] = {
    bool: lambda v: isinstance(v, bool),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
}


def convert(value: Any, tp: Any, key: str, problems: list[Problem]) -> Any:
    """Check `value` against the annotation `tp`; return the typed value or _MISSING."""
    optional, inner = _is_optional(tp)
    if optional:
        return None if value is None else convert(value, inner, key, problems)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            problems.append(Problem(key, f"{show(value)} is not a table"))
            return _MISSING
        return build(tp, value, key, problems)
    if typing.get_origin(tp) is tuple:
        return _convert_tuple(value, typing.get_args(tp), key, problems)
    accepts = _SCALARS.get(tp)
    if accepts is None:  # pragma: no cover - a programming error in a settings dataclass
        raise TypeError(f"{key}: unsupported settings type {tp!r}")
    if accepts(value):
        return float(value) if tp is float else value
    name = type_name(tp)
    article = "an" if name[0] in "aeiou" else "a"
    problems.append(Problem(key, f"{show(value)} is not {article} {name}"))
    return _MISSING


def _convert_tuple(value: Any, args: tuple[Any, ...], key: str, problems: list[Problem]) -> Any:
    if isinstance(value, Mapping) and len(args) == 2 and args[1] is Ellipsis:
        value = [list(pair) for pair in value.items()]  # a table where pairs are expected
    if not isinstance(value, (list, tuple)):
        problems.append(Problem(key, f"{show(value)} is not a list"))
        return _MISSING
    if len(args) == 2 and args[1] is Ellipsis:
        items = [convert(v, args[0], f"{key}[{i}]", problems) for i, v in enumerate(value)]
    elif len(value) != len(args):
        problems.append(Problem(key, f"{show(value)} must have exactly {len(args)} items"))
        return _MISSING
    else:
        items = [
            convert(v, a, f"{key}[{i}]", problems)
            for i, (v, a) in enumerate(zip(value, args, strict=True))
        ]
    return _MISSING if any(i is _MISSING for i in items) else tuple(items)


def _check_field(
    value: Any, raw: Any, meta: Mapping[str, Any], key: str, problems: list[Problem]
) -> None:
    """Bounds, choices and the field's own check; messages show `raw`, the value as written."""
    if value is None:
        return
    low, high = meta.get("min"), meta.get("max")
    if low is not None and value < low:
        problems.append(Problem(key, f"{show(raw)} is too small: the minimum is {low}"))
    if high is not None and value > high:
        problems.append(Problem(key, f"{show(raw)} is too large: the maximum is {high}"))
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        problems.append(Problem(key, f"{show(raw)} is not one of {allowed}"))
    check = meta.get("check")
    if check is not None:
        try:
            check(value)
        except ValueError as exc:
            problems.append(Problem(key, f"{show(raw)} is not valid: {exc}"))


def _read_secret_file(path_value: Any, key: str, problems: list[Problem]) -> Any:
    if not isinstance(path_value, str) or not path_value:
        problems.append(Problem(key, f"{show(path_value)} is not a file path"))
        return _MISSING
    try:
        text = Path(path_value).read_text(encoding="utf-8")
    except OSError as exc:
        problems.append(Problem(key, f"cannot read {path_value!r}: {exc.strerror or exc}"))
        return _MISSING
    secret = text.rstrip("\r\n")
    if not secret:
        problems.append(Problem(key, f"the file {path_value!r} is empty"))
        return _MISSING
    return secret


def table_key(f: dataclasses.Field[Any]) -> str:
    """The TOML key of field `f`: its name, or the section it shares (metadata "section")."""
    return str(f.metadata.get("section", f.name))


def keys_of(cls: type[Any]) -> set[str]:
    """Every TOML key dataclass `cls` accepts, `<secret>_file` forms included."""
    keys: set[str] = set()
    for f in dataclasses.fields(cls):
        if f.init:
            keys.add(table_key(f))
            if f.metadata.get("secret"):
                keys.add(f"{f.name}_file")
    return keys


def build(cls: type[Any], table: Mapping[str, Any], prefix: str, problems: list[Problem]) -> Any:
    """Build dataclass `cls` from `table`, appending every problem found to `problems`.

    Fields whose metadata names a "section" share that TOML table: each takes the keys its
    own dataclass knows (two packages may own halves of one section, e.g. [public]).
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    before = len(problems)
    _unknown_keys(table, keys_of(cls), prefix, problems)
    values = _build_sections(fields, hints, table, prefix, problems)
    secrets = {f"{n}_file": n for n, f in fields.items() if f.metadata.get("secret")}
    for name, f in fields.items():
        if "section" not in f.metadata:
            raw = _raw_value(table, name, secrets, _join(prefix, name), problems)
            if raw is not _MISSING:
                value = _build_field(f, hints[name], raw, _join(prefix, name), problems)
                if value is not _MISSING:
                    values[name] = value
    if len(problems) > before:
        return _MISSING
    instance = cls(**values)
    cross = getattr(instance, "problems", None)
    if callable(cross):
        for name, message in cross():
            problems.append(Problem(_join(prefix, name), message))
    return instance


def _unknown_keys(
    table: Mapping[str, Any], known: set[str], prefix: str, problems: list[Problem]
) -> None:
    for name in table:
        if name not in known:
            hint = _close_match(name, sorted(known))
            problems.append(Problem(_join(prefix, name), "unknown setting" + hint))


def _build_sections(
    fields: Mapping[str, dataclasses.Field[Any]],
    hints: Mapping[str, Any],
    table: Mapping[str, Any],
    prefix: str,
    problems: list[Problem],
) -> dict[str, Any]:
    """The fields kept in a shared TOML section, each built from the keys its class knows."""
    shared: dict[str, list[dataclasses.Field[Any]]] = {}
    for f in fields.values():
        if "section" in f.metadata:
            shared.setdefault(table_key(f), []).append(f)
    values: dict[str, Any] = {}
    for section, owners in shared.items():
        sub = table.get(section, {})
        if not isinstance(sub, Mapping):
            problems.append(Problem(_join(prefix, section), f"{show(sub)} is not a table"))
            continue
        claimed = set().union(*(keys_of(hints[f.name]) for f in owners))
        _unknown_keys(sub, claimed, _join(prefix, section), problems)
        for f in owners:
            own = keys_of(hints[f.name])
            part = {k: v for k, v in sub.items() if k in own}
            value = build(hints[f.name], part, _join(prefix, section), problems)
            if value is not _MISSING:
                values[f.name] = value
    return values


def _raw_value(
    table: Mapping[str, Any],
    name: str,
    secrets: Mapping[str, str],
    key: str,
    problems: list[Problem],
) -> Any:
    """The value of `name` as written, or read from its `<name>_file` (a secret's file)."""
    raw = table.get(name, _MISSING)
    file_key = f"{name}_file"
    if file_key not in secrets or file_key not in table:
        return raw
    if raw is not _MISSING and raw is not None:
        problems.append(Problem(key, f"set both {name} and {file_key}: choose one"))
        return _MISSING
    return _read_secret_file(table[file_key], key + "_file", problems)


def _build_field(
    f: dataclasses.Field[Any], tp: Any, raw: Any, key: str, problems: list[Problem]
) -> Any:
    """One field's typed and checked value, or _MISSING with its problems added."""
    found: list[Problem] = []
    value = convert(raw, tp, key, found)
    if value is not _MISSING:
        _check_field(value, raw, f.metadata, key, found)
    elif "example" in f.metadata:  # a shape TOML cannot show by its type alone
        found = [
            Problem(p.key, f"{p.message}; write it like {f.metadata['example']}") for p in found
        ]
    if f.metadata.get("secret"):  # say what is wrong, never what the secret is
        found = [Problem(p.key, p.message.replace(show(raw), "the value")) for p in found]
    problems.extend(found)
    return _MISSING if found else value


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _close_match(name: str, known: list[str]) -> str:
    import difflib

    match = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


# -- environment overrides ------------------------------------------------------------------


def env_overrides(
    environ: Mapping[str, str], prefix: str = "PORTER_"
) -> tuple[dict[str, Any], dict[str, str], list[Problem]]:
    """Nested TOML-like values from ``PORTER_SECTION__KEY=value`` variables.

    Values are parsed as TOML values when they parse (``true``, ``8080``, ``["a", "b"]``),
    else taken as plain strings, so ``PORTER_PUBLIC__USER=public`` needs no quotes.
    Returns the overrides, which variable set each key path, and malformed names.
    """
    result: dict[str, Any] = {}
    sources: dict[str, str] = {}
    problems: list[Problem] = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(prefix) or "__" not in name[len(prefix) :]:
            continue
        path = [p.lower() for p in name[len(prefix) :].split("__")]
        if any(not p for p in path):
            problems.append(Problem(name, "malformed environment override name"))
            continue
        try:
            value: Any = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = result
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                problems.append(Problem(name, "conflicts with another override"))
                break
            node = nxt
        else:
            node[path[-1]] = value
            sources[".".join(path)] = name
    return result, sources, problems


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge two tables; `override` wins."""
    out = dict(base)
    for key, value in override.items():
        current = out.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            out[key] = merge(current, value)
        else:
            out[key] = value
    return out


# -- printing ---------------------------------------------------------------------------------

MASK = "********"


def dump(instance: Any, prefix: str = "") -> list[str]:
    """TOML lines for `instance` with secrets masked (``run.py check``)."""
    lines: list[str] = []
    tables: dict[str, list[Any]] = {}
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            tables.setdefault(_join(prefix, table_key(f)), []).append(value)
            continue
        lines.append(_line(f, value))
    for name, parts in tables.items():
        lines += ["", f"[{name}]"]
        seen: set[str] = set()
        for part in parts:  # a shared section prints each key once
            for line in dump(part, name):
                key = line.split(" ", 1)[0] if line and line[0] not in "#[" else line
                if key and key[0] != "[" and key in seen:
                    continue
                seen.add(key)
                lines.append(line)
    return lines


def _line(f: dataclasses.Field[Any], value: Any) -> str:
    if f.metadata.get("secret") and value is not None:
        return f"{f.name} = {_toml(MASK)}"
    if value is None:
        return f"# {f.name} is not set"
    return f"{f.name} = {_toml(value)}"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        import json

        return json.dumps(value)
    if isinstance(value, tuple):
        if value and dataclasses.is_dataclass(value[0]):
            inner = (
                "{ "
                + ", ".join(
                    f"{f.name} = {_toml(MASK if f.metadata.get('secret') else getattr(v, f.name))}"
                    for f in dataclasses.fields(v)
                    if getattr(v, f.name) is not None
                )
                + " }"
                for v in value
            )
            return "[" + ", ".join(inner) + "]"
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"cannot print {value!r} as TOML")


def defaults_of(cls: type[Any]) -> dict[str, Any]:
    """Field name -> default value (the defaults config.toml must show)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out
