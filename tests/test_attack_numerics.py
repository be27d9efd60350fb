"""The numeric policy of an evaluation (attacks.verdict): a point leaves an attack only when the
verdict model, in IEEE float32, agrees that its example is misclassified; a confirmed point counts as
broken. On the CPU the attack's passes are made to round the other way than the verdict's, as bf16,
TF32 or another batch shape may on a GPU: its view of the model raises the wrong class by ``DELTA``,
so an example within ``DELTA`` of the boundary looks misclassified to the attack only."""

from __future__ import annotations

import contextlib
import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attacks

DELTA = 0.5
EPS = 0.05


class TwoClasses(nn.Module):
    """Logits (w·x + b, 0): a linear boundary, so that the attacks' steps are easy to follow."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w)
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.flatten(1) * self.w).sum(dim=1) + self.b
        return torch.stack([z, torch.zeros_like(z)], dim=1)


class Lying(nn.Module):
    """``model``'s logits with class 1 (the wrong class of every point here) raised by ``delta``: a
    constant, so the gradient is the model's, and the cross-entropy orders the iterates as the model's
    does. An attack's steps are those it takes on the model itself; only its own idea of
    "misclassified" comes early (a margin below ``delta``)."""

    def __init__(self, model: nn.Module, delta: float) -> None:
        super().__init__()
        self.model, self.delta = model, delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        return z + self.delta * F.one_hot(torch.ones(len(z), dtype=torch.long), z.shape[1]).to(z)


@pytest.fixture
def linear_problem():
    generator = torch.Generator().manual_seed(3)
    w = torch.randn(16, generator=generator)
    x = torch.rand(128, 1, 4, 4, generator=generator)
    b = -float((x.flatten(1) * w).sum(dim=1).median())
    model = TwoClasses(w, b)
    with torch.no_grad():
        x = x[model(x).argmax(dim=1) == 0]       # points of class 0, all classified correctly at first
    return model, x, torch.zeros(len(x), dtype=torch.long)


SUITES = {
    "pgd-early-stop": {"attacks": [{"attack": "pgd", "steps": 20}]},
    "apgd-ce": {"attacks": [{"attack": "apgd", "loss": "ce", "steps": 20}]},
}


@pytest.mark.parametrize("case", sorted(SUITES))
def test_a_point_leaves_an_attack_only_when_the_verdict_agrees(linear_problem, monkeypatch, case):
    model, x, y = linear_problem
    settings = dict(eps=EPS, sanity_checks=False, fold_batchnorm=False, channels_last=False, batch_size=16)
    honest = attacks.evaluate(model, x, y, SUITES[case], **settings)
    robust = sum(honest.points["robust"])
    assert 0 < robust < len(y)                      # some points break, some do not

    run_module = importlib.import_module("attacks.run")
    monkeypatch.setattr(run_module, "in_precision", lambda view, precision: Lying(view, DELTA))
    lied_to = attacks.evaluate(model, x, y, SUITES[case], **settings)
    # the attack believed points broken early; each stayed in it until the verdict agreed: the same verdicts
    assert lied_to.points == honest.points

    # the lie matters: an attack with no judge, which trusts its own passes (as before this policy), leaves
    # points robust that it would have broken, because it stopped on a rounding of its own
    monkeypatch.setattr(run_module, "judging", lambda judge: contextlib.nullcontext(judge))
    trusting = attacks.evaluate(model, x, y, SUITES[case], **settings)
    assert sum(trusting.points["robust"]) > robust


def test_a_retired_point_counts_as_broken_whatever_the_verdict_pass_rounds_to(linear_problem, monkeypatch):
    """The end-of-batch verdict pass may run at another batch shape than the judge's check (on CUDA:
    another cuDNN algorithm): a point an attack retired with a confirmed example is broken whatever
    that pass says."""
    model, x, y = linear_problem
    settings = dict(eps=EPS, sanity_checks=False, fold_batchnorm=False, channels_last=False, batch_size=16)
    suite = SUITES["pgd-early-stop"]
    honest = attacks.evaluate(model, x, y, suite, **settings)
    broken = [i for i, b in enumerate(honest.points["broken_by"]) if b not in (None, "clean")]
    assert broken

    judge_module = importlib.import_module("attacks.verdict")
    real = judge_module.broken_by_logits
    calls = []

    def rounds_the_other_way(logits, labels):
        """The verdict pass at the end of each batch sees every point as correctly classified."""
        calls.append(len(labels))
        return real(logits, labels) & False

    run_module = importlib.import_module("attacks.run")
    monkeypatch.setattr(run_module, "broken_by_logits", rounds_the_other_way)
    judged = attacks.evaluate(model, x, y, suite, **settings)
    assert calls and judged.points == honest.points


def test_a_direct_call_has_no_judge_and_trusts_its_own_passes(linear_problem):
    """Outside an evaluation the attack's own passes decide, as in torchattacks."""
    model, x, y = linear_problem
    view = Lying(model, DELTA)
    x_adv = attacks.PGD(eps=EPS, steps=20)(view, x, y)
    with torch.no_grad():
        believed = view(x_adv).argmax(dim=1) != y
        real = model(x_adv).argmax(dim=1) != y
    assert bool((believed & ~real).any())      # stopped where only the view saw a misclassification
