"""The attack library against its references (torchattacks, pyautoattack) and its own promises."""

from __future__ import annotations

import copy
import importlib
import json
from dataclasses import asdict, dataclass

import pytest
import torch
import torchattacks

import attacks
from conftest import correct_points as _points, still_robust as _robust
from attacks.core import flat_norm
from attacks.provenance import model_fingerprint

EPS = 0.05  # Linf on Fashion-MNIST: TinyCNN keeps part of its points, so verdicts can disagree


# ---------------------------------------------------------------- PGD against torchattacks


@pytest.mark.parametrize("norm,eps", [("Linf", EPS), ("L2", 1.0)])
def test_pgd_equals_torchattacks_from_the_same_start(tiny_classifier, norm, eps):
    model, x, y = _points(tiny_classifier, 128)
    ours = attacks.PGD(eps=eps, norm=norm, steps=10, alpha=eps / 4, random_start=False, early_stop=False)(model, x, y)
    if norm == "Linf":
        reference = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=10, random_start=False)(x, y)
    else:
        # torchattacks adds eps_for_division (1e-10) to ‖∇‖ of the batch-mean loss; for confident points
        # that norm is ~1e-7 and the step shrinks. Ours divides by the norm itself (clamped at 1e-12).
        reference = torchattacks.PGDL2(model, eps=eps, alpha=eps / 4, steps=10, random_start=False,
                                       eps_for_division=1e-30)(x, y)
    # Same start, same steps: the same examples up to float32 rounding. The reference differentiates the
    # batch-mean loss and ours the per-point sum, so gradients differ in the last bits; where a pixel
    # sits on the [0, 1] clamp or the eps-ball boundary, that can tip one projection and the trajectory
    # parts slightly (seen on one point in ~100 on some CPUs). Nearly all points must agree to 1e-5,
    # every point to 1e-2, and every verdict exactly.
    per_point = (ours - reference).flatten(1).abs().max(dim=1).values
    assert float((per_point <= 1e-5).float().mean()) >= 0.97, per_point.tolist()
    assert float(per_point.max()) < 1e-2, float(per_point.max())
    assert torch.equal(_robust(model, ours, y), _robust(model, reference, y))


def test_pgd_early_stop_only_adds_broken_points(tiny_classifier):
    """Early stop keeps the first misclassified iterate: every point torchattacks breaks (same
    start, all steps) is broken by ours too, and the extra ones are points broken mid-way."""
    model, x, y = _points(tiny_classifier, 128)
    ours = attacks.PGD(eps=EPS, steps=10, alpha=EPS / 4, random_start=False, early_stop=True)(model, x, y)
    reference = torchattacks.PGD(model, eps=EPS, alpha=EPS / 4, steps=10, random_start=False)(x, y)
    ours_robust, reference_robust = _robust(model, ours, y), _robust(model, reference, y)
    assert not bool((ours_robust & ~reference_robust).any())
    assert int(reference_robust.sum()) > 0


def test_pgd_random_start_agrees_with_torchattacks_in_accuracy(tiny_classifier):
    model, x, y = _points(tiny_classifier, 200)
    ours = _robust(model, attacks.PGD(eps=EPS, steps=20, alpha=EPS / 8)(model, x, y), y).float().mean()
    torch.manual_seed(0)
    reference = _robust(model, torchattacks.PGD(model, eps=EPS, alpha=EPS / 8, steps=20)(x, y), y).float().mean()
    assert abs(float(ours - reference)) <= 0.03, (float(ours), float(reference))


# ---------------------------------------------------------------- APGD against AutoAttack


@pytest.mark.parametrize("attack_name,steps", [("apgd-ce", 100), ("apgd-t", 100)])
def test_apgd_equals_autoattack_point_for_point(tiny_classifier, autoattack_starts, attack_name, steps):
    from pyautoattack import AutoAttack

    model, x, y = _points(tiny_classifier, 100)
    reference = AutoAttack(model, norm="Linf", eps=EPS, version="custom", attacks=[attack_name], seed=0, device="cpu")
    reference.apgd.n_restarts = reference.apgd_targeted.n_restarts = 1  # AutoAttack 'standard' (custom: 5)
    reference.apgd_targeted.n_target_classes = 9
    x_ref, _ = reference.run_standard_evaluation(x, y, batch_size=len(y))
    if attack_name == "apgd-ce":
        ours = attacks.make_attack("apgd", eps=EPS, steps=steps)(model, x, y)
    else:
        ours = attacks.make_attack("apgd-t", eps=EPS, steps=steps, targets=9)(model, x, y)
    ours_robust, reference_robust = _robust(model, ours, y), _robust(model, x_ref, y)
    assert 0 < int(reference_robust.sum()) < len(y)
    assert torch.equal(ours_robust, reference_robust), (int(ours_robust.sum()), int(reference_robust.sum()))


# ---------------------------------------------------------------- every attack's output is valid


def _attack_settings(name):
    small = {"pgd": {"steps": 3}, "apgd": {"steps": 5}, "apgd-t": {"steps": 5, "targets": 2},
             "square": {"queries": 200}, "fab-t": {"steps": 5, "targets": 2}, "fab": {"steps": 5},
             "cw-l2": {"steps": 50, "lr": 0.05},
             "transfer": {"steps": 3}}
    return small.get(name, {})


@pytest.mark.parametrize("name", sorted(attacks.ATTACKS))
@pytest.mark.parametrize("norm,eps", [("Linf", EPS), ("L2", 0.8), ("L1", 15.0)])
def test_every_attack_stays_in_the_ball_and_in_range(tiny_classifier, name, norm, eps):
    model, x, y = _points(tiny_classifier, 24)
    cls = attacks.ATTACKS[name]
    if norm not in cls.norms:
        with pytest.raises(attacks.AttackError, match=norm):
            attacks.make_attack(name, eps=eps, norm=norm)
        return
    extra = {"surrogates": [model]} if name == "transfer" else {}
    trainable = copy.deepcopy(model).requires_grad_(True)   # as a user's model comes: weights that want gradients
    x_adv = attacks.make_attack(name, eps=eps, norm=norm, **_attack_settings(name), **extra)(trainable, x, y)
    # an attack differentiates with respect to the images only: it neither fills nor pays for weight gradients
    assert all(p.grad is None for p in trainable.parameters()), f"{name} left gradients on the model's weights"
    assert x_adv.shape == x.shape and torch.isfinite(x_adv).all()
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert float(flat_norm(x_adv - x, norm).max()) <= eps * (1 + 1e-5) + 1e-6
    assert not bool(_robust(model, x_adv, y).all()), f"{name} broke nothing at a large radius"


def test_randomness_belongs_to_the_point_not_the_batch(tiny_classifier):
    model, x, y = _points(tiny_classifier, 40)
    pgd = attacks.PGD(eps=EPS, steps=5)
    whole = pgd(model, x, y, torch.arange(len(y)))
    halves = torch.cat([pgd(model, x[:17], y[:17], torch.arange(17)),
                        pgd(model, x[17:], y[17:], torch.arange(17, len(y)))])
    assert torch.allclose(whole, halves, atol=1e-6)
    square = attacks.make_attack("square", eps=EPS, queries=30)
    assert torch.equal(square(model, x, y, torch.arange(len(y)))[5:6], square(model, x[5:6], y[5:6], torch.tensor([5])))


class _CallCounter(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.calls, self.images = model, 0, 0

    def forward(self, x):
        self.calls, self.images = self.calls + 1, self.images + len(x)
        return self.model(x)


@pytest.mark.parametrize("attack", ["APGDT", "FABT"])
@pytest.mark.parametrize("norm,eps", [("Linf", 0.03), ("L2", 0.6)])
def test_targets_side_by_side_keep_every_verdict(tiny_classifier, attack, norm, eps):
    """APGD-T and FAB-T with all targets of all points in one batch decide every point as one
    target after another does (float64, so that a batch's size cannot
    change a logit's rounding), keep the robust points' images bit for bit, and need fewer passes."""
    import copy

    model, x, y = tiny_classifier
    model = copy.deepcopy(model).double()
    x, y = x[:60].double(), y[:60]
    make = getattr(attacks, attack)
    calls = _CallCounter(model)
    in_order = make(eps=eps, norm=norm, steps=20, rows_per_pass=1)(calls, x, y)
    robust = _robust(model, in_order, y)
    assert 0 < int(robust.sum()) < int(_robust(model, x, y).sum())   # the attack kept some points and broke others
    for rows in (4096, 540):                                          # 60 points × 9 targets fit in one pass
        wide = _CallCounter(model)
        together = make(eps=eps, norm=norm, steps=20, rows_per_pass=rows)(wide, x, y)
        assert torch.equal(_robust(model, together, y), robust)
        assert torch.equal(together[robust], in_order[robust])
        assert (bool((flat_norm(together - x, norm) <= eps * (1 + 1e-6)).all())
                and 0 <= together.min() <= together.max() <= 1)
        assert wide.calls < calls.calls
    too_many = _CallCounter(model)                                    # 540 rows do not fit in 539: in order
    assert torch.equal(make(eps=eps, norm=norm, steps=20, rows_per_pass=539)(too_many, x, y), in_order)
    assert too_many.calls == calls.calls
    with pytest.raises(attacks.AttackError, match="rows_per_pass must be 0"):
        make(rows_per_pass=-1)


@pytest.mark.parametrize("norm,eps", [("Linf", 0.06), ("L2", 1.2)])
def test_square_speculative_proposals_change_nothing(tiny_classifier, norm, eps):
    """Several proposals per point in one forward pass give exactly the one-proposal-per-pass search
    (in float64, so that a batch's size cannot change a logit's rounding), in fewer passes."""
    import copy

    model, x, y = tiny_classifier
    model = copy.deepcopy(model).double()
    x, y = x[:60].double(), y[:60]
    single = _CallCounter(model)
    one = attacks.Square(eps=eps, norm=norm, queries=300, forward_batch=1)(single, x, y)
    robust = int(_robust(model, one, y).sum())
    assert 0 < robust < int(_robust(model, x, y).sum())  # Square kept some points and broke others
    for width in (100, 4096):  # k = 2 at first, then more as points leave; 16 (the most) at once
        wide = _CallCounter(model)
        assert torch.equal(attacks.Square(eps=eps, norm=norm, queries=300, forward_batch=width)(wide, x, y), one)
        assert wide.calls < single.calls and wide.images >= single.images
    with pytest.raises(attacks.AttackError, match="forward_batch must be 0"):
        attacks.Square(forward_batch=-1)


@pytest.mark.parametrize("side", [1, 2, 3, 5, 6, 8, 9, 16, 31])
def test_square_l2_window_pattern_is_the_references(side, monkeypatch):
    """pyautoattack's L2 Square perturbs a window with two halves of opposite sign (nested rectangles),
    transposed with probability ½: ours, with either orientation, equals its ``eta`` exactly."""
    from pyautoattack.square import SquareAttack

    from attacks.square import l2_pattern, oriented

    reference = SquareAttack(torch.nn.Identity(), norm="L2", device="cpu")
    for transposed in (0, 1):
        monkeypatch.setattr(torch, "rand", lambda *a, _t=transposed, **k: torch.full((1,), float(_t)))
        expected = reference.eta(side).double()
        ours = oriented(l2_pattern(side, torch.device("cpu"), torch.float64), torch.tensor([transposed]))[0, 0]
        assert torch.allclose(ours, expected, atol=1e-7), (side, transposed)
        monkeypatch.undo()


# ---------------------------------------------------------------- evaluate


def test_evaluate_is_the_per_point_worst_case(tiny_classifier):
    model, x, y = tiny_classifier
    result = attacks.evaluate(model, x[:120], y[:120], "fast", eps=EPS, sanity_checks=False)
    points = result.points
    clean = torch.tensor(points["clean_correct"])
    robust = torch.tensor(points["robust"])
    assert result.clean_accuracy == pytest.approx(float(clean.float().mean()))
    assert result.robust_accuracy == pytest.approx(float(robust.float().mean()))
    assert not bool((robust & ~clean).any())
    for i, by in enumerate(points["broken_by"]):
        assert (by is None) == bool(robust[i])
        assert by in (None, "clean", "pgd-20", "fgsm")
    attacked = [a.points_attacked for a in result.attacks]
    assert attacked[0] == int(clean.sum()) and attacked[1] == attacked[0] - result.attacks[0].points_broken
    body = json.loads(json.dumps(result.to_dict()))
    for key in ("clean_acc", "robust_acc", "eps", "threat_model", "n_examples", "seed", "attacks", "flags", "device",
                "versions", "seconds", "forwards", "backwards", "points"):
        assert key in body
    assert body["eps"] == "0.05" and body["attacks"][0]["backwards"] > 0


class _Interrupt(Exception):
    pass


class _StopAt:
    """A progress that interrupts the evaluation once ``label`` has attacked ``points`` points."""

    def __init__(self, label: str, points: int) -> None:
        self.label, self.points = label, points

    def attack_started(self, label, points): ...
    def attack_finished(self, record, robust, total): ...

    def points_done(self, label, done, robust, total):
        if label == self.label and done >= self.points:
            raise _Interrupt


def test_interrupted_evaluation_resumes_to_the_same_answer(tiny_classifier, tmp_path):
    model, x, y = tiny_classifier
    x, y = x[:96], y[:96]
    uninterrupted = attacks.evaluate(model, x, y, "fast", eps=EPS, batch_size=16, sanity_checks=False)

    state = tmp_path / "state.json"
    with pytest.raises(_Interrupt):
        attacks.evaluate(model, x, y, "fast", eps=EPS, batch_size=16, state_path=state, progress=_StopAt("pgd-20", 32),
                         sanity_checks=False)
    saved = json.loads(state.read_text())
    assert len(saved["attacked"]["pgd-20"]) == 32
    resumed = attacks.evaluate(model, x, y, "fast", eps=EPS, batch_size=16, state_path=state, sanity_checks=False)
    assert resumed.points == uninterrupted.points
    assert resumed.robust_accuracy == uninterrupted.robust_accuracy
    assert [(a.points_attacked, a.forwards) for a in resumed.attacks] == \
        [(a.points_attacked, a.forwards) for a in uninterrupted.attacks]
    assert (resumed.forwards, resumed.backwards) == (uninterrupted.forwards, uninterrupted.backwards)
    assert resumed.seconds >= sum(a.seconds for a in resumed.attacks)

    state.write_text(json.dumps(saved))
    with pytest.raises(attacks.AttackError, match="different evaluation"):
        attacks.evaluate(model, x, y, "fast", eps=2 * EPS, batch_size=16, state_path=state, sanity_checks=False)
    broken_batch = json.dumps({**saved, "batches": [{"step": "pgd-20"}]}).encode()
    wrong_type = json.dumps({**saved, "robust": 5}).encode()
    another_kind = json.dumps({**saved, "kind": "snapshot"}).encode()
    for damage in (b'{"key": [1, 2', b"\xff\xfe binary", b"[1, 2, 3]", b'{"key": 1}', broken_batch, wrong_type,
                   another_kind):
        state.write_bytes(damage)
        with pytest.raises(attacks.AttackError, match="is damaged .* delete it to start over"):
            attacks.evaluate(model, x, y, "fast", eps=EPS, batch_size=16, state_path=state, sanity_checks=False)
    state.write_text(json.dumps({**saved, "version": saved["version"] + 1}))
    with pytest.raises(attacks.AttackError, match="written by another version of robust-kd .* delete it to start over"):
        attacks.evaluate(model, x, y, "fast", eps=EPS, batch_size=16, state_path=state, sanity_checks=False)


def test_each_steps_robust_accuracy_after_it_survives_a_rerun_and_a_resume(tiny_classifier, tmp_path):
    """Robust accuracy after each step comes from the verdicts, not from the state at the end: a
    rerun of a finished evaluation, or one resumed past a step, reports the same column."""
    model, x, y = tiny_classifier
    x, y = x[:64], y[:64]
    suite = {"name": "weak-then-strong", "attacks": [{"attack": "fgsm"}, {"attack": "pgd", "steps": 10}]}

    def run(state, **extra):
        result = attacks.evaluate(model, x, y, suite, eps=EPS, batch_size=16, state_path=state, sanity_checks=False,
                                  **extra)
        return [a.robust_accuracy_after for a in result.attacks]

    one_go = run(tmp_path / "one.json")
    assert one_go[0] > one_go[1]          # PGD breaks points FGSM left: the two columns differ
    assert run(tmp_path / "one.json") == one_go
    with pytest.raises(_Interrupt):
        run(tmp_path / "two.json", progress=_StopAt("pgd", 16))
    assert run(tmp_path / "two.json") == one_go


def test_an_evaluation_resumed_by_another_version_is_flagged(tiny_classifier, tmp_path, monkeypatch):
    provenance = importlib.import_module("attacks.provenance")
    model, x, y = tiny_classifier
    x, y = x[:64], y[:64]

    def run(state, **extra):
        return attacks.evaluate(model, x, y, "fast", eps=EPS, batch_size=16, state_path=state, sanity_checks=False,
                                **extra)

    one_go = run(tmp_path / "one.json")
    assert len(one_go.computed_with) == 1 and one_go.computed_with[0].startswith("robust-kd ")
    assert "resumed_across_versions" not in [f.code for f in one_go.flags]
    assert run(tmp_path / "one.json").computed_with == one_go.computed_with     # a rerun computes nothing

    state = tmp_path / "state.json"
    with pytest.raises(_Interrupt):
        run(state, progress=_StopAt("pgd-20", 32))
    monkeypatch.setattr(provenance, "computed_by", lambda: "robust-kd 9.9 with torch 9.9")
    resumed = run(state)
    assert resumed.points == one_go.points      # the flag says how it was computed; verdicts are the same
    assert resumed.computed_with == sorted([one_go.computed_with[0], "robust-kd 9.9 with torch 9.9"])
    flag = next(f for f in resumed.flags if f.code == "resumed_across_versions")
    assert "robust-kd 9.9 with torch 9.9" in flag.message and "--fresh" in flag.message
    assert resumed.to_dict()["computed_with"] == resumed.computed_with


def test_default_batch_size_is_by_device_and_never_changes_a_verdict(tiny_classifier):
    model, x, y = tiny_classifier
    x, y = x[:80], y[:80]
    by_device = attacks.evaluate(model, x, y, "fast", eps=EPS, sanity_checks=False)
    assert by_device.batch_size == attacks.core.AUTO_BATCH_SIZE["cpu"] < len(y)
    odd = attacks.evaluate(model, x, y, "fast", eps=EPS, batch_size=7, sanity_checks=False)
    assert odd.points == by_device.points and 0 < sum(odd.points["robust"]) < len(y)
    with pytest.raises(attacks.AttackError, match="batch_size must be at least 1"):
        attacks.evaluate(model, x, y, "fast", eps=EPS, batch_size=0)


def test_progress_hears_from_a_batch_while_it_is_attacked(tiny_classifier, monkeypatch):
    """An object with ``working`` gets the forward passes of the batch in flight, about once a
    second (here at every pass), with the batch's passes so far."""
    import importlib

    monkeypatch.setattr(importlib.import_module("attacks.progress"), "HEARTBEAT_SECONDS", 0.0)
    model, x, y = tiny_classifier
    x, y = x[:20], y[:20]
    heard = []

    class Listening:
        def attack_started(self, label, points): ...
        def points_done(self, label, done, robust, total): ...
        def attack_finished(self, record, robust, total): ...

        def working(self, label, done, in_flight, forwards, robust, total, share, seconds):
            heard.append((label, done, in_flight, forwards, total, share, seconds))

    result = attacks.evaluate(model, x, y, "fast", eps=EPS, batch_size=8, progress=Listening(), sanity_checks=False)
    pgd = [h for h in heard if h[0] == "pgd-20"]
    first_batch = [h for h in pgd if h[1] == 0]
    assert first_batch and all(h[2] == 8 and h[4] == 20 for h in first_batch)
    assert [h[3] for h in first_batch] == sorted(h[3] for h in first_batch) and first_batch[-1][3] > 8
    assert {h[1] for h in pgd} <= {0, 8, 16}
    for batch in {h[1] for h in pgd}:     # the share of the batch's work done: from 0, never back, below 1
        shares = [h[5] for h in pgd if h[1] == batch]
        assert shares[0] == 0.0 and shares == sorted(shares) and shares[-1] < 1.0
    assert any(h[5] > 0 for h in pgd) and all(h[6] >= 0 for h in pgd)
    record = next(r for r in result.attacks if r.label == "pgd-20")
    assert max(h[3] for h in pgd) <= record.forwards
    heard.clear()      # the convergence check (minutes on a CPU) is reported like an attack
    checked = attacks.evaluate(model, x, y, "fast", eps=EPS, batch_size=8, progress=Listening())
    assert checked.convergence["points"] > 0
    probe = [h for h in heard if h[0] == "convergence check (pgd-20, 5x steps)"]
    assert probe and probe[-1][2] == checked.convergence["points"] and probe[-1][3] > 0


def test_a_state_is_not_reused_for_other_weights_or_other_attack_settings(tiny_classifier, tmp_path):
    model, x, y = tiny_classifier
    x, y = x[:16], y[:16]
    state = tmp_path / "state.json"

    def suite(steps, rows_per_pass=0):
        return {"name": "s", "attacks": [{"attack": "pgd", "label": "p", "steps": steps},
                                         {"attack": "apgd-t", "steps": 2, "targets": 2,
                                          "rows_per_pass": rows_per_pass}]}

    first = attacks.evaluate(model, x, y, suite(2), eps=EPS, state_path=state, sanity_checks=False)
    with pytest.raises(attacks.AttackError, match=r"different evaluation \(the attacks' settings differ\)"):
        attacks.evaluate(model, x, y, suite(3), eps=EPS, state_path=state, sanity_checks=False)
    retrained = copy.deepcopy(model)
    with torch.no_grad():
        retrained.head.bias[0] += 1e-3
    with pytest.raises(attacks.AttackError, match=r"the model's weights \(another checkpoint"):
        attacks.evaluate(retrained, x, y, suite(2), eps=EPS, state_path=state, sanity_checks=False)
    # a setting that changes only the speed (targets side by side or in order) resumes
    again = attacks.evaluate(model, x, y, suite(2, rows_per_pass=1), eps=EPS, state_path=state, sanity_checks=False)
    assert again.points == first.points
    channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    assert model_fingerprint(channels_last) == model_fingerprint(model) != model_fingerprint(retrained)
    assert model_fingerprint(attacks.CountingModel(model)) == model_fingerprint(model)


def test_repeated_step_labels_and_bad_settings_are_refused(tiny_classifier):
    model, x, y = tiny_classifier
    twice = {"attacks": [{"attack": "pgd", "label": "a"}, {"attack": "fgsm", "label": "a"}]}
    with pytest.raises(attacks.AttackError, match="more than one suite entry is labelled a"):
        attacks.evaluate(model, x[:4], y[:4], twice)
    same = attacks.Suite("twice", [attacks.SuiteStep("a", attacks.PGD()), attacks.SuiteStep("a", attacks.FGSM())])
    with pytest.raises(attacks.AttackError, match="more than one step labelled a"):
        attacks.evaluate(model, x[:4], y[:4], same)
    reserved = attacks.Suite("reserved", [attacks.SuiteStep("clean", attacks.PGD())])
    with pytest.raises(attacks.AttackError, match="has a step labelled 'clean', a label reserved"):
        attacks.evaluate(model, x[:4], y[:4], reserved)
    for entry, message in (({"attack": "pgd", "steps": 0}, "steps must be at least 1"),
                           ({"attack": "pgd", "restarts": 0}, "restarts must be at least 1"),
                           ({"attack": "pgd", "alpha": -0.1}, "alpha .* must not be negative"),
                           ({"attack": "pgd", "alpha": 0.1, "alpha_fraction": 0.2}, "both alpha and alpha_fraction"),
                           ({"attack": "pgd", "eps": 0.5}, "sets eps"),
                           ({"attack": "pgd", "norm": "L2"}, r"sets norm; the evaluation's norm \(--norm\) applies"),
                           ({"attack": "pgd", "seed": 3}, "sets seed; .* seed_offset shifts one entry's seed"),
                           ({"attack": "pgd", "label": "clean"}, "label 'clean' is reserved"),
                           ({"attack": "apgd-t", "targets": 10}, "targets 10 is more than the model's other classes"),
                           ({"attack": "square", "queries": 0}, "queries must be at least 1"),
                           ({"attack": "pgd", "name": "x"}, "has no setting name")):
        with pytest.raises(attacks.AttackError, match=message):
            attacks.evaluate(model, x[:4], y[:4], {"attacks": [entry]})
    with pytest.raises(attacks.AttackError, match="'transfer' must be true or false"):
        attacks.evaluate(model, x[:4], y[:4], {"attacks": [{"attack": "fgsm"}], "transfer": "maybe"})


class _CountImages(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.images = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += len(x)
        return self.model(x)


def test_a_sharded_evaluation_resumes_in_one_process(tiny_classifier, tmp_path, monkeypatch):
    """Two ranks stopped at different points of the suite leave one state file each; one process
    resumes from both (no point attacked again) and ends with the uninterrupted verdicts and counts."""
    import sys

    evaluation = sys.modules["attacks.evaluate"]
    model, x, y = tiny_classifier
    x, y = x[:96], y[:96]
    fresh = _CountImages(model)
    uninterrupted = attacks.evaluate(fresh, x, y, "fast", eps=EPS, batch_size=16, sanity_checks=False)

    state = tmp_path / "state.json"
    for rank, stop in enumerate([_StopAt("pgd-20", 32), _StopAt("pgd-20", 16)]):
        monkeypatch.setattr(evaluation, "resolve_shard", lambda shard, rank=rank: (rank, 2))
        alone = tmp_path / f"rank{rank}" / "state.json"     # as if both had started at once: neither saw the other
        with pytest.raises(_Interrupt):
            attacks.evaluate(model, x, y, "fast", eps=EPS, batch_size=16, state_path=alone, progress=stop,
                             sanity_checks=False)
        alone.with_suffix(f".rank{rank}of2.json").rename(tmp_path / f"state.rank{rank}of2.json")
    monkeypatch.undo()
    ranks = [json.loads((tmp_path / f"state.rank{r}of2.json").read_text()) for r in range(2)]
    assert not state.exists()
    assert [len(r["attacked"]["pgd-20"]) for r in ranks] == [32, 16]
    assert all(i % 2 == rank for rank, r in enumerate(ranks) for i in r["attacked"]["pgd-20"])

    resumed_model = _CountImages(model)
    resumed = attacks.evaluate(resumed_model, x, y, "fast", eps=EPS, batch_size=16, state_path=state,
                               sanity_checks=False)
    assert resumed.points == uninterrupted.points and resumed.robust_accuracy == uninterrupted.robust_accuracy
    for mine, theirs in zip(resumed.attacks, uninterrupted.attacks):
        for field in ("label", "points_attacked", "points_broken", "forwards", "backwards", "robust_accuracy_after"):
            assert getattr(mine, field) == getattr(theirs, field), field
    # neither the clean pass nor the 48 points attacked before the stop were run again
    saved = sum(b["forwards"] for r in ranks for b in r["batches"] if b["step"] == "pgd-20")
    assert resumed_model.images == fresh.images - len(y) - saved and saved > 48
    merged = json.loads(state.read_text())["attacked"]["pgd-20"]
    assert set(ranks[0]["attacked"]["pgd-20"]) | set(ranks[1]["attacked"]["pgd-20"]) < set(merged)


def test_eps_list_gives_a_falling_curve(tiny_classifier):
    model, x, y = tiny_classifier
    curve = attacks.evaluate(model, x[:80], y[:80], "fast", eps=[0.0, 0.02, 0.1], sanity_checks=False)
    accuracies = [r.robust_accuracy for r in curve]
    assert accuracies[0] == curve[0].clean_accuracy
    assert accuracies == sorted(accuracies, reverse=True) and accuracies[-1] < accuracies[0]
    assert not any(f.code == "accuracy_not_monotone_in_eps" for r in curve for f in r.flags)


def _layouts_seen(model):
    """Record, at every forward, whether the last convolution's weights are channels-last (the
    first one's, with one input channel, are in both layouts at once)."""
    seen = []
    conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    handle = conv.register_forward_pre_hook(
        lambda module, args: seen.append(not module.weight.is_contiguous()
                                         and module.weight.is_contiguous(memory_format=torch.channels_last)))
    return seen, conv, handle


def test_evaluation_runs_channels_last_and_gives_the_layout_back(tiny_classifier):
    model, x, y = tiny_classifier
    seen, conv, handle = _layouts_seen(model)
    weight = conv.weight
    try:
        fast = attacks.evaluate(model, x[:60], y[:60], "fast", eps=EPS, sanity_checks=False)
        assert seen and all(seen)  # the default on CPU
        assert conv.weight is weight and weight.is_contiguous()  # the same parameter, in its own layout again
        seen.clear()
        plain = attacks.evaluate(model, x[:60], y[:60], "fast", eps=EPS, sanity_checks=False, channels_last=False)
        assert seen and not any(seen)
        assert fast.points == plain.points  # the layout changes float rounding only, not a verdict here
        viewed = attacks.evaluate(model, x[:20], y[:20], "fast", eps=EPS, sanity_checks=False,
                                  gradient_views={"function": lambda images: model(images)})  # not a module: left alone
        assert any(a.label.endswith("[function]") for a in viewed.attacks)
        model.to(memory_format=torch.channels_last)  # a caller's own channels-last model stays so
        attacks.evaluate(model, x[:10], y[:10], "fast", eps=EPS, sanity_checks=False, channels_last=False)
        assert not conv.weight.is_contiguous()
    finally:
        handle.remove()
        model.to(memory_format=torch.contiguous_format)


def test_user_suite_from_a_mapping(tiny_classifier):
    model, x, y = tiny_classifier
    suite = {"name": "mine", "attacks": [{"attack": "pgd", "label": "pgd-5", "steps": 5, "alpha_fraction": 0.25},
                                          {"attack": "square", "queries": 10}]}
    result = attacks.evaluate(model, x[:40], y[:40], suite, eps=EPS, sanity_checks=False)
    assert [a.label for a in result.attacks] == ["pgd-5", "square"]
    assert result.attacks[0].settings["alpha"] == pytest.approx(EPS / 4)
    with pytest.raises(attacks.AttackError, match="no setting"):
        attacks.evaluate(model, x[:4], y[:4], {"attacks": [{"attack": "pgd", "stepz": 5}]}, eps=EPS)
    with pytest.raises(attacks.AttackError, match="unknown attack 'pgdd'.*did you mean 'pgd'"):
        attacks.evaluate(model, x[:4], y[:4], {"attacks": [{"attack": "pgdd"}]}, eps=EPS)
    with pytest.raises(attacks.AttackError, match="unknown suite 'autoatack'"):
        attacks.evaluate(model, x[:4], y[:4], "autoatack", eps=EPS)


def test_an_interrupted_transfer_matrix_resumes_with_the_batches_it_lacks(tiny_classifier, tmp_path):
    model, x, y = _points(tiny_classifier, 64)
    assert 48 < len(y) <= 64            # four batches of 16, the last one shorter
    torch.manual_seed(1)
    other = type(model)()
    sources = {"self": model, "other": other}
    settings = dict(eps=0.1, steps=5, batch_size=16)
    uninterrupted = attacks.transfer_matrix(sources, {"self": model}, x, y, **settings)
    made = tmp_path / "made"

    def stop_in_second_source(source, done, total):
        if source == "other" and done >= 32:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        attacks.transfer_matrix(sources, {"self": model}, x, y, **settings, made_dir=made,
                                progress=stop_in_second_source)
    assert len(list(made.glob("*.pt"))) == 4 + 2          # every finished batch of both sources
    (damaged,) = made.glob("other-*-00000016.pt")
    damaged.write_bytes(b"truncated")                         # a damaged one is made again
    counted = {name: attacks.CountingModel(m) for name, m in sources.items()}
    resumed = attacks.transfer_matrix(counted, {"self": model}, x, y, **settings, made_dir=made)
    assert resumed["cells"] == uninterrupted["cells"]
    assert counted["self"].backwards == 0                   # all four of its batches were on disk
    assert counted["other"].backwards == 5 * (16 + len(y) - 32)   # the damaged batch and those never made
    again = attacks.transfer_matrix(sources, {"self": model}, x, y, **{**settings, "eps": 0.05}, made_dir=made)
    assert again["cells"] == attacks.transfer_matrix(sources, {"self": model}, x, y,
                                                     **{**settings, "eps": 0.05})["cells"]


def test_transfer_attack_and_matrix(tiny_classifier):
    model, x, y = _points(tiny_classifier, 64)
    torch.manual_seed(1)
    other = type(model)()  # an untrained surrogate transfers worse than the model itself
    matrix = attacks.transfer_matrix({"self": model, "untrained": other}, {"self": model}, x, y, eps=0.1)
    cells = matrix["cells"]
    assert cells["self"]["self"]["points"] == len(y)
    assert cells["self"]["self"]["success_rate"] > cells["untrained"]["self"]["success_rate"]
    result = attacks.evaluate(model, x, y, "transfer", eps=0.1, surrogates={"self": model}, sanity_checks=False)
    assert result.attacks[0].label == "transfer [self]" and result.attacks[0].backwards == 0
    assert result.robust_accuracy == pytest.approx(1 - cells["self"]["self"]["success_rate"])


# ---------------------------------------------------------------- sanity flags, each triggered


def _codes(result):
    return {f.code for f in result.flags}


class Probabilities(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).softmax(dim=1)


class Noisy(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x) + torch.randn(x.shape[0], 10)


class Quantized(torch.nn.Module):
    """Rounds its input to 4 grey levels: zero input gradients everywhere (shattered gradients)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 3) / 3)


class MaskedOffGrid(torch.nn.Module):
    """Normal on images of the 8-bit grid (clean ones, and FGSM steps of k/255), gradient-free off it:
    one-step attacks see true gradients, iterative ones from a random start see none."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        on_grid = ((x * 255 - torch.round(x * 255)).abs().flatten(1).amax(dim=1) < 1e-3).view(-1, 1)
        snapped = torch.round(x * 255) / 255
        return torch.where(on_grid, self.model(x), self.model(snapped).detach())


def test_flag_probabilities(tiny_classifier):
    model, x, y = tiny_classifier
    result = attacks.evaluate(Probabilities(model), x[:32], y[:32], "fast", eps=EPS)
    assert "probabilities_not_logits" in _codes(result)
    assert "probabilities_not_logits" not in _codes(attacks.evaluate(model, x[:32], y[:32], "fast", eps=EPS))


def test_flag_non_deterministic(tiny_classifier):
    model, x, y = tiny_classifier
    torch.manual_seed(0)
    assert "non_deterministic" in _codes(attacks.evaluate(Noisy(model), x[:32], y[:32], "fast", eps=EPS))


def test_flags_masked_gradients_and_black_box_beating_white_box(tiny_classifier):
    model, x, y = tiny_classifier
    suite = {"name": "pgd-then-square",
             "attacks": [{"attack": "pgd", "steps": 10}, {"attack": "square", "queries": 300}]}
    result = attacks.evaluate(Quantized(model), x[:64], y[:64], suite, eps=0.2)
    codes = _codes(result)
    assert {"zero_or_nan_gradients", "large_eps_not_zero", "black_box_beats_white_box"} <= codes
    clean = attacks.evaluate(model, x[:64], y[:64], suite, eps=0.2)
    assert not {"zero_or_nan_gradients", "large_eps_not_zero"} & _codes(clean)


def test_flag_iterative_weaker_than_single_step(tiny_classifier):
    model, x, y = tiny_classifier
    result = attacks.evaluate(MaskedOffGrid(model), x[:64], y[:64], "fast", eps=8 / 255 * 4)
    assert "iterative_weaker_than_single_step" in _codes(result)
    assert "iterative_weaker_than_single_step" not in _codes(attacks.evaluate(model, x[:64], y[:64], "fast", eps=0.1))


def test_flag_not_converged_when_more_steps_break_more(tiny_classifier):
    """Two PGD steps of eps/10 from the clean image can move 0.2 eps; the probe's ten reach eps."""
    model, x, y = tiny_classifier
    weak = {"name": "weak", "attacks": [{"attack": "pgd", "steps": 2, "alpha_fraction": 0.1, "random_start": False}]}
    result = attacks.evaluate(model, x[:64], y[:64], weak, eps=0.1)
    check = result.convergence
    assert "not_converged" in _codes(result)
    assert check["attack"] == "pgd" and check["probe"]["steps"] == 10 and check["points"] == min(32, check["survivors"])
    assert check["broken"] > 0
    survivors = sum(result.points["robust"])
    assert check["survivors"] == survivors
    assert check["estimated_overstatement"] == pytest.approx(check["broken"] / check["points"] * survivors / 64)
    unchecked = attacks.evaluate(model, x[:64], y[:64], weak, eps=0.1, convergence_check=False)
    assert unchecked.convergence is None and "not_converged" not in _codes(unchecked)
    assert unchecked.points["robust"] == result.points["robust"]     # the probe never changes a verdict
    enough = {"name": "enough", "attacks": [{"attack": "pgd", "label": "pgd-20", "steps": 20, "alpha_fraction": 0.25,
                                                 "loss": "margin"}]}
    converged = attacks.evaluate(model, x[:64], y[:64], enough, eps=0.1)
    assert converged.convergence["attack"] == "pgd-20" and converged.convergence["probe"]["steps"] == 100
    assert converged.convergence["points"] > 0 and converged.convergence["broken"] == 0
    assert "not_converged" not in _codes(converged)


def test_a_rerun_of_a_finished_evaluation_reuses_its_checks(tiny_classifier, tmp_path):
    """The checks after the suite (large eps, convergence) are kept in the state: rerunning a finished
    evaluation (an eps list resumed, a retry after running out of memory) gives the same flags and
    convergence without attacking again."""
    model, x, y = tiny_classifier
    weak = {"name": "weak", "attacks": [{"attack": "pgd", "steps": 2, "alpha_fraction": 0.1, "random_start": False}]}
    state = tmp_path / "state.json"
    first = attacks.evaluate(model, x[:64], y[:64], weak, eps=0.1, state_path=state)
    assert "not_converged" in _codes(first) and first.convergence["broken"] > 0
    counting = attacks.CountingModel(model)
    again = attacks.evaluate(counting, x[:64], y[:64], weak, eps=0.1, state_path=state)
    assert [asdict(f) for f in again.flags] == [asdict(f) for f in first.flags]
    assert again.convergence == first.convergence
    assert counting.backwards == 0 and counting.forwards <= 64 + 32    # the probe of the model and the fold check


def test_convergence_check_says_when_there_is_nothing_to_check(tiny_classifier):
    model, x, y = tiny_classifier
    blackbox = attacks.evaluate(model, x[:16], y[:16], {"attacks": [{"attack": "square", "queries": 20}]}, eps=EPS)
    assert blackbox.convergence == {"attack": None, "reason": "the suite has no iterative white-box attack"}
    assert "not checked" in attacks.convergence_words(blackbox.convergence)
    broken = attacks.evaluate(model, x[:16], y[:16], "fast", eps=1.0)
    assert broken.robust_accuracy == 0 and broken.convergence["points"] == 0
    assert "nothing to check" in attacks.convergence_words(broken.convergence)
    assert attacks.convergence_words(None) == ""


@dataclass
class _OutsideBall(attacks.Attack):
    name = "test-outside-ball"

    def perturb(self, model, x, y, index):
        return 1 - x  # far outside any small ball


@dataclass
class _OnlySmallEps(attacks.Attack):
    """Works below eps 0.05 and does nothing above: an attack that fails at the larger eps."""

    name = "test-only-small-eps"

    def perturb(self, model, x, y, index):
        if self.eps >= 0.05:
            return x.clone()
        return attacks.PGD(eps=self.eps, steps=10)(model, x, y, index)


@pytest.fixture
def test_attacks():
    for cls in (_OutsideBall, _OnlySmallEps):
        attacks.register_attack(cls)
    yield
    for cls in (_OutsideBall, _OnlySmallEps):
        attacks.ATTACKS.pop(cls.name)


def test_flag_examples_outside_the_ball_are_not_counted(tiny_classifier, test_attacks):
    model, x, y = tiny_classifier
    result = attacks.evaluate(model, x[:32], y[:32], {"attacks": [{"attack": "test-outside-ball"}]}, eps=EPS)
    assert "adversarial_examples_outside_the_ball" in _codes(result)
    assert result.robust_accuracy == result.clean_accuracy
    assert result.attacks[0].invalid_examples == result.attacks[0].points_attacked


def test_flag_accuracy_not_monotone_in_eps(tiny_classifier, test_attacks):
    model, x, y = tiny_classifier
    curve = attacks.evaluate(model, x[:48], y[:48], {"attacks": [{"attack": "test-only-small-eps"}]}, eps=[0.04, 0.08])
    assert curve[1].robust_accuracy > curve[0].robust_accuracy
    assert all("accuracy_not_monotone_in_eps" in _codes(r) for r in curve)


def test_nan_and_wrong_class_count_are_errors(tiny_classifier):
    model, x, y = tiny_classifier

    class NaNModel(torch.nn.Module):
        def forward(self, x):
            return model(x) * torch.nan

    with pytest.raises(attacks.ModelOutputError, match="NaN"):
        attacks.evaluate(NaNModel(), x[:8], y[:8], "fast")
    with pytest.raises(attacks.ModelOutputError, match="another number of classes"):
        attacks.evaluate(model, x[:8], (y[:8] + 10), "fast")
    with pytest.raises(attacks.AttackError, match=r"\[0, 1\]"):
        attacks.evaluate(model, x[:8] * 2 - 0.5, y[:8], "fast")
    with pytest.raises(attacks.AttackError, match="eps must lie"):
        attacks.evaluate(model, x[:8], y[:8], "fast", eps=2.0)


# ---------------------------------------------------------------- FAB-T and CW against their references


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_fab_box_projection_equals_autoattacks(norm):
    from pyautoattack.fab_projections import projection_l2, projection_linf

    from attacks.fab import project_to_hyperplane

    reference = projection_linf if norm == "Linf" else projection_l2
    generator = torch.Generator().manual_seed(0)
    for scale in (0.2, 0.8, 1.5, 3.0):  # from planes close by to planes the box cannot reach
        t = torch.rand(64, 50, generator=generator, dtype=torch.float64)
        w = torch.randn(64, 50, generator=generator, dtype=torch.float64)
        w[:, :3] = 0
        b = (w * torch.rand(64, 50, generator=generator, dtype=torch.float64)).sum(1) * scale
        ours = project_to_hyperplane(t, w, b, norm)
        assert torch.allclose(ours, reference(t, w.clone(), b.clone()), atol=1e-9)


@pytest.mark.parametrize("norm,eps", [("Linf", EPS), ("L2", 1.0)])
def test_fab_t_equals_autoattack_point_for_point(tiny_classifier, norm, eps):
    from pyautoattack import AutoAttack

    model, x, y = _points(tiny_classifier, 60)
    reference = AutoAttack(model, norm=norm, eps=eps, version="custom", attacks=["fab-t"], seed=0, device="cpu")
    reference.fab.n_restarts, reference.fab.n_target_classes = 1, 9  # AutoAttack 'standard'
    x_ref, _ = reference.run_standard_evaluation(x, y, batch_size=len(y))
    ours = attacks.make_attack("fab-t", eps=eps, norm=norm)(model, x, y)
    reference_robust = _robust(model, x_ref, y)
    assert 0 < int(reference_robust.sum()) < len(y)
    assert torch.equal(_robust(model, ours, y), reference_robust)


class _PositiveLogits(torch.nn.Module):
    """Logits + 100: the same classifier. torchattacks' CW multiplies logits by a one-hot mask
    instead of masking them out, which is only right when all logits are positive."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x) + 100.0


def test_cw_equals_torchattacks(tiny_classifier):
    model, x, y = _points(tiny_classifier, 40)
    shifted = _PositiveLogits(model)
    ours = attacks.make_attack("cw-l2", eps=1e3, steps=30, c=1.0, lr=0.01)(shifted, x, y)
    # torchattacks stops the whole batch when its summed loss rises; one point per batch makes that per point, as ours
    reference = torch.cat([torchattacks.CW(shifted, c=1.0, kappa=0, steps=30, lr=0.01)(x[i:i + 1], y[i:i + 1])
                           for i in range(len(y))])
    assert torch.allclose(ours, reference, atol=1e-5)
    broken = ~_robust(model, ours, y)
    assert 0 < int(broken.sum()) < len(y)
    small = attacks.make_attack("cw-l2", eps=0.5, steps=30)(shifted, x, y)  # only examples within eps count
    distance = flat_norm(reference - x, "L2")
    assert torch.equal(~_robust(model, small, y), broken & (distance <= 0.5))


# ---------------------------------------------------------------- the whole suite against AutoAttack


def test_autoattack_suite_matches_autoattack_standard(tiny_classifier, autoattack_starts):
    """With AutoAttack's random starts for APGD, APGD-CE, APGD-T and FAB-T give the same verdicts;
    Square draws its windows per point (the reference: per batch), so the points only Square
    decides may differ. They must be few, and Square must not be weaker overall."""
    from pyautoattack import AutoAttack

    model, x, y = tiny_classifier
    x, y, eps = x[:120], y[:120], 0.08  # few points survive APGD: Square's 5000 queries stay cheap
    reference = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=0, device="cpu")
    x_ref, _ = reference.run_standard_evaluation(x, y, batch_size=500)
    reference_robust = _robust(model, x_ref, y)
    result = attacks.evaluate(model, x, y, "autoattack", eps=eps, batch_size=500, sanity_checks=False)
    ours_robust = torch.tensor(result.points["robust"])
    broken_by = result.points["broken_by"]
    differing = (ours_robust != reference_robust).nonzero().flatten().tolist()
    assert all(broken_by[i] in ("square", None) for i in differing), [broken_by[i] for i in differing]
    assert len(differing) <= 2 and int(ours_robust.sum()) <= int(reference_robust.sum()) + 1
    assert [a.label for a in result.attacks] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert 0.05 < result.robust_accuracy < result.clean_accuracy


class _Unbreakable(torch.nn.Module):
    """Logits that do not depend on the input (zero gradients): no attack ever breaks a point, so
    every attack does all of its work."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.register_buffer("logits", torch.linspace(1.0, 0.0, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1) + 0.0 * x.flatten(1).sum(1, keepdim=True)


class _ReadsShare(torch.nn.Module):
    """Records the share of the work done (attacks.work) at every forward pass."""

    def __init__(self, model: torch.nn.Module, share, seen: list) -> None:
        super().__init__()
        self.model, self.share, self.seen = model, share, seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(round(self.share.read(), 6))
        return self.model(x)


def _shares(attack, x):
    from attacks import work

    seen: list = []
    with work.tracking() as share:
        attack(_ReadsShare(_Unbreakable(), share, seen), x, torch.zeros(len(x), dtype=torch.long))
        final = share.read()
    return seen, final


@pytest.mark.parametrize("name, settings, expected", [
    # steps done before each pass; restarts split the work in equal parts; the last pass of a restart checks
    ("pgd", {"steps": 4, "restarts": 2}, [0, .125, .25, .375, .375, .5, .625, .75, .875, .875]),
    ("cw-l2", {"steps": 2, "search_steps": 2}, [0, .25, .5, .75]),
])
def test_the_share_of_work_done_follows_steps_and_restarts(name, settings, expected):
    x = torch.rand(3, 1, 8, 8)
    seen, final = _shares(attacks.make_attack(name, eps=0.5 if name == "cw-l2" else EPS,
                                               norm="L2" if name == "cw-l2" else "Linf", **settings), x)
    assert seen == pytest.approx(expected, abs=1e-5) and final >= expected[-1]


@pytest.mark.parametrize("name", ["apgd-t", "fab-t"])
@pytest.mark.parametrize("rows_per_pass", [1, 0])
def test_the_share_of_work_done_counts_targets_in_order_and_side_by_side(name, rows_per_pass):
    """Three targets of two steps: in order each target is a third of the work; side by side the
    three run at once and each step is half of it."""
    seen, _ = _shares(attacks.make_attack(name, eps=EPS, steps=2, targets=3, rows_per_pass=rows_per_pass),
                      torch.rand(2, 1, 8, 8))
    progress = sorted(set(seen))
    assert seen == sorted(seen) and seen[0] == 0
    expected = [0, 1 / 6, 1 / 3, 1 / 2, 2 / 3, 5 / 6] if rows_per_pass == 1 else [0, 0.5]
    assert progress == pytest.approx(expected, abs=1e-5)


def test_the_share_of_work_done_counts_square_queries():
    seen, final = _shares(attacks.make_attack("square", eps=EPS, queries=20, forward_batch=2), torch.rand(2, 1, 8, 8))
    assert seen == sorted(seen) and seen[0] == 0 and 0.5 < seen[-1] < 1 and final == pytest.approx(1.0)


def test_the_share_of_work_done_is_tracked_only_inside_tracking():
    """Outside work.tracking() the attacks' calls are no-ops; a tracker ends with its block, also
    when the block fails, so the next evaluation starts from nothing."""
    from attacks import work

    work.advance(3, 4)
    with work.part(1, 2):
        work.advance(1, 2)
    assert work._current.get() is None
    with pytest.raises(RuntimeError):
        with work.tracking() as first:
            with work.part(1, 2):
                work.advance(1, 2)
            assert first.read() == pytest.approx(1.0)   # the second half's part is over
            raise RuntimeError("an attack fails")
    assert work._current.get() is None
    with work.tracking() as second:
        assert second is not first and second.read() == 0.0
