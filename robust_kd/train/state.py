"""What a run has done so far, kept in its checkpoints so that training resumes where it stopped."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainState:
    epochs_done: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_accuracy: float = -1.0
    best_epoch: int = 0
    train_seconds: float = 0.0
    jpeg_initial_tables: list[dict[str, Any]] = field(default_factory=list)
    objective_state: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
