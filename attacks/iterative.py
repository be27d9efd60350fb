"""The base of an attack written as a start and a step, like torchattacks' PGD, that resumes in the
middle of its steps with no snapshot code of its own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from . import inflight
from .core import Attack


@dataclass
class IterativeAttack(Attack):
    """``steps`` steps of :meth:`step` from :meth:`start`, on the whole batch.

    A subclass names its state's dataclass in ``State`` (an :class:`attacks.inflight.RunState` with
    an ``int`` field ``step`` and its tensors, e.g. ``x_adv`` and a momentum) and writes
    :meth:`start` (the state before the first step) and :meth:`step` (one step, changing the
    state). An interrupted evaluation snapshots that state between steps and resumes from it
    (:mod:`attacks.inflight`); the progress display hears of every step (:mod:`attacks.work`).
    """

    steps: int = 10
    State: ClassVar[type[inflight.RunState]]

    def start(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> inflight.RunState:
        raise NotImplementedError

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, state: inflight.RunState) -> None:
        raise NotImplementedError

    def examples(self, state: inflight.RunState) -> torch.Tensor:
        """The adversarial examples of a finished run (by default its field ``x_adv``)."""
        return state.x_adv  # type: ignore[attr-defined]

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        with inflight.resume(self.State, x, lambda: self.start(model, x, y, index), kind=self.name) as state:
            for _ in state.steps(self.steps):
                self.step(model, x, y, state)
        return self.examples(state)
