"""Allowed ranges of numeric settings, declared once next to the setting and checked in one place.

A :class:`Range` is an interval with closed or open ends; :func:`ranged` declares a dataclass field
with its range (the distillation methods' options use it), and :func:`shown` cuts a bad value short
for a one-line message.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    """Numbers from ``low`` to ``high`` (None: no bound), ends included unless marked open."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return (f"{'(' if self.low_open else '['}{_number(self.low)}, {_number(self.high)}"
                    f"{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{'>' if self.low_open else '≥'} {_number(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '≤'} {_number(self.high)}"
        return "any finite number"

    def requirement(self) -> str:
        """What a value must do, for a message: 'lie in [0.1, 100]', 'be ≥ 0'."""
        both = self.low is not None and self.high is not None
        return f"lie in {self}" if both else f"be {self}"

    def integers(self) -> str:
        """The range as integers are told: 'from 2 to 1,000,000'."""
        if self.low is not None and self.high is not None and not (self.low_open or self.high_open):
            return f"from {_number(self.low)} to {_number(self.high)}"
        return str(self)


def _number(value: float) -> str:
    return f"{value:,}" if float(value).is_integer() and abs(value) >= 10_000 else f"{value:g}"


def ranged(default: Any, low: float | None = None, high: float | None = None, *,
           low_open: bool = False, high_open: bool = False) -> Any:
    """A dataclass field with its allowed range (for a list, each element's)."""
    allowed = {"range": Range(low, high, low_open, high_open)}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=allowed)
    return dataclasses.field(default=default, metadata=allowed)


def field_range(field: dataclasses.Field) -> Range | None:
    return field.metadata.get("range")


def out_of_range(options: Any) -> tuple[str, Any, Range] | None:
    """The first field of dataclass ``options`` whose value (or a list element, named ``key[i]``) lies
    outside its declared range, as (name, value, range); None when every value fits."""
    for field in dataclasses.fields(options):
        allowed = field_range(field)
        if allowed is None:
            continue
        value = getattr(options, field.name)
        if not isinstance(value, (list, tuple)):
            if value not in allowed:
                return field.name, value, allowed
            continue
        for index, item in enumerate(value):
            if item not in allowed:
                return f"{field.name}[{index}]", item, allowed
    return None


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut short for a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
