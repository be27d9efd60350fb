"""The attack library used from a script: what it takes (arrays, lists, dtypes, odd arguments), the
mistakes it refuses in one clear error, and the results it must not get wrong (NaN outputs, a Suite
built for another ball, a resume on other data)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import attacks
from attacks import AttackError, ModelOutputError

FAST = {"name": "quick", "attacks": [{"attack": "pgd", "steps": 5}]}


class SmallNet(nn.Module):
    def __init__(self, classes: int = 10, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, classes))

    def forward(self, x):
        return self.body(x)


def _case(classes: int = 10, n: int = 12):
    model = SmallNet(classes).eval()
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, 16, 16, generator=generator) * 0.9 + 0.05
    with torch.no_grad():
        y = model(x).argmax(1)          # every point right on clean input
    return model, x, y


def test_numpy_arrays_lists_and_other_dtypes_give_the_tensors_answer():
    model, x, y = _case()
    reference = attacks.evaluate(model, x, y, FAST, eps=0.03, sanity_checks=False)
    for xs, ys in [(x.numpy(), y.numpy()), (x, y.tolist()), (x.double(), y.int()),
                   (x.numpy().astype(np.float64), y.float())]:
        result = attacks.evaluate(model, xs, ys, FAST, eps=0.03, sanity_checks=False)
        assert result.points["robust"] == reference.points["robust"], (
            type(xs), ys.dtype if hasattr(ys, "dtype") else ys)
    x_adv = attacks.PGD(eps=0.03, steps=3)(model, x.numpy(), y.numpy())
    assert isinstance(x_adv, torch.Tensor) and x_adv.dtype == torch.float32


@pytest.mark.parametrize("change,message", [
    (lambda x, y: ((x * 255).to(torch.uint8), y), "divide them by 255"),
    (lambda x, y: (x, torch.cat([y[:1] * 0 - 1, y[1:]])), "class indices from 0"),
    (lambda x, y: (x, y + 0.5), "class indices"),
    (lambda x, y: (x[:0], y[:0]), "no points to evaluate"),
    (lambda x, y: (x[0], y), "B×C×H×W"),
])
def test_unusable_images_and_labels_are_refused_in_one_line(change, message):
    model, x, y = _case()
    xs, ys = change(x, y)
    with pytest.raises(AttackError, match=message):
        attacks.evaluate(model, xs, ys, FAST, eps=0.03, sanity_checks=False)


def test_eps_n_batch_size_seed_and_keywords_are_checked():
    model, x, y = _case()
    for kwargs, message in [({"eps": "8/255"}, "without quotes"), ({"eps": [0.01, 0.01]}, "more than once"),
                            ({"n": 0}, "n must be at least 1"), ({"n": 2.0}, "n must be an integer"),
                            ({"batch_size": 2.5}, "batch_size must be an integer"), ({"seed": None}, "seed must be"),
                            ({"state_pth": "s.json"}, "did you mean 'state_path'")]:
        with pytest.raises(AttackError, match=message):
            attacks.evaluate(model, x, y, FAST, **{"eps": 0.03, **kwargs})
    a = attacks.evaluate(model, x, y, FAST, eps=np.float32(0.03), sanity_checks=False)
    b = attacks.evaluate(model, x, y, FAST, eps=torch.tensor(0.03), sanity_checks=False)
    assert a.eps == b.eps == pytest.approx(0.03) and a.points == b.points
    with pytest.warns(UserWarning, match="the data have 12 points"):
        assert attacks.evaluate(model, x, y, FAST, eps=0.03, n=50, sanity_checks=False).n_examples == 12


def test_attack_settings_are_checked_when_the_attack_is_made():
    for make, message in [(lambda: attacks.APGD(loss="CE"), "loss must be one of 'ce', 'dlr'"),
                          (lambda: attacks.PGD(steps=2.5), "steps must be an integer"),
                          (lambda: attacks.PGD(eps="0.03"), "eps must be a number")]:
        with pytest.raises(AttackError, match=message):
            make()


def test_a_suite_object_built_for_another_ball_is_refused():
    model, x, y = _case()
    suite = attacks.Suite("mine", [attacks.SuiteStep("pgd", attacks.PGD(steps=3))])   # 8/255 Linf
    with pytest.raises(AttackError, match="step 'pgd' attacks Linf eps 8/255, but the evaluation is Linf eps 0.1"):
        attacks.evaluate(model, x, y, suite, eps=0.1)
    with pytest.raises(AttackError, match="the evaluation is L2"):
        attacks.evaluate(model, x, y, suite, eps=8 / 255, norm="L2")
    assert attacks.evaluate(model, x, y, suite, eps=8 / 255, sanity_checks=False).eps == pytest.approx(8 / 255)


class NaNAtZero(nn.Module):
    """NaN logits as soon as a pixel reaches 0; clean images (in [0.05, 0.95]) are fine."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        bad = x.flatten(1).amin(dim=1) <= 0
        return torch.where(bad[:, None], torch.full_like(out, float("nan")), out)


def test_nan_outputs_on_adversarial_examples_count_as_broken_and_are_flagged():
    model, x, _ = _case()
    with torch.no_grad():
        model.body[-1].bias[0] += 3.0     # most points are class 0: the argmax of a NaN row
        y = model(x).argmax(1)
    assert int((y == 0).sum()) >= 3
    suite = {"name": "one-step", "attacks": [{"attack": "fgsm"}]}
    result = attacks.evaluate(NaNAtZero(model), x, y, suite, eps=0.3, sanity_checks=False)
    # a step of 0.3 takes some pixel of every image from <= 0.25 down to 0; before, the points labelled 0
    # counted as robust there
    assert result.robust_accuracy == 0 and result.attacks[0].nonfinite_outputs == len(y)
    flag = next(f for f in result.flags if f.code == "nonfinite_outputs")
    assert flag.details == {"attack": "fgsm", "points": len(y)}


def test_a_resume_on_other_data_with_the_same_sums_is_refused(tmp_path):
    model, x, y = _case()
    x = (x * 255).round() / 255
    state = tmp_path / "state.json"
    attacks.evaluate(model, x, y, FAST, eps=0.03, state_path=state, sanity_checks=False)
    for other in (x.flip(-1), x[torch.arange(len(x) - 1, -1, -1)]):
        with pytest.raises(AttackError, match="data differ"):
            attacks.evaluate(model, other, y, FAST, eps=0.03, state_path=state, sanity_checks=False)
    with pytest.raises(AttackError, match="is a folder"):
        attacks.evaluate(model, x, y, FAST, eps=0.03, state_path=tmp_path, sanity_checks=False)


def test_dlr_attacks_say_how_many_classes_they_need():
    model, x, y = _case(classes=2)
    with pytest.raises(AttackError, match="needs a model with at least 4 classes"):
        attacks.evaluate(model, x, y, "autoattack", eps=1 / 255)
    with pytest.raises(AttackError, match="DLR loss needs at least 3 classes"):
        attacks.APGD(loss="dlr", steps=2)(model, x, y)


def test_a_model_that_returns_no_tensor_is_refused():
    model, x, y = _case()

    class Pair(nn.Module):
        def forward(self, images):
            return model(images), images

    with pytest.raises(ModelOutputError, match="returned a tuple"):
        attacks.evaluate(Pair(), x, y, FAST, eps=0.03)


def test_a_direct_call_leaves_a_training_model_as_it_was():
    model, x, y = _case()
    model.train()
    model.body[2].eval()      # a mixed model: its own modes come back, module by module
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attacks.PGD(eps=0.03, steps=3)(model, x, y)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)       # batch norm statistics untouched
    assert model.training and model.body[1].training and not model.body[2].training


def test_partial_progress_objects_surrogate_lists_and_a_short_repr():
    model, x, y = _case()
    seen = []

    class OnlyDone:
        def points_done(self, label, done, robust, total):
            seen.append((label, done))

    result = attacks.evaluate(model, x, y, FAST, eps=0.03, progress=OnlyDone(), sanity_checks=False)
    assert seen and seen[-1] == ("pgd", 12)
    text = repr(result)
    assert "robust" in text and "\n" not in text and len(text) < 200
    surrogate = SmallNet(seed=3).eval()
    with_transfer = {"name": "t", "attacks": [{"attack": "fgsm"}], "transfer": True}
    listed = attacks.evaluate(model, x, y, with_transfer, eps=0.03, surrogates=[surrogate], sanity_checks=False)
    named = attacks.evaluate(model, x, y, with_transfer, eps=0.03, surrogates={"surrogate0": surrogate},
                             sanity_checks=False)
    assert listed.points == named.points and any("surrogate0" in a.label for a in listed.attacks)
    one = attacks.Transfer(surrogates=nn.Sequential(surrogate), steps=2)
    assert len(one.surrogates) == 1
    with pytest.raises(AttackError, match="bpda must stand in for the whole model"):
        attacks.evaluate(model, x, y, FAST, eps=0.03, bpda=nn.Identity())
    with warnings.catch_warnings():
        warnings.simplefilter("error")     # nothing to warn about in a plain call
        attacks.evaluate(model, x, y, FAST, eps=0.03, sanity_checks=False)


def test_views_gradient_views_and_suite_files_are_told_apart():
    model, x, y = _case()
    with pytest.raises(AttackError,
                       match=r"gradient_views\['eot'\] must map images to the model's B×10 logits, got a EOT"):
        attacks.evaluate(model, x, y, FAST, eps=0.03, gradient_views={"eot": lambda m: attacks.EOT(m, 2)})
    with pytest.raises(AttackError, match=r"views\['eot'\] must be a function from the model"):
        attacks.evaluate(model, x, y, "adaptive", eps=0.03, views={"eot": attacks.EOT(model, 2)})
    with pytest.raises(AttackError, match="passed as a mapping"):
        attacks.evaluate(model, x, y, "configs/suites/autoattack_quick.yaml", eps=0.03)
