"""A study plan as data: what a study trains, distils, attacks and compares (read by plan_file.py), and
the reader's helpers that name the plan's line in every message. ``docs/studies.md`` explains the keys;
``PLAN_KEYS`` and the others below are the keys the reader accepts.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError

PLAN_KEYS = ("study", "description", "data", "recipe", "overrides", "seeds", "teacher_seeds", "pairs", "methods",
             "train", "attacks", "transfer", "rsa_adversarial", "rsa", "sources", "tolerance", "needs")
PAIR_KEYS = ("teacher", "student", "published")
METHOD_KEYS = ("method", "label", "options", "recipe")
TRAIN_KEYS = ("model", "published")
ATTACK_KEYS = ("suite", "n", "eps", "norm", "examples")
TRANSFER_KEYS = ("n", "eps", "among")
RSA_ADV_KEYS = ("n", "eps", "queries", "resamples", "model")
RSA_KEYS = ("stimuli", "brain_rdm", "resamples")
PUBLISHED_KEYS = ("top1", "std", "source")
DATA_KEYS = ("name", "root")


@dataclass(frozen=True)
class Published:
    """A number from a paper: top-1 accuracy in %, its spread over the authors' runs if given, and where
    it was printed (the table)."""

    top1: float
    source: str
    std: float | None = None


@dataclass(frozen=True)
class MethodSpec:
    label: str                                   # names the students' runs and the report's rows
    method: str
    options: tuple[tuple[str, Any], ...] = ()    # distill.options.<key>=<value> on top of the published ones
    recipe: str | None = None                    # the method's own released recipe, instead of the plan's


@dataclass(frozen=True)
class Pair:
    teacher: str
    student: str
    published: dict[str, Published] = field(default_factory=dict)   # 'teacher', 'student' (alone) or a label


@dataclass(frozen=True)
class PlainModel:
    model: str
    published: Published | None = None


@dataclass(frozen=True)
class AttackSpec:
    suite: str
    eps: str                  # '2/255,4/255,8/255' as robust-kd attack --eps takes it
    n: int | None = None      # None: the whole test split
    norm: str | None = None
    examples: bool = False


@dataclass(frozen=True)
class TransferSpec:
    n: int
    eps: str
    among: str = "all"        # all: one matrix among every model; teachers: one per teacher and its students


@dataclass(frozen=True)
class RsaAdversarialSpec:
    n: int
    eps: str
    queries: int = 1000
    resamples: int = 1000
    model: str = "first student"


@dataclass(frozen=True)
class RsaSpec:
    stimuli: str = "rsa92"
    brain_rdm: str = "rsa92"
    resamples: int = 1000     # bootstrap and permutation samples


@dataclass
class StudyPlan:
    name: str
    path: Path
    description: str = ""
    data: str = "embedded"
    data_root: str | None = None
    recipe: str = "quick"
    overrides: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    teacher_seeds: tuple[int, ...] = (0,)
    pairs: tuple[Pair, ...] = ()
    methods: tuple[MethodSpec, ...] = ()
    train: tuple[PlainModel, ...] = ()
    attacks: tuple[AttackSpec, ...] = ()
    transfer: TransferSpec | None = None
    rsa_adversarial: RsaAdversarialSpec | None = None
    rsa: RsaSpec | None = None
    tolerance: float = 1.0            # points: ours − published beyond this (or 2 std) is flagged
    needs: str = ""                   # what the plan needs to run (e.g. "a GPU and CIFAR-100"), said by --dry-run
    lines: dict[tuple, int] = field(default_factory=dict, repr=False)   # the line of each key, for messages

    def at(self, *where: Any) -> str:
        """'study plan '<file>', line N' for the key at ``where`` (or the nearest one above it)."""
        path = tuple(where)
        while path and path not in self.lines:
            path = path[:-1]
        return f"study plan '{self.path}', line {self.lines.get(path, 1)}"


class PlanReader:
    """Turns the YAML mapping into a :class:`StudyPlan`, naming the line of every mistake."""

    def __init__(self, path: Path, raw: Any, lines: dict[tuple, int]) -> None:
        self.path, self.raw, self.lines = path, raw, lines

    def fail(self, where: tuple, problem: str) -> UserError:
        line = self.lines.get(where)
        while line is None and where:
            where = where[:-1]
            line = self.lines.get(where)
        return UserError(f"study plan '{self.path}', line {line or 1}: {problem}")

    def mapping(self, value: Any, where: tuple, keys: tuple[str, ...], what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"{what} must be a mapping of {', '.join(keys)}")
        for key in value:
            if str(key) not in keys:
                close = difflib.get_close_matches(str(key), keys, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else f"; known keys: {', '.join(keys)}"
                raise self.fail((*where, str(key)), f"unknown key '{key}' in {what}{hint}")
        return value

    def text(self, value: Any, where: tuple, what: str) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or str(value).strip() == "":
            raise self.fail(where, f"{what} must be a non-empty text, not {value!r}")
        return str(value)

    def number(self, value: Any, where: tuple, what: str, low: float = 0.0, high: float = float("inf")) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise self.fail(where, f"{what} must be a number from {low:g} to {high:g}, not {value!r}")
        return float(value)

    def count(self, value: Any, where: tuple, what: str, low: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.fail(where, f"{what} must be a whole number ≥ {low}, not {value!r}")
        return value

    def texts(self, value: Any, where: tuple, what: str) -> list[str]:
        """One text or a list of them."""
        items = value if isinstance(value, list) else [value]
        if not items:
            raise self.fail(where, f"{what} is an empty list; name at least one")
        return [self.text(v, (*where, k) if isinstance(value, list) else where, what) for k, v in enumerate(items)]

    def eps(self, value: Any, where: tuple) -> str:
        from ..robustness import parse_eps

        text = ",".join(self.texts(value, where, "eps"))
        try:
            parse_eps(text)
        except UserError as err:
            raise self.fail(where, str(err).removeprefix("--eps: ")) from None
        return text
