"""Option types shared by several verbs."""

from __future__ import annotations

from typing import Any

import click

from ..train.recipe import MAX_SEED


class CanonicalChoice(click.Choice):
    """A choice typed in any case (``linf``, ``LINF``) that becomes its canonical spelling (``Linf``);
    the help and a wrong value's error show the choices as spelled here, not lower-cased."""

    def __init__(self, choices: list[str]) -> None:
        super().__init__(choices, case_sensitive=False)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return f"[{'|'.join(self.choices)}]"

    def get_invalid_choice_message(self, value: Any, ctx: click.Context | None) -> str:
        return f"{value!r} is not one of {', '.join(map(repr, self.choices))}."


NORM = CanonicalChoice(["Linf", "L2"])
ATTACK_NORM = CanonicalChoice(["Linf", "L2", "L1"])    # robust-kd attack: AutoAttack's L1 version too

SEED = click.IntRange(0, MAX_SEED)   # as a recipe's seed key: what every random generator here takes
