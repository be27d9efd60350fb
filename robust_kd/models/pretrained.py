"""Pretrained models that ship inside installed packages: attackable with no training or download.

``autoattack_resnet18_cifar10``: the normally trained CIFAR-10 ResNet-18 of the AutoAttack package
(``pyautoattack/examples/model_test.pt``, a state dict for the kuang-liu ResNet-18 in
``examples/resnet.py`` beside it, inputs in [0, 1] without normalization). Its architecture is our
``resnet18``; only the key names differ (``shortcut`` → ``downsample``, ``linear`` → ``fc``), and
its normalization is the identity.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import UserError
from ..model_checks import check_weights
from .registry import create_model


@dataclass(frozen=True)
class PretrainedSpec:
    name: str
    description: str
    data: str  # the data set it was trained for
    num_classes: int
    load: Callable[[], nn.Module]


PRETRAINED: dict[str, PretrainedSpec] = {}


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the package '{package}' is not installed; install it with: pip install {package}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise UserError(f"'{path}' is missing from the installed '{package}' package; reinstall it")
    return path


def _autoattack_resnet18() -> nn.Module:
    path = _package_file("pyautoattack", "examples/model_test.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (any failure to read is a broken install)
        raise UserError(f"cannot read '{path}' ({type(err).__name__}); reinstall pyautoattack") from None
    if not isinstance(state, dict):
        raise UserError(f"'{path}' holds no state dict; reinstall pyautoattack")
    check_weights(f"the pretrained model in '{path}'", state)
    renamed = {key.replace("shortcut", "downsample").replace("linear.", "fc."): value for key, value in state.items()}
    model = create_model("resnet18", 10, in_channels=3, image_size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    model.net.load_state_dict(renamed)
    model.arch = "autoattack_resnet18_cifar10"
    return model.eval()


def register_pretrained(spec: PretrainedSpec) -> None:
    PRETRAINED[spec.name] = spec


register_pretrained(PretrainedSpec(
    "autoattack_resnet18_cifar10",
    "CIFAR-10 ResNet-18, normally trained, shipped with the AutoAttack package (pyautoattack)",
    data="cifar10", num_classes=10, load=_autoattack_resnet18,
))


def load_pretrained(name: str) -> nn.Module:
    return PRETRAINED[name].load()
