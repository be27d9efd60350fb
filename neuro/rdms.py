"""Representational dissimilarity matrices as explicit objects.

An ``RDMs`` holds one or more RDMs over the same conditions, stored as upper-triangle vectors
(row-major, diagonal excluded: the order of ``np.triu_indices(n, 1)``, scipy's ``squareform`` and
rsatoolbox). It carries the condition names, the dissimilarity measure, a name per RDM (a subject,
a session, a layer) and free descriptors (e.g. ``simulated: True``), and saves to ``.npz`` without
pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import NeuroError


def n_conditions_from_pairs(n_pairs: int) -> int:
    n = int(round((1 + np.sqrt(1 + 8 * n_pairs)) / 2))
    if n * (n - 1) // 2 != n_pairs:
        raise NeuroError(f"{n_pairs} dissimilarities are not the upper triangle of a square matrix")
    return n


def matrix_to_vector(matrix: np.ndarray) -> np.ndarray:
    """Upper triangles of one (n×n) or several (k×n×n) square matrices."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim == 2:
        matrix = matrix[None]
    if matrix.ndim != 3 or matrix.shape[1] != matrix.shape[2]:
        raise NeuroError(f"an RDM must be square (n × n), got shape {matrix.shape[-2:]}")
    iu = np.triu_indices(matrix.shape[1], 1)
    return matrix[:, iu[0], iu[1]]


@dataclass
class RDMs:
    vectors: np.ndarray
    conditions: np.ndarray
    measure: str
    names: np.ndarray | None = None
    descriptors: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        vectors = np.asarray(self.vectors, dtype=np.float64)
        if vectors.ndim == 1:
            vectors = vectors[None]
        if vectors.ndim != 2:
            raise NeuroError(f"RDM vectors must be 1-D or 2-D, got shape {vectors.shape}")
        n = n_conditions_from_pairs(vectors.shape[1])
        self.vectors = vectors
        self.conditions = np.asarray([str(c) for c in self.conditions])
        if len(self.conditions) != n:
            raise NeuroError(f"{len(self.conditions)} condition names for an RDM over {n} conditions")
        if len(set(self.conditions.tolist())) != n:
            repeated = sorted({c for c in self.conditions.tolist() if list(self.conditions).count(c) > 1})
            raise NeuroError(f"condition names repeat ({', '.join(repr(c) for c in repeated[:4])}); an RDM has each "
                             "condition once (compute_rdm averages the patterns of a repeated label)")
        if self.names is None:
            self.names = np.asarray([str(i) for i in range(vectors.shape[0])])
        self.names = np.asarray([str(s) for s in self.names])
        if len(self.names) != vectors.shape[0]:
            raise NeuroError(f"{len(self.names)} RDM names for {vectors.shape[0]} RDMs")

    # construction -------------------------------------------------------------------------------
    @classmethod
    def from_matrices(cls, matrices: np.ndarray, conditions: Sequence | None = None, measure: str = "unknown",
                      names: Sequence | None = None, check_symmetric: bool = True, **descriptors: Any) -> "RDMs":
        matrices = np.asarray(matrices, dtype=np.float64)
        if matrices.ndim == 2:
            matrices = matrices[None]
        if matrices.ndim != 3 or matrices.shape[1] != matrices.shape[2]:
            raise NeuroError(f"RDMs must be square matrices, got shape {matrices.shape}")
        if check_symmetric:
            # non-finite entries (NaN, ±inf) are missing: they neither break nor set the scale of the checks
            finite = np.isfinite(matrices) & np.isfinite(matrices.transpose(0, 2, 1))
            scale = 1e-6 * max(1.0, float(np.abs(matrices[finite]).max(initial=0.0)))
            gap = np.abs(np.where(finite, matrices, 0.0) - np.where(finite, matrices, 0.0).transpose(0, 2, 1))
            if gap.max(initial=0.0) > scale:
                raise NeuroError("the RDM is not symmetric; pass a dissimilarity matrix (or symmetrise it first)")
            diagonal = np.abs(np.diagonal(matrices, axis1=1, axis2=2))
            diagonal = diagonal[np.isfinite(diagonal)]
            if diagonal.size and diagonal.max() > scale:
                raise NeuroError("the RDM's diagonal is not zero: a similarity matrix? pass dissimilarities (e.g. "
                                 "1 - correlation)")
        n = matrices.shape[1]
        conditions = [str(i) for i in range(n)] if conditions is None else conditions
        return cls(matrix_to_vector(matrices), np.asarray(conditions), measure,
                   None if names is None else np.asarray(names), dict(descriptors))

    # views ----------------------------------------------------------------------------------------
    @property
    def n_rdm(self) -> int:
        return self.vectors.shape[0]

    @property
    def n_cond(self) -> int:
        return len(self.conditions)

    def matrices(self) -> np.ndarray:
        n = self.n_cond
        out = np.zeros((self.n_rdm, n, n))
        iu = np.triu_indices(n, 1)
        out[:, iu[0], iu[1]] = self.vectors
        out[:, iu[1], iu[0]] = self.vectors
        return out

    def __len__(self) -> int:
        return self.n_rdm

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> "RDMs":
        idx = np.atleast_1d(np.arange(self.n_rdm)[index])
        return RDMs(self.vectors[idx], self.conditions, self.measure, self.names[idx], dict(self.descriptors))

    def subset_conditions(self, keep: Sequence[str] | np.ndarray) -> "RDMs":
        """The RDMs restricted to (and reordered as) the given condition names, integer indices, or a
        boolean mask over the conditions."""
        keep = np.asarray(keep)
        if keep.dtype == bool:
            if keep.shape != (self.n_cond,):
                raise NeuroError(f"a condition mask needs {self.n_cond} entries, got {keep.size}")
            idx = np.flatnonzero(keep)
        elif keep.dtype.kind in "iu":
            idx = keep
            if idx.size and (idx.min() < -self.n_cond or idx.max() >= self.n_cond):
                raise NeuroError(f"condition indices must lie in 0..{self.n_cond - 1}, got {idx.min()}..{idx.max()}")
        else:
            where = {c: i for i, c in enumerate(self.conditions)}
            unknown = [str(c) for c in keep if str(c) not in where]
            if unknown:
                raise NeuroError(f"unknown conditions {unknown[:5]}; the RDM has "
                                 f"{[str(c) for c in self.conditions[:5]]}{'...' if self.n_cond > 5 else ''}")
            idx = np.array([where[str(c)] for c in keep])
        m = self.matrices()[:, idx][:, :, idx]
        return RDMs(matrix_to_vector(m), self.conditions[idx], self.measure, self.names, dict(self.descriptors))

    def mean(self) -> "RDMs":
        return RDMs(np.nanmean(self.vectors, axis=0, keepdims=True), self.conditions, self.measure,
                    np.asarray(["mean"]), dict(self.descriptors))

    @staticmethod
    def concat(items: Sequence["RDMs"]) -> "RDMs":
        if not items:
            raise NeuroError("nothing to concatenate")
        first = items[0]
        for other in items[1:]:
            if list(other.conditions) != list(first.conditions):
                raise NeuroError(f"RDMs over different conditions cannot be concatenated: "
                                 f"{condition_difference(first.conditions, other.conditions)}")
        measures = {r.measure for r in items}
        measure = first.measure if len(measures) == 1 else "mixed"    # e.g. correlation layers and a euclidean model
        return RDMs(np.concatenate([r.vectors for r in items]), first.conditions, measure,
                    np.concatenate([r.names for r in items]), dict(first.descriptors))

    # files -----------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write a ``.npz`` (no pickle): vectors, conditions, names, measure, descriptors as JSON."""
        from .files import atomic_write_bytes
        import io
        buf = io.BytesIO()
        np.savez(buf, vectors=self.vectors, conditions=self.conditions.astype(str), names=self.names.astype(str),
                 measure=np.asarray(self.measure), descriptors=np.asarray(json.dumps(self.descriptors, default=str)))
        path = Path(path)
        atomic_write_bytes(path, buf.getvalue())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "RDMs":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as f:
                return cls(f["vectors"], f["conditions"], str(f["measure"]), f["names"],
                           json.loads(str(f["descriptors"])))
        except FileNotFoundError:
            raise NeuroError(f"RDM file {path} does not exist") from None
        except Exception as exc:  # noqa: BLE001  a damaged or foreign .npz: BadZipFile, KeyError, ValueError...
            raise NeuroError(f"{path} is not an RDM file written by neuro ({type(exc).__name__}: {exc}); "
                             "load plain matrices with neuro.load_rdm") from None

    def __repr__(self) -> str:
        names = [str(n) for n in self.names[:4]]
        return f"RDMs({self.n_rdm} × {self.n_cond} conditions, measure={self.measure!r}, names={names})"


def condition_difference(first: Sequence[str], second: Sequence[str], shown: int = 4) -> str:
    """How two lists of condition labels differ, in words, for an error message."""
    a, b = [str(c) for c in first], [str(c) for c in second]
    if sorted(a) == sorted(b):
        return "the same conditions in another order (subset_conditions() puts them in one order)"

    def some(labels: list[str]) -> str:
        listed = ", ".join(repr(c) for c in labels[:shown])
        return listed + (f" and {len(labels) - shown} more" if len(labels) > shown else "") if labels else "none"

    only_a, only_b = [c for c in a if c not in set(b)], [c for c in b if c not in set(a)]
    hint = ""
    if all(c.isdigit() for c in a) != all(c.isdigit() for c in b):
        hint = ("; RDMs of activations are labelled 0, 1, ... unless compute_rdm(..., conditions=...) names "
                "their conditions")
    return f"only in the first: {some(only_a)}; only in the second: {some(only_b)}{hint}"
