"""Who decides that a point is broken, and when an attack may stop attacking it.

The numeric policy of an evaluation:

- **The verdict is the evaluated model's own, in IEEE float32**: its logits on the example, with
  TF32 off on CUDA (:func:`attacks.precision.full_float32`), decide whether a point is broken
  (misclassified, or logits that are not finite). The clean pass and every verdict pass run so.
- **An attack's own passes may compute otherwise**: in bf16 (``precision="bf16"``), with TF32
  convolutions where the user's torch settings allow them, through a view (BPDA, EOT, a folded
  copy) or at another batch shape, where cuDNN may pick another algorithm. Their rounding can put
  an example on the other side of the boundary than the verdict does.
- **So a point leaves an attack only when the judge agrees**: an attack that believes a point
  broken asks :func:`confirm` before it stops attacking it. Where the judge does not agree, the
  point stays in the attack (its iterate goes on), so a point the attack would have retired on a
  rounding error is not left robust. Outside an evaluation (an attack called directly) there is no
  judge and the attack's own pass decides.
- **A retired point counts as broken**: the judge remembers the points that left an attack broken
  with an example it confirmed, and the evaluation counts them broken even where its end-of-batch
  verdict pass, at another batch shape, rounds the other way. The attack and the verdict agree by
  construction.

On a CPU in float32 an attack's pass of the evaluated model itself is already a verdict (the same
model, the same IEEE arithmetic), so the judge takes it as one without a pass of its own; every
other pass (bf16, a view, CUDA) is checked with a pass of the model, counted in the step's forwards.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Iterator

import torch
from torch import nn

from .precision import full_float32


def broken_by_logits(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Misclassified, or no class predicted (NaN or inf logits)."""
    return (logits.argmax(dim=1) != y) | ~torch.isfinite(logits).all(dim=1)


class Judge:
    """The verdicts of one batch: ``model`` is the evaluated model (as the evaluation counts its
    passes); ``trusted``: whether an attack's pass of ``model`` itself is a verdict already."""

    def __init__(self, model: nn.Module, trusted: bool) -> None:
        self.model, self.trusted = model, trusted
        self._retired: list[tuple[torch.Tensor, torch.Tensor]] = []   # (indices, mask), read at the end

    @torch.no_grad()
    def broken(self, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The verdict on ``x_adv``: the model's logits in IEEE float32."""
        with full_float32():
            return broken_by_logits(self.model(x_adv).float(), y)

    def confirm(self, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, believed: torch.Tensor) -> torch.Tensor:
        if self.trusted and model is self.model:
            return believed
        rows = believed.nonzero(as_tuple=True)[0]
        if rows.numel() == 0:
            return believed
        agreed = torch.zeros_like(believed)
        agreed[rows] = self.broken(x_adv[rows].detach(), y[rows])
        return agreed

    def record(self, index: torch.Tensor, mask: torch.Tensor) -> None:
        self._retired.append((index, mask))

    def retired(self) -> set[int]:
        """The indices of the points that left an attack broken, with an example the judge confirmed."""
        return {i for index, mask in self._retired for i in index[mask].tolist()}


_current: ContextVar[Judge | None] = ContextVar("attack_judge", default=None)


@contextlib.contextmanager
def judging(judge: Judge) -> Iterator[Judge]:
    """The attacks run inside ask ``judge`` before they stop attacking a point."""
    token = _current.set(judge)
    try:
        yield judge
    finally:
        _current.reset(token)


def confirm(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, believed: torch.Tensor) -> torch.Tensor:
    """The rows of ``believed`` (the attack's own verdict on ``x_adv``, made with ``model``) that the
    evaluation's judge agrees are misclassified. Without a judge (an attack called directly),
    ``believed`` itself."""
    judge = _current.get()
    return believed if judge is None else judge.confirm(model, x_adv, y, believed)


def retire(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
           believed: torch.Tensor) -> torch.Tensor:
    """:func:`confirm`, for points that leave the attack broken with their example ``x_adv`` (the one
    the attack returns for them): the evaluation counts them broken."""
    agreed = confirm(model, x_adv, y, believed)
    retired(index, agreed)
    return agreed


def retired(index: torch.Tensor, mask: torch.Tensor) -> None:
    """The points ``index[mask]`` leave the attack broken, with an example the judge confirmed before
    (FAB: its closest confirmed point, once within eps)."""
    judge = _current.get()
    if judge is not None:
        judge.record(index, mask)


def retired_now() -> set[int]:
    """The points retired broken in the batch in flight (none outside one)."""
    judge = _current.get()
    return set() if judge is None else judge.retired()
