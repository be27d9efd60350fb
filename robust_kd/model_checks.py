"""The checks every model a verb loads goes through, whatever loads it (a checkpoint for attack,
transfer, the RSA verbs, a distillation teacher, a JPEG table initialisation, a resumed training, the
report's table reader; a pretrained model): its weights are finite numbers. (Its metadata is checked
by :mod:`robust_kd.checkpoint_metadata`, as the checkpoint is read.)

A checkpoint whose weights hold NaN loads and runs: an attack's probe pass catches its NaN logits, but
a transfer matrix made on it reads "0.0% success", a teacher teaches nothing and an RSA compares
NaN activations. So the weights are checked where they are read, once, for every verb.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from .errors import UserError


def nonfinite_tensor(state: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first floating-point tensor of a state dict holding NaN or inf: (its name, "NaN" or "inf")."""
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return name, "NaN" if bool(torch.isnan(value).any()) else "inf"
    return None


def check_weights(where: str, state: Mapping[str, Any]) -> None:
    """Refuse weights that hold NaN or inf (a training that diverged, a damaged file): a model made of
    them gives NaN logits, which every verb would turn into numbers that mean nothing."""
    bad = nonfinite_tensor(state)
    if bad is not None:
        raise UserError(f"{where}: the weights hold {bad[1]} (first in '{bad[0]}'), so the model's outputs mean "
                        "nothing; use an earlier checkpoint (e.g. checkpoints/best.pt) or train again")
