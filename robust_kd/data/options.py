"""The keyword options of a data set loader (``data.options`` in a recipe), declared with the data set.

Options arrive from YAML and the command line as whatever the user typed: ``channels=abc``,
``seed=[1,2]``, ``noise=nan``, ``train=30000000``. :func:`checked_options` gives each loader values of
its declared type inside their declared range, or stops with one line before anything is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from ..bounds import Range, shown
from ..errors import UserError


@dataclass(frozen=True)
class Option:
    """One option: its type (int, float or bool), its allowed values, and whether None may stand for
    "let the loader decide"."""

    kind: type
    allowed: Range | None = None
    choices: tuple[Any, ...] = ()
    optional: bool = False

    def __post_init__(self) -> None:
        if self.kind not in (int, float, bool):
            raise ValueError(f"a data set option is an int, float or bool, not {self.kind!r}")

    def describe(self) -> str:
        """What a value must be, e.g. 'an integer from 8 to 256', '1 or 3', 'true, false or null'."""
        if self.choices:
            text = " or ".join(str(c) for c in self.choices)
        elif self.kind is bool:
            text = "true or false"
        elif self.kind is int:
            text = "an integer" + (f" {self.allowed.integers()}" if self.allowed else "")
        else:
            text = "a finite number" + (f" in {self.allowed}" if self.allowed else "")
        return text + (" (or null: decided by the files)" if self.optional else "")

    def coerce(self, value: Any) -> Any:
        """``value`` as this option's type, or ValueError when it is not an allowed value."""
        if value is None and self.optional:
            return None
        typed = _as_kind(value, self.kind)
        if self.choices and typed not in self.choices:
            raise ValueError
        if self.allowed is not None and typed not in self.allowed:
            raise ValueError
        return typed


def _as_kind(value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError
    if isinstance(value, bool):
        raise ValueError
    if kind is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError
    if isinstance(value, str):          # YAML 1.1 reads 1e-2 (no dot) as text
        value = float(value)
    if isinstance(value, (int, float)) and math.isfinite(float(value)):
        return float(value)
    raise ValueError


def checked_options(dataset: str, declared: Mapping[str, Option], given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` with each value checked against (and converted to) its declaration."""
    checked = {}
    for key, value in given.items():
        option = declared[key]
        try:
            checked[key] = option.coerce(value)
        except (ValueError, OverflowError):
            raise UserError(f"data set '{dataset}': option {key} must be {option.describe()}, got {shown(value)}; "
                            f"fix data.options.{key} (robust-kd data --json lists each option's values)") from None
    return checked
