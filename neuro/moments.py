"""The fast path of Pearson and cosine on weighted samples: weighted moments.

On a sample that weights the distinct condition pairs (``neuro.samples``), Pearson and cosine of two
RDMs need only sums over the pairs: Σ w, Σ w·u, Σ w·u², Σ w·u·v. For vectors shared by every sample
(a bootstrap) all of them come from one ``Samples.pair_sums``, so no resampled vector is built.

Each vector is first shifted by its mean over the pairs it has. Pearson is blind to the shift, and the
one-pass moments Σ w·u² − (Σ w·u)²/Σ w do not lose digits to an offset (a Euclidean RDM far from 0,
say) by cancellation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .samples import Evaluation, Samples


@dataclass(frozen=True)
class _Sums:
    """Sums over each sample's pairs, weighted: m (B,) Σw; x (k, B), y (s, B) Σw·v (these three only for
    Pearson); xx, yy Σw·v²; xy (k, s, B) Σw·x·y; yy_all (s, s, B) Σw·y·y' (only for a noise ceiling)."""

    m: np.ndarray | None
    x: np.ndarray | None
    xx: np.ndarray
    y: np.ndarray | None
    yy: np.ndarray
    xy: np.ndarray
    yy_all: np.ndarray | None


def _shared_sums(x: np.ndarray, y: np.ndarray, samples: Samples, centred: bool, subject_pairs: bool) -> _Sums:
    """The sums for vectors shared by every sample (x (k, P), y (s, P)) from one pass over the samples."""
    k, s, p = len(x), len(y), y.shape[1]
    ya, yb = np.triu_indices(s) if subject_pairs else (np.arange(s), np.arange(s))
    blocks = {"xx": x * x, "xy": (x[:, None] * y[None]).reshape(k * s, p), "yy": y[ya] * y[yb]}
    if centred:
        blocks.update(m=np.ones((1, p)), x=x, y=y)
    split = np.cumsum([len(block) for block in blocks.values()])[:-1]
    sums = dict(zip(blocks, np.split(samples.pair_sums(np.concatenate(list(blocks.values()))), split)))
    yy_all = None
    if subject_pairs:
        yy_all = np.empty((s, s, len(samples)))
        yy_all[ya, yb] = yy_all[yb, ya] = sums["yy"]
        sums["yy"] = np.einsum("ssb->sb", yy_all)
    m = sums["m"][0] if centred else None
    return _Sums(m, sums.get("x"), sums["xx"], sums.get("y"), sums["yy"], sums["xy"].reshape(k, s, len(samples)),
                 yy_all)


def _per_sample_sums(x: np.ndarray, y: np.ndarray, samples: Samples, centred: bool, subject_pairs: bool) -> _Sums:
    """The sums for models given per sample (x (k, B, P)) and subjects shared (y (s, P))."""
    k, b, p = x.shape
    weighted = x * samples.pairs
    shared = _shared_sums(x[:0, 0], y, samples, centred, subject_pairs)
    xy = (weighted.reshape(k * b, p) @ y.T).reshape(k, b, len(y)).transpose(0, 2, 1)
    return _Sums(shared.m, weighted.sum(-1) if centred else None, (weighted * x).sum(-1), shared.y, shared.yy, xy,
                 shared.yy_all)


def _pooled_ceiling(sim: np.ndarray, copies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper (B, s) from the subjects' similarity matrices ``sim`` (B, s, s).

    The pooled RDM is a weighted mean of normalised subject RDMs (Pearson: z-scores; cosine: unit RMS),
    all of one norm, so sim(y_i, Σ_t c_t u_t) = Σ_t c_t sim_it / sqrt(Σ_tu c_t c_u sim_tu)."""
    def against(c: np.ndarray) -> np.ndarray:                                    # (B, s) → (B, s)
        num = np.einsum("bt,bit->bi", c, sim)
        den = np.sqrt(np.einsum("bt,bu,btu->b", c, c, sim))
        with np.errstate(invalid="ignore", divide="ignore"):
            return num / den[:, None]

    upper = against(copies)
    lower = np.empty_like(upper)
    for i in range(sim.shape[1]):
        others = copies.copy()
        others[:, i] = 0.0
        lower[:, i] = against(others)[:, i]
    return lower, upper


@dataclass(frozen=True)
class MomentPath:
    """Pearson (``centred``) or cosine on a batch of samples (the arrays as in ``neuro.comparators``)."""

    centred: bool

    def batch_size(self, chunk: int, n_pairs: int) -> int:
        return max(chunk, 256)                   # the counts' products are cheap: few, large batches

    def _prepared(self, v: np.ndarray) -> np.ndarray:
        """Finite vectors (a missing pair's entry is 0: its weight is 0 anyway), shifted for Pearson."""
        finite = np.isfinite(v)
        v = np.where(finite, v, 0.0)
        if self.centred:
            with np.errstate(invalid="ignore", divide="ignore"):
                shift = v.sum(-1, keepdims=True) / finite.sum(-1, keepdims=True)
            v = np.where(finite, v - np.nan_to_num(shift), 0.0)
        return v

    def _correlations(self, uv: np.ndarray, u: np.ndarray, uu: np.ndarray, v: np.ndarray, vv: np.ndarray,
                      m: np.ndarray) -> np.ndarray:
        """(U, V, B) from the sums Σw·u·v (U, V, B), Σw·u, Σw·u² (U, B), Σw·v, Σw·v² (V, B), Σw (B,)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.centred:
                uv = uv - u[:, None] * v[None] / m
                uu, vv = uu - u * u / m, vv - v * v / m
            return uv / np.sqrt(uu)[:, None] / np.sqrt(vv)[None]

    def evaluate(self, x: np.ndarray, y: np.ndarray, samples: Samples,
                 copies: np.ndarray | None = None) -> Evaluation:
        x, y = self._prepared(x), self._prepared(y)
        sums = (_shared_sums if x.ndim == 2 else _per_sample_sums)(x, y, samples, self.centred, copies is not None)
        similarity = self._correlations(sums.xy, sums.x, sums.xx, sums.y, sums.yy, sums.m)
        if copies is None:
            return Evaluation(similarity)
        subjects = self._correlations(sums.yy_all, sums.y, sums.yy, sums.y, sums.yy, sums.m)     # (s, s, B)
        return Evaluation(similarity, *_pooled_ceiling(subjects.transpose(2, 0, 1), copies))
