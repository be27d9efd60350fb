"""Learning-rate schedules as pure functions of training progress (epochs, fractional).

Being a function of progress alone, a schedule needs no saved state: a resumed run computes the
same rate for the same step.
"""

from __future__ import annotations

import math

from .recipe import ScheduleConfig


def _step(config: ScheduleConfig, progress: float, epochs: int) -> float:
    # RepDistiller decays at the start of each milestone epoch (0-based epoch ≥ milestone)
    return config.gamma ** sum(1 for m in config.milestones if math.floor(progress) >= m)


def _cosine(config: ScheduleConfig, progress: float, epochs: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(progress / epochs, 1.0)))


def _constant(config: ScheduleConfig, progress: float, epochs: int) -> float:
    return 1.0


SCHEDULES = {"step": _step, "cosine": _cosine, "constant": _constant}


def lr_at(config: ScheduleConfig, base_lr: float, progress: float, epochs: int) -> float:
    """The learning rate after ``progress`` epochs (e.g. 2.5 = half-way through the third epoch)."""
    factor = SCHEDULES[config.name](config, progress, epochs)
    lr = config.min_lr + (base_lr - config.min_lr) * factor if config.name == "cosine" else base_lr * factor
    if config.warmup_epochs > 0 and progress < config.warmup_epochs:
        lr *= (progress + 1e-8) / config.warmup_epochs
    return lr
