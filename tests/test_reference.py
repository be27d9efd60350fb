"""The reference engine (attacks.reference): the suite's steps computed by pyautoattack and torchattacks,
equal to those packages run on their own, and the cross-check of our engine against it."""

from __future__ import annotations

from importlib.metadata import version

import pytest
import torch
import torchattacks

import attacks
from conftest import still_robust as _robust


# few points left for Square's 5000 queries; in L1 they stay many at any radius that leaves one (minutes)
@pytest.mark.parametrize("norm,eps", [("Linf", 0.15), ("L2", 2.0), pytest.param("L1", 15.0, marks=pytest.mark.slow)])
def test_reference_engine_is_pyautoattack_standard_point_for_point(tiny_classifier, norm, eps):
    """The same batches (the robust points in order, bs at a time) and seeds as AutoAttack's own loop: the
    verdicts must be pyautoattack's run_standard_evaluation's, every one."""
    from pyautoattack import AutoAttack

    model, x, y = tiny_classifier
    x, y = x[:40], y[:40]
    reference = AutoAttack(model, norm=norm, eps=eps, version="standard", seed=0, device="cpu")
    x_ref, _ = reference.run_standard_evaluation(x, y, batch_size=20)
    expected = _robust(model, x_ref, y)
    result = attacks.evaluate(model, x, y, "autoattack", eps=eps, norm=norm, batch_size=20, engine="reference",
                              sanity_checks=False)
    assert 0 < int(expected.sum()) < int((model(x).argmax(1) == y).sum())
    assert torch.equal(torch.tensor(result.points["robust"]), expected)
    assert result.engine == "reference"
    assert result.computed_by["apgd-t"] == f"pyautoattack {version('pyautoattack')} APGDAttack_targeted"
    assert all(a.settings["engine"] == "reference" for a in result.attacks)


def test_reference_pgd_is_torchattacks_pgd(tiny_classifier):
    """PGD by torchattacks, seeded with the evaluation's seed, on the points the clean pass left."""
    model, x, y = tiny_classifier
    x, y = x[:80], y[:80]
    suite = {"name": "pgd10", "attacks": [{"attack": "pgd", "steps": 10, "alpha": 0.0125}]}
    result = attacks.evaluate(model, x, y, suite, eps=0.05, seed=3, engine="reference", sanity_checks=False)
    correct = (model(x).argmax(1) == y).nonzero().flatten()
    torch.manual_seed(3)
    x_ref = torchattacks.PGD(model, eps=0.05, alpha=0.0125, steps=10, random_start=True)(x[correct], y[correct])
    expected = torch.zeros(len(y), dtype=torch.bool)
    expected[correct] = _robust(model, x_ref, y[correct])
    assert torch.equal(torch.tensor(result.points["robust"]), expected)
    assert result.computed_by == {"pgd": f"torchattacks {torchattacks.__version__} PGD"}


def test_reference_engine_leaves_the_global_generator_alone(tiny_classifier):
    model, x, y = tiny_classifier
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    attacks.evaluate(model, x[:20], y[:20], {"name": "p", "attacks": [{"attack": "pgd", "steps": 2}]}, eps=0.05,
                     engine="reference", sanity_checks=False)
    assert torch.equal(torch.random.get_rng_state(), before)


@pytest.mark.parametrize("suite,norm,named", [
    ("pgd", "Linf", "'pgd-50-margin' (torchattacks' PGD has no margin loss)"),
    ("fast", "L2", "'fgsm' (torchattacks' FGSM is Linf only)"),
    ({"name": "c", "attacks": [{"attack": "cw-l2", "search_steps": 3}]}, "L2",
     "'cw-l2' (torchattacks' CW has no binary"),
])
def test_reference_engine_names_the_steps_it_cannot_run(tiny_classifier, suite, norm, named):
    model, x, y = tiny_classifier
    with pytest.raises(attacks.AttackError, match="reference engine cannot run") as caught:
        attacks.evaluate(model, x[:8], y[:8], suite, norm=norm, engine="reference")
    assert named in str(caught.value)


def test_reference_engine_refuses_views_transfer_bf16_and_unknown_engines(tiny_classifier):
    model, x, y = tiny_classifier
    with pytest.raises(attacks.AttackError, match=r"'transfer \[surrogate0\]' \(no reference package"):
        attacks.evaluate(model, x[:8], y[:8], "fast", engine="reference", surrogates=[model])
    with pytest.raises(attacks.AttackError, match=r"'pgd-20 \[eot\]' \(it attacks through a view"):
        attacks.evaluate(model, x[:8], y[:8], "fast", engine="reference", gradient_views={"eot": attacks.EOT(model, 2)})
    with pytest.raises(attacks.AttackError, match="fp32 only"):
        attacks.evaluate(model, x[:8], y[:8], "fast", engine="reference", precision="bf16")
    with pytest.raises(attacks.AttackError, match="engine must be one of ours, reference"):
        attacks.evaluate(model, x[:8], y[:8], "fast", engine="autoattack")


def test_cross_check_lists_each_differing_point(tiny_classifier):
    """Ours against the reference on a suite where both run the same PGD from other starts; a verdict
    changed on purpose in one of them is named, on the right side."""
    model, x, y = tiny_classifier
    x, y = x[:60], y[:60]
    suite = {"name": "pgd20", "attacks": [{"attack": "pgd", "steps": 20, "alpha": 0.01}]}
    ours = attacks.evaluate(model, x, y, suite, eps=0.05, sanity_checks=False)
    reference = attacks.evaluate(model, x, y, suite, eps=0.05, engine="reference", sanity_checks=False)
    check = attacks.cross_check(ours, reference)
    assert check["points"] == 60 and check["reference"]["computed_by"]["pgd"].startswith("torchattacks")
    assert len(check["differ"]) == check["robust_only_for_ours"] + check["robust_only_for_reference"]
    broken = next(i for i, (r, b) in enumerate(zip(reference.points["robust"], reference.points["broken_by"]))
                  if not r and b == "pgd" and not ours.points["robust"][i])
    reference.points["robust"][broken] = True          # the injected mismatch: the reference "missed" it
    injected = attacks.cross_check(ours, reference)
    assert {"index": broken, "ours": "broken by pgd", "reference": "robust"} in injected["differ"]
    assert injected["robust_only_for_reference"] == check["robust_only_for_reference"] + 1
    assert f"#{broken} (ours: broken by pgd; reference: robust)" in attacks.cross_check_words(injected)
    with pytest.raises(attacks.AttackError, match="same points"):
        attacks.cross_check(ours, attacks.evaluate(model, x[:30], y[:30], suite, eps=0.05, sanity_checks=False))
