"""Typed configs from YAML and ``key=value`` overrides.

A config is a tree of dataclasses. :func:`build` turns a plain mapping (read by :mod:`robust_kd.yamlfile`)
into that tree, checking every key and value, so that a typo or a wrong type stops the run before
it starts with a message naming the dotted key.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from .bounds import shown
from .errors import UserError
from .yamlfile import load_yaml_text, read_yaml_file

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise UserError(f"config key '{key}' must be a mapping of its sub-keys, got {shown(value)}")
        return build(tp, value, prefix=f"{key}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except UserError:
                pass
        raise UserError(f"config key '{key}' expects {_type_name(tp)}, got {shown(value)}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise UserError(f"config key '{key}' expects {_type_name(tp)}, got {shown(value)}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key '{key}' expects {_type_name(tp)}, got {shown(value)}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise UserError(f"config key '{key}' expects a mapping, got {shown(value)}")
        return {str(k): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"config key '{key}' expects true or false, got {shown(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise UserError(f"config key '{key}' expects an integer, got {shown(value)}")
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-2 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value != value or value in (float("inf"), float("-inf")):
                raise UserError(f"config key '{key}' must be a finite number, got {shown(value)}")
            return float(value)
        raise UserError(f"config key '{key}' expects a number, got {shown(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"config key '{key}' expects a string, got {shown(value)}")
    raise TypeError(f"unsupported config type {tp!r} for '{key}'")


def build(cls: type[T], mapping: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``mapping``; unknown keys and wrong types raise UserError."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in mapping:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise UserError(
                f"unknown config key '{prefix}{key}'{hint}; valid keys here: "
                + ", ".join(prefix + k for k in fields)
            )
    values = {name: _coerce(mapping[name], hints[name], prefix + name) for name in fields if name in mapping}
    return cls(**values)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` → (["a", "b"], value parsed as a YAML scalar or list)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserError(f"cannot read override '{text}': write key=value, e.g. optimizer.lr=0.1 or epochs=3")
    try:
        value = load_yaml_text(raw, f"override '{key}=…'") if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(mapping: Mapping[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a deep copy of ``mapping`` with each ``a.b=value`` set; validation happens in :func:`build`."""
    result = copy.deepcopy(dict(mapping))
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UserError(f"cannot set '{'.'.join(path)}': '{part}' is not a group of keys")
            node = child
        node[path[-1]] = value
    return result


def merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge two mappings; values in ``top`` win."""
    result = copy.deepcopy(dict(base))
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A config file's mapping (empty for an empty file); every failure is a one-line UserError."""
    data = read_yaml_file(path, "config file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file '{path}' must hold a mapping of keys, not a {type(data).__name__}")
    return data
