"""What the library takes from its caller, checked and converted in one place: images and labels
(tensors, numpy arrays or lists), eps values, counts and keywords. A mistake here is one
:class:`AttackError` that says what to pass, before any attack runs."""

from __future__ import annotations

import difflib
import numbers
from typing import Any, Iterable

import torch
from torch import nn

from .errors import AttackError


def model_dtype(model: nn.Module) -> torch.dtype | None:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def images_and_labels(x: Any, y: Any, model: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (B×C×H×W, floats in [0, 1]) and ``y`` (B class indices) as tensors: numpy arrays and
    lists are converted, labels become int64, and images take the model's floating dtype."""
    try:
        x = x if isinstance(x, torch.Tensor) else torch.as_tensor(x)
        y = y if isinstance(y, torch.Tensor) else torch.as_tensor(y)
    except (TypeError, ValueError, RuntimeError) as err:
        raise AttackError(f"images and labels must be tensors, numpy arrays or lists of numbers ({err})") from None
    if not x.is_floating_point():
        hint = " (8-bit images: divide them by 255)" if x.dtype == torch.uint8 else ""
        raise AttackError(f"images must be floats in [0, 1], got {x.dtype}{hint}")
    if x.dim() != 4 or y.dim() != 1 or x.shape[0] != y.shape[0]:
        raise AttackError(f"need images B×C×H×W and B labels, got {tuple(x.shape)} and {tuple(y.shape)}")
    if y.dtype == torch.bool or y.is_complex() or (y.is_floating_point() and not bool((y == y.round()).all())):
        raise AttackError(f"labels must be class indices (integers), got {y.dtype} values")
    y = y.long()
    if len(y) and int(y.min()) < 0:
        raise AttackError(f"labels must be class indices from 0, got {int(y.min())}")
    dtype = None if model is None else model_dtype(model)
    if dtype is not None and x.dtype != dtype:
        x = x.to(dtype)     # a float64 or half image batch for a float32 model, and the like
    return x, y


def _number(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        return float(value) if value.dim() == 0 and not value.is_complex() and value.dtype != torch.bool else None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return None


def eps_values(eps: Any) -> float | list[float] | None:
    """``eps`` as a number or a list of distinct numbers (numpy and 0-d torch scalars accepted)."""
    if eps is None:
        return None
    single = _number(eps)
    if single is not None:
        return single
    if isinstance(eps, (str, bytes)) or not isinstance(eps, (Iterable, torch.Tensor)):
        raise AttackError(f"eps must be a number or a list of numbers, got {eps!r}"
                          + (" (in Python, write 8/255 without quotes)" if isinstance(eps, str) else ""))
    values = [_number(e) for e in (eps.flatten() if isinstance(eps, torch.Tensor) else eps)]
    if not values or any(v is None for v in values):
        raise AttackError(f"eps must be a number or a non-empty list of numbers, got {eps!r}")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise AttackError(f"eps {', '.join(f'{v:g}' for v in repeated)} is given more than once; give each eps once")
    return values


def count(name: str, value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise AttackError(f"{name} must be an integer, got {value!r}")
    if int(value) < minimum:
        raise AttackError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def unknown_keywords(given: Iterable[str], known: Iterable[str], also: Iterable[str] = ()) -> None:
    """Refuse keywords of ``evaluate`` that no suite takes (a typo would otherwise be passed on and
    ignored: ``state_pth=`` would run without saving anything)."""
    known = sorted(set(known))
    for word in given:
        if word not in known:
            close = difflib.get_close_matches(word, [*known, *also], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise AttackError(f"evaluate() got an unknown keyword '{word}'{hint}; the suites also take: "
                              f"{', '.join(known)}")
