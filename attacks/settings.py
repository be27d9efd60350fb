"""Checking an attack's settings against the types its dataclass declares.

So that ``PGD(steps=2.5)`` or ``APGD(loss="CE")`` is one clear error when the attack is made,
whether from Python or from a suite file, rather than a failure mid-run or, worse, a silent
fallback to another loss.
"""

from __future__ import annotations

import functools
import numbers
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints


def fits(kind: Any, value: Any) -> bool:
    """Whether a setting's value has its declared type (settings of other types are not checked)."""
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    if get_origin(kind) is Literal:
        return value in get_args(kind)
    if get_origin(kind) in (Union, types.UnionType):
        return any(fits(option, value) for option in get_args(kind))
    return True


def describe(kind: Any) -> str:
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(repr(v) for v in get_args(kind))
    if get_origin(kind) in (Union, types.UnionType):
        return " or ".join(describe(option) for option in get_args(kind))
    return {int: "an integer", float: "a number", bool: "true or false", str: "text", type(None): "null"}.get(
        kind, getattr(kind, "__name__", str(kind)))


@functools.lru_cache(maxsize=None)
def declared_types(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def wrong_setting(cls: type, values: dict[str, Any]) -> str | None:
    """The first of ``values`` (setting → value) that does not have its declared type, in words."""
    hints = declared_types(cls)
    for key, value in values.items():
        if key in hints and not fits(hints[key], value):
            return f"{key} must be {describe(hints[key])}, got {value!r}"
    return None
