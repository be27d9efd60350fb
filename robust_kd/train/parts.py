"""Training parts: what trains beside the network's weights by rules of its own.

A part claims parameters for optimizers of its own, adjusts them after every step, adds numbers to
every epoch's record and keeps a little state in the checkpoints. The trainer calls every part's
hooks and knows nothing more of it; JPEG-DL's quantization tables are such a part
(:class:`robust_kd.jpeg.training.JpegTableTraining`). Every model gets every registered part; a part
with nothing to train in a model has every hook do nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from ..jpeg.training import JpegTableTraining
from .context import TrainingContext
from .recipe import TrainConfig


class TrainingPart(Protocol):
    state_key: str  # its key in the train state kept in checkpoints

    def parameters(self) -> list[nn.Parameter]:
        """The parameters it trains with its own optimizers (the network's optimizer leaves them out)."""
        ...

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Its optimizers by name (names unique among all optimizers; checkpoints keep them by name)."""
        ...

    def learning_rates(self, network_lr: float, base_lr: float) -> dict[str, float]:
        """The learning rate of each of its optimizers at a step where the network's schedule is at
        ``network_lr`` (its base LR being ``base_lr``)."""
        ...

    def prepare(self, context: TrainingContext) -> None:
        """Before the first epoch of a new run (a resume restores :meth:`state_dict` instead)."""
        ...

    def after_step(self) -> None:
        """After every optimizer step."""
        ...

    def epoch_metrics(self) -> dict[str, float]:
        """Numbers recorded with every epoch (and repeated in the summary)."""
        ...

    def state_dict(self) -> Any:
        """JSON-able state kept in checkpoints under :attr:`state_key`."""
        ...

    def load_state_dict(self, state: Any) -> None:
        ...


PartFactory = Callable[[nn.Module, TrainConfig], TrainingPart]

# each builds its part for a model; the order is that of the optimizers after the network's
PART_FACTORIES: dict[str, PartFactory] = {
    "jpeg_tables": lambda model, config: JpegTableTraining.of(model, config.jpeg),
}


def build_parts(model: nn.Module, config: TrainConfig) -> list[TrainingPart]:
    return [factory(model, config) for factory in PART_FACTORIES.values()]
