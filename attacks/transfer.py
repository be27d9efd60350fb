"""Transfer attacks: adversarial examples made on surrogate models, judged on the target.

The examples come from momentum iterative gradient ascent (MI-FGSM, Dong et al., CVPR 2018; with
``momentum=0`` it is plain PGD without random start) on the mean logits of one or more surrogates
(an ensemble transfers better, Liu et al., ICLR 2017). The target model is only queried for the
verdict, so this is a black-box attack on the target. All steps run: stopping when the surrogate is
fooled would leave the example on the surrogate's boundary, where it transfers worst.

:func:`transfer_matrix` gives the success rate of examples made on each source against each target.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import work
from .core import Attack, auto_batch_size, flat_norm, margin_loss, model_device, normalized_step, project
from .errors import AttackError
from .fold import PROBE_POINTS, fold_for_evaluation
from .layout import channels_last
from .precision import check_precision, in_precision, like
from .provenance import model_fingerprint, tensors_fingerprint
from .store import Store
from .suites import register_attack


class Ensemble(nn.Module):
    """Mean logits of several models (each mapping [0, 1] images to logits)."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        if not models:
            raise AttackError("a transfer attack needs at least one surrogate model")
        self.members = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x).float() for m in self.members]).mean(dim=0)


@register_attack
@dataclass
class Transfer(Attack):
    """``attack(target, x, y)``: MI-FGSM on ``surrogates`` for ``steps`` steps of ``alpha``."""

    surrogates: Sequence[nn.Module] = field(default_factory=tuple, repr=False)
    surrogate_names: Sequence[str] = ()
    steps: int = 20
    alpha: float | None = None
    momentum: float = 1.0
    loss: Literal["ce", "margin"] = "ce"
    name = "transfer"
    white_box = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.surrogates, nn.Module) and not isinstance(self.surrogates, nn.ModuleList):
            self.surrogates = (self.surrogates,)     # one model, not its layers as an ensemble
        if not self.surrogates:
            raise AttackError("the transfer attack needs surrogate models (in Python: surrogates=[model, ...]; "
                              "from the command line: robust-kd transfer --source A,B --target C,D)")

    def describe(self) -> dict:
        return {"attack": self.name, "eps": self.eps, "norm": self.norm, "seed": self.seed, "steps": self.steps,
                "alpha": self.alpha if self.alpha is not None else self.eps / self.steps * 1.25,
                "momentum": self.momentum, "loss": self.loss,
                "surrogates": list(self.surrogate_names) or [type(m).__name__ for m in self.surrogates]}

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ensemble = Ensemble(list(self.surrogates)).to(x.device)
        training = [m.training for m in ensemble.members]
        ensemble.eval()
        try:     # in a bf16 evaluation the surrogates run in bf16 too (the verdict on the target stays float32)
            return craft(like(ensemble, model), x, y, Crafting(
                self.eps, self.norm, self.steps, self.alpha if self.alpha is not None else 1.25 * self.eps / self.steps,
                self.momentum, self.loss))
        finally:
            for member, was in zip(ensemble.members, training):
                member.train(was)


@dataclass(frozen=True)
class Crafting:
    """MI-FGSM's settings: ``steps`` steps of ``alpha`` in the ``norm`` ball of radius ``eps``."""

    eps: float
    norm: str
    steps: int
    alpha: float
    momentum: float
    loss: str


def craft(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: Crafting) -> torch.Tensor:
    """MI-FGSM: g ← μ·g + ∇/‖∇‖₁, x ← Π(x + α·step(g)); every step, every point."""
    x_adv = x.clone()
    velocity = torch.zeros_like(x)
    for step in range(settings.steps):
        work.advance(step, settings.steps)
        current = x_adv.detach().requires_grad_(True)
        logits = model(current).float()
        values = F.cross_entropy(logits, y, reduction="none") if settings.loss == "ce" else margin_loss(logits, y)
        (grad,) = torch.autograd.grad(values.sum(), current)
        l1 = grad.flatten(1).abs().sum(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
        velocity = settings.momentum * velocity + grad / l1
        x_adv = project(current.detach() + settings.alpha * normalized_step(velocity, settings.norm), x, settings.eps,
                        settings.norm)
    return x_adv.detach()


def transfer_matrix(sources: Mapping[str, nn.Module], targets: Mapping[str, nn.Module], x: torch.Tensor,
                    y: torch.Tensor, *, eps: float, norm: str = "Linf", steps: int = 20, momentum: float = 1.0,
                    batch_size: int | None = None, progress=None, precision: str = "fp32",
                    made_dir: str | Path | None = None) -> dict:
    """Success rate of examples made on each source (white-box on it) against each target.

    A cell counts the points the target classifies correctly on clean input and the share of them
    the source's examples make it misclassify. The diagonal is the white-box success rate.
    ``batch_size``: ``None`` (default) by the source's device (:data:`attacks.core.AUTO_BATCH_SIZE`).
    ``precision``: what the sources compute in while the examples are made (:mod:`attacks.precision`);
    the targets judge them in float32.
    ``made_dir``: a folder where each batch of examples is saved as it is made, so that a rerun after
    an interruption makes only the batches still missing (a batch of other weights, data or settings
    is made again).
    """
    check_precision(precision)
    if norm not in ("Linf", "L2"):
        raise AttackError(f"norm must be Linf or L2, got '{norm}'")
    if batch_size is not None and batch_size < 1:
        raise AttackError(f"batch_size must be at least 1, got {batch_size}")
    cells: dict[str, dict[str, dict[str, float | int]]] = {}
    for source_name, source in sources.items():
        device = model_device(source)
        size = batch_size or auto_batch_size(device)
        source.eval()
        made = []
        saved = _MadeBatches(made_dir, source_name, source, eps=eps, norm=norm, steps=steps, momentum=momentum,
                             precision=precision)
        # as attacks.evaluate runs a model: batch norms folded (on a copy) and channels-last convolutions
        (fast_source,) = fold_for_evaluation([source], x[:PROBE_POINTS].to(device))
        with channels_last([fast_source], device):
            for start in range(0, len(y), size):
                xb, yb = x[start:start + size], y[start:start + size]
                batch = saved.load(start, xb, yb)
                if batch is None:
                    batch = craft(in_precision(fast_source, precision), xb.to(device), yb.to(device),
                                  Crafting(eps, norm, steps, 1.25 * eps / steps, momentum, "ce")).cpu()
                    saved.save(start, xb, yb, batch)
                made.append(batch)
                if progress is not None:
                    progress(source_name, min(start + size, len(y)), len(y))
        x_adv = torch.cat(made)
        assert bool((flat_norm(x_adv - x.cpu(), norm) <= eps * (1 + 1e-5) + 1e-6).all())
        row = {}
        for target_name, target in targets.items():
            target.eval()
            tdevice = model_device(target)
            clean_ok, fooled = [], []
            with torch.no_grad():
                for start in range(0, len(y), size):
                    yb = y[start:start + size].to(tdevice)
                    clean_ok.append((target(x[start:start + size].to(tdevice)).argmax(1) == yb).cpu())
                    fooled.append((target(x_adv[start:start + size].to(tdevice)).argmax(1) != yb).cpu())
            ok, bad = torch.cat(clean_ok), torch.cat(fooled)
            attacked = int(ok.sum())
            broken = int((ok & bad).sum())
            row[target_name] = {"points": attacked, "broken": broken,
                                "success_rate": broken / attacked if attacked else 0.0}
        cells[source_name] = row
    return {"eps": eps, "norm": norm, "steps": steps, "momentum": momentum, "precision": precision,
            "n_examples": len(y), "sources": list(sources), "targets": list(targets), "cells": cells}


class _MadeBatches:
    """The batches of examples made on one source, saved in ``folder`` (:mod:`attacks.store` files). A
    file counts only where its key (source, its weights, the settings and the batch's own points) is
    this run's; any other, or a damaged one, is made again."""

    STORE = Store("transfer batch", version=1, encoding="torch")

    def __init__(self, folder: str | Path | None, name: str, source: nn.Module, **settings: Any) -> None:
        self.folder = None if folder is None else Path(folder)
        self.key = {"source": name, "weights": model_fingerprint(source) if folder is not None else "", **settings}
        # readable and unique: sources whose names share their first 40 characters get their own files
        readable = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[-40:]
        self.prefix = f"{readable}-{zlib.crc32(name.encode()):08x}"

    def _path(self, start: int) -> Path:
        assert self.folder is not None
        return self.folder / f"{self.prefix}-{start:08d}.pt"

    def _key(self, xb: torch.Tensor, yb: torch.Tensor) -> dict[str, Any]:
        return {**self.key, "points": tensors_fingerprint([xb, yb])}

    def load(self, start: int, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor | None:
        if self.folder is None:
            return None
        found = self.STORE.read(self._path(start), self._key(xb, yb), ("x",))
        made = None if found.data is None else found.data["x"]
        return made if isinstance(made, torch.Tensor) and made.shape == xb.shape else None

    def save(self, start: int, xb: torch.Tensor, yb: torch.Tensor, batch: torch.Tensor) -> None:
        if self.folder is not None:
            self.STORE.write(self._path(start), self._key(xb, yb), {"x": batch})
