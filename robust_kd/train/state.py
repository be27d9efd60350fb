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
    part_states: dict[str, Any] = field(default_factory=dict)  # each training part's, by its state key
    objective_state: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The checkpoint's ``trainer`` entry. A part's state stands under its own key beside the others
        (``jpeg_initial_tables``), where checkpoints have always kept it."""
        data = dataclasses.asdict(self)
        parts, objective = data.pop("part_states"), data.pop("objective_state")
        return {**data, **parts, "objective_state": objective}

    @classmethod
    def from_dict(cls, data: dict[str, Any], part_defaults: dict[str, Any]) -> TrainState:
        """Read :meth:`as_dict`'s output; a part whose key a checkpoint lacks gets its default state."""
        names = {f.name for f in dataclasses.fields(cls)} - {"part_states"}
        state = cls(**{k: v for k, v in data.items() if k in names})
        state.part_states = {key: data.get(key, default) for key, default in part_defaults.items()}
        return state
