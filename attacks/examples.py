"""An attack's adversarial examples for a set of points, made as :func:`attacks.evaluate` makes them,
for callers that want the images rather than verdicts (e.g. stimuli for an RSA of adversarial
examples)."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Mapping

import torch
from torch import nn

from .core import Attack, auto_batch_size, model_device
from .prepare import prepared

Progress = Callable[[str, int, int], None]     # (label, points done, points in all)


def adversarial_examples(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                         batch_size: int | None = None, retry_views: Mapping[str, nn.Module] | None = None,
                         progress: Progress | None = None, label: str = "") -> torch.Tensor:
    """``attack``'s examples (on the CPU) for the points ``x`` (images in [0, 1]) with labels ``y``.

    As in an evaluation, the attack runs batch by batch on a prepared copy of ``model`` (batch norms
    folded, channels-last: :func:`attacks.prepare.prepared`), and so do the views and a transfer
    attack's surrogates. Where ``retry_views`` ({name: module}, e.g. BPDA with the identity) are given,
    the points the model still classifies as ``y`` are attacked again through each view in turn, and
    take the view's example where the model then misclassifies it. The model itself judges, in
    float32. ``progress(label, done, total)`` hears of every batch."""
    device = model_device(model)
    size = batch_size or auto_batch_size(device)
    views = dict(retry_views or {})
    surrogates = list(getattr(attack, "surrogates", ()))       # a transfer attack's
    with prepared([model, *views.values(), *surrogates], x, device) as fast:
        if surrogates:
            attack = replace(attack, surrogates=fast[1 + len(views):])
        made = _in_batches(attack, fast[0], x, y, size, progress, label)
        for (name, _), view in zip(views.items(), fast[1:1 + len(views)]):
            missed = (_predictions(model, made, size) == y.cpu()).nonzero(as_tuple=True)[0]
            if len(missed) == 0:
                break
            retry = _in_batches(attack, view, x[missed], y.cpu()[missed], size, progress, f"{label} ({name})")
            changed = _predictions(model, retry, size) != y.cpu()[missed]
            made[missed[changed]] = retry[changed]
    return made


def _in_batches(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, size: int,
                progress: Progress | None, label: str) -> torch.Tensor:
    device = model_device(model) if isinstance(model, nn.Module) else x.device
    out = []
    for i in range(0, len(x), size):
        out.append(attack(model, x[i:i + size].to(device), y[i:i + size].to(device)).detach().cpu())
        if progress is not None:
            progress(label, min(len(x), i + size), len(x))
    return torch.cat(out) if out else x[:0].clone()


def _predictions(model: nn.Module, x: torch.Tensor, size: int) -> torch.Tensor:
    """The model's predicted classes for ``x``, in batches (on the CPU)."""
    device = model_device(model)
    with torch.no_grad():
        out = [model(x[i:i + size].to(device)).argmax(1).cpu() for i in range(0, len(x), size)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)
