"""How a setting is described once (type, range, default, comment), checked, and written into config.toml.

A section is a frozen dataclass whose fields are declared with :func:`setting`; the field's type hint
is the type, the rest lives in the field's metadata. :func:`check` turns a value from TOML (or from
code) into that type and refuses anything else; :func:`parse_env` does the same for the text of an
environment variable. :func:`render_section` writes a section as config.toml shows it.
"""

from __future__ import annotations

import difflib
import json
import math
import textwrap
import types
import typing
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Iterable, Mapping

from stt_server.errors import StartupError

TRUE = ("true", "1", "yes", "on")
FALSE = ("false", "0", "no", "off")
WIDTH = 100


class SettingsError(StartupError, ValueError):
    """A setting (or environment variable) that cannot be used: the message names it and what it takes."""


@dataclass(frozen=True)
class Spec:
    """What a setting accepts besides its type: bounds, a set of choices, and its comment."""

    comment: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] = ()
    example: Any = None  # shown in a commented example where there is no default


def setting(default: Any = MISSING, comment: str = "", *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, choices: Iterable[str] = (), example: Any = None) -> Any:
    """One row of the table: ``port: int = setting(8000, "TCP port.", ge=0, le=65535)``."""
    spec = Spec(comment, ge, gt, le, tuple(choices), example)
    return field(default=default, metadata={"spec": spec})


def spec_of(f: Field[Any]) -> Spec:
    spec = f.metadata.get("spec")
    return spec if isinstance(spec, Spec) else Spec("")


def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _members(hint: Any) -> tuple[Any, ...]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return typing.get_args(hint)
    return (hint,)


def _is_pairs(hint: Any) -> bool:
    """``tuple[tuple[str, str], ...]``: written in config.toml as a sub-table of names to strings."""
    return typing.get_origin(hint) is tuple and typing.get_args(hint)[0] == tuple[str, str]


def _name(hint: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
             type(None): "nothing"}
    if _is_pairs(hint):
        return "a table of names to strings"
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        return f"a list of {_name(item).removeprefix('a ').removeprefix('an ')}s" if item in (str, int, float) \
            else "a list"
    return " or ".join(names.get(m, getattr(m, "__name__", str(m))) for m in _members(hint))


def expected(hint: Any, spec: Spec) -> str:
    """What a setting takes, in words: ``an integer from 1 to 65535``, ``one of "a", "b"``."""
    if spec.choices:
        return "one of " + ", ".join(json.dumps(c) for c in spec.choices)
    text = _name(hint)
    low = f"from {_fmt(spec.ge)}" if spec.ge is not None else f"above {_fmt(spec.gt)}" if spec.gt is not None else ""
    high = f"up to {_fmt(spec.le)}" if spec.le is not None else ""
    return " ".join(p for p in (text, low, high) if p)


def _fmt(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def _convert(value: Any, hint: Any) -> Any:
    """``value`` as ``hint`` when it is one already (an int does for a float); else ValueError."""
    for member in _members(hint):
        if member is bool and isinstance(value, bool):
            return value
        if member is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if member is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isfinite(value):
                return float(value)
        if member is str and isinstance(value, str):
            return value
        if _is_pairs(member) and isinstance(value, Mapping):  # a sub-table: name = "value" rows
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                raise ValueError
            return tuple(value.items())
        if typing.get_origin(member) is tuple and isinstance(value, (list, tuple)):
            item = typing.get_args(member)[0]
            if item in (str, int, float, bool):
                return tuple(_convert(v, item) for v in value)
            return value  # a list of tables: parsed by the section's __post_init__ (API keys)
    raise ValueError


def _parse_text(text: str, hint: Any) -> Any:
    """An environment variable's text as ``hint``; ValueError when it is none of its types."""
    for member in _members(hint):
        word = text.strip().lower()
        if member is bool and word in TRUE + FALSE:
            return word in TRUE
        if member is int:
            try:
                return int(text.strip())
            except ValueError:
                continue
        if member is float:
            try:
                number = float(text.strip())
            except ValueError:
                continue
            if math.isfinite(number):
                return number
        if typing.get_origin(member) is tuple:
            item = typing.get_args(member)[0]
            if item in (str, int, float, bool):  # a list: items separated by commas
                return tuple(_parse_text(part.strip(), item) for part in text.split(",") if part.strip())
            return text  # the section's __post_init__ reads its own text form (API keys)
        if member is str:
            return text
    raise ValueError


def _in_range(value: Any, spec: Spec) -> bool:
    if isinstance(value, tuple):
        return all(_in_range(v, spec) for v in value)
    if spec.choices and value not in spec.choices:
        return False
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    return ((spec.ge is None or value >= spec.ge) and (spec.gt is None or value > spec.gt)
            and (spec.le is None or value <= spec.le))


def check(where: str, f: Field[Any], hint: Any, value: Any, *, env: str | None = None) -> Any:
    """``value`` for setting ``f`` (written ``where``, e.g. ``[server] port``), converted and checked.

    With ``env``, ``value`` is the text of that environment variable. SettingsError names the
    setting (and the variable), says what it takes and shows what it got."""
    spec = spec_of(f)
    try:
        converted = _parse_text(value, hint) if env is not None else _convert(value, hint)
        if not _in_range(converted, spec):
            raise ValueError
    except ValueError:
        source = f"{env}={value!r} (for {where})" if env is not None else f"{where} = {_toml(value)}"
        raise SettingsError(f"{source}: expected {expected(hint, spec)}") from None
    return converted


def unknown(kind: str, names: Iterable[str], known: Iterable[str]) -> SettingsError:
    """The error for names that are no setting, with the nearest known one as a hint."""
    known = list(known)
    parts = []
    for name in sorted(names):
        near = difflib.get_close_matches(name, known, n=1)
        parts.append(f"{name!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
    return SettingsError(f"unknown {kind}: {', '.join(parts)}; known: {', '.join(known)}")


# --------------------------------------------------------------------------- config.toml


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (tuple, list)) and not value:
        return "[]"
    return json.dumps(value, default=str)


def comment_lines(text: str, prefix: str = "# ") -> list[str]:
    """A comment wrapped to the file's width; a line break in ``text`` starts a new line."""
    out: list[str] = []
    for paragraph in text.split("\n"):
        if paragraph.startswith("  "):  # an indented example: kept as written
            out.append(prefix + paragraph)
            continue
        out += textwrap.wrap(paragraph, WIDTH - len(prefix), initial_indent=prefix, subsequent_indent=prefix,
                             break_on_hyphens=False) or [prefix.rstrip()]
    return out


def render_section(name: str, cls: type) -> list[str]:
    """``[name]`` and every setting of ``cls`` at its default, each under its comment; a table of
    names follows as its own ``[name.setting]`` sub-table."""
    lines, tables = [f"[{name}]"], []
    kinds = hints(cls)
    for f in fields(cls):
        if _is_pairs(kinds[f.name]):
            tables.append(f)
            continue
        lines += comment_lines(spec_of(f).comment)
        lines.append(f"{f.name} = {_toml(f.default)}")
    for f in tables:
        rows: tuple[tuple[str, str], ...] = f.default  # type: ignore[assignment]
        lines += ["", f"[{name}.{f.name}]", *comment_lines(spec_of(f).comment)]
        lines += [f"{_key(key)} = {_toml(value)}" for key, value in rows]
    return lines


def _key(name: str) -> str:
    """A TOML key: bare when it can be, quoted otherwise."""
    return name if name and all(c.isascii() and (c.isalnum() or c in "-_") for c in name) else json.dumps(name)


def render_example(name: str, cls: type) -> list[str]:
    """An array-of-tables section as a commented example: ``# key = value  # comment`` per setting."""
    rows = []
    for f in fields(cls):
        spec = spec_of(f)
        value = spec.example if spec.example is not None else f.default
        rows.append((f"# {f.name} = {_toml(value)}", spec.comment))
    width = max(len(left) for left, _ in rows) + 2
    return [f"# [[{name}]]"] + [f"{left.ljust(width)}# {comment}" for left, comment in rows]
