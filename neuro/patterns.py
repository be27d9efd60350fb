"""Condition × channel response patterns: the input of every RDM method.

A ``Patterns`` holds one row per observation (a condition in a run, a stimulus, an image) and one
column per channel (a voxel, a unit of a network layer). ``conditions`` names the rows; ``runs``
(optional) says which independent measurement each row came from, for cross-validated distances.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .errors import NeuroError


def group_means(data: np.ndarray, rows: np.ndarray, n_groups: int) -> np.ndarray:
    """Mean of the rows of ``data`` per group label in ``rows`` (0 … n_groups−1), as one BLAS product."""
    counts = np.bincount(rows, minlength=n_groups)
    if (counts == 0).any():
        raise NeuroError(f"group {int(np.flatnonzero(counts == 0)[0])} has no observations")
    if counts.max() == 1 and len(rows) == n_groups:
        out = np.empty((n_groups, data.shape[1]))
        out[rows] = data
        return out
    onehot = np.zeros((n_groups, len(rows)))
    onehot[rows, np.arange(len(rows))] = 1.0 / counts[rows]
    return onehot @ data


@dataclass
class Patterns:
    data: np.ndarray
    conditions: np.ndarray
    runs: np.ndarray | None = None
    descriptors: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        data = np.asarray(self.data, dtype=np.float64)
        if data.ndim != 2:
            raise NeuroError(f"patterns must be 2-D (observations × channels), got shape {data.shape}; "
                             "reshape each observation to one row")
        if data.shape[0] == 0 or data.shape[1] == 0:
            raise NeuroError(f"patterns are empty (shape {data.shape}); check the mask or the layer")
        self.data = data
        self.conditions = np.asarray([str(c) for c in self.conditions])
        if self.conditions.shape != (data.shape[0],):
            raise NeuroError(f"{len(self.conditions)} condition labels for {data.shape[0]} observations; "
                             "give one label per row")
        if self.runs is not None:
            self.runs = np.asarray(self.runs)
            if self.runs.shape != (data.shape[0],):
                raise NeuroError(f"{len(self.runs)} run labels for {data.shape[0]} observations; "
                                 "give one run per row")
        bad = ~np.isfinite(data)
        if bad.any():
            cols = int(bad.any(axis=0).sum())
            raise NeuroError(f"patterns hold {int(bad.sum())} NaN/inf values in {cols} channels; "
                             "drop those channels (Patterns.drop_nonfinite_channels) or fix the input")

    @classmethod
    def from_array(cls, data: np.ndarray, conditions: Sequence | None = None, runs: Sequence | None = None,
                   **descriptors: Any) -> "Patterns":
        data = np.asarray(data)
        if data.ndim > 2:
            data = data.reshape(data.shape[0], -1)
        if conditions is None:
            conditions = [str(i) for i in range(data.shape[0])]
        return cls(data, np.asarray(conditions), None if runs is None else np.asarray(runs), dict(descriptors))

    @staticmethod
    def drop_nonfinite_channels(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Channels (columns) with any NaN/inf removed; returns (data, kept-column mask)."""
        data = np.asarray(data, dtype=np.float64)
        keep = np.isfinite(data).all(axis=0)
        if not keep.any():
            raise NeuroError("every channel holds NaN/inf values; nothing is left to compare")
        return data[:, keep], keep

    @property
    def n_obs(self) -> int:
        return self.data.shape[0]

    @property
    def n_channels(self) -> int:
        return self.data.shape[1]

    def unique_conditions(self) -> np.ndarray:
        """Condition names in order of first appearance."""
        _, first = np.unique(self.conditions, return_index=True)
        return self.conditions[np.sort(first)]

    def condition_means(self, order: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One row per condition (the mean of its observations); returns (means, condition names)."""
        names = self.unique_conditions() if order is None else np.asarray([str(c) for c in order])
        index = {c: i for i, c in enumerate(names)}
        missing = set(self.conditions) - set(index)
        if missing:
            raise NeuroError(f"conditions {sorted(missing)[:5]} are not in the requested order")
        rows = np.array([index[c] for c in self.conditions])
        return group_means(self.data, rows, len(names)), names

    def subset_channels(self, mask: np.ndarray) -> "Patterns":
        return Patterns(self.data[:, mask], self.conditions, self.runs, dict(self.descriptors))
