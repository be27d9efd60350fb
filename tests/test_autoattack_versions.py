"""AutoAttack's 'plus' and 'rand' versions: their new pieces (untargeted FAB, APGD with EOT) against
pyautoattack point for point, and the whole suites against pyautoattack's own runs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import attacks
from conftest import correct_points as _points, still_robust as _robust


@pytest.mark.parametrize("norm,eps", [("Linf", 0.05), ("L2", 1.0)])
def test_untargeted_fab_equals_autoattack_point_for_point(tiny_classifier, norm, eps):
    from pyautoattack.fab_pt import FABAttack_PT

    model, x, y = _points(tiny_classifier, 40)
    reference = FABAttack_PT(model, norm=norm, n_restarts=1, n_iter=40, eps=eps, seed=0, targeted=False,
                             device="cpu").perturb(x, y)
    ours = attacks.make_attack("fab", eps=eps, norm=norm, steps=40)(model, x, y)
    reference_robust = _robust(model, reference, y) | (attacks.core.flat_norm(reference - x, norm) > eps + 1e-6)
    assert 0 < int(reference_robust.sum()) < len(y)
    assert torch.equal(_robust(model, ours, y), reference_robust)


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_with_eot_equals_autoattacks_eot_iter(tiny_classifier, autoattack_starts, loss):
    """EOT: each step's gradient is the mean over the passes, the loss and logits the last pass's."""
    from pyautoattack.autopgd_base import APGDAttack

    model, x, y = _points(tiny_classifier, 60)
    reference = APGDAttack(model, n_iter=20, norm="Linf", n_restarts=1, eps=0.05, seed=0, loss=loss, eot_iter=3,
                           device="cpu").perturb(x, y)
    ours = attacks.make_attack("apgd", eps=0.05, steps=20, loss=loss, eot=3)(model, x, y)
    reference_robust = _robust(model, reference, y)
    assert 0 < int(reference_robust.sum()) < len(y)
    assert torch.equal(_robust(model, ours, y), reference_robust)


class _Noisy(torch.nn.Module):
    """A randomised defence: Gaussian noise on the input at every pass."""

    def __init__(self, model, sigma=0.1):
        super().__init__()
        self.model, self.sigma = model, sigma

    def forward(self, x):
        return self.model(x + self.sigma * torch.randn_like(x))


def test_eot_counts_its_passes_and_the_rand_suite_attacks_a_randomised_model(tiny_classifier):
    model, x, y = _points(tiny_classifier, 30)
    counter = attacks.CountingModel(_Noisy(model))
    attacks.make_attack("apgd", eps=0.05, steps=4, eot=5)(counter, x, y)
    assert counter.backwards >= 5 * len(y)      # the start and each step: 5 passes per point
    suite = attacks.build_suite("autoattack_rand", eps=0.05, norm="Linf", seed=0, num_classes=10)
    assert [(s.label, s.attack.eot, s.attack.loss) for s in suite.steps] == [("apgd-ce", 20, "ce"),
                                                                             ("apgd-dlr", 20, "dlr")]
    torch.manual_seed(0)
    small = {"name": "rand-small", "attacks": [{"attack": "apgd", "label": "apgd-ce", "steps": 10, "eot": 4}]}
    result = attacks.evaluate(_Noisy(model), x, y, small, eps=0.1, sanity_checks=False)
    assert result.robust_accuracy < result.clean_accuracy


def test_plus_suite_has_autoattacks_steps_and_settings():
    suite = attacks.build_suite("autoattack_plus", eps=8 / 255, norm="Linf", seed=0, num_classes=10)
    assert [s.label for s in suite.steps] == ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]
    settings = {s.label: s.attack for s in suite.steps}
    assert (settings["apgd-ce"].restarts, settings["apgd-dlr"].restarts, settings["fab"].restarts) == (5, 5, 5)
    assert (settings["apgd-t"].targets, settings["fab-t"].targets, settings["square"].queries) == (9, 9, 5000)


@pytest.mark.slow
@pytest.mark.parametrize("version", ["standard", "plus", "rand"])
@pytest.mark.parametrize("norm,eps", [("Linf", 0.1), ("L2", 1.5)])
def test_whole_version_against_pyautoattack(tiny_classifier, autoattack_starts, version, norm, eps):
    """The reference engine equals pyautoattack's run of the version exactly; ours (with AutoAttack's APGD
    starts) may differ only on points that random draws of FAB's restarts or Square decide, and must not be
    weaker by more than one point."""
    from pyautoattack import AutoAttack

    model, x, y = tiny_classifier
    x, y = x[:60], y[:60]
    reference = AutoAttack(model, norm=norm, eps=eps, version=version, seed=0, device="cpu")
    x_ref, _ = reference.run_standard_evaluation(x, y, batch_size=50)
    expected = _robust(model, x_ref, y)
    suite = "autoattack" if version == "standard" else f"autoattack_{version}"
    engine = attacks.evaluate(model, x, y, suite, eps=eps, norm=norm, batch_size=50, engine="reference",
                              sanity_checks=False)
    assert torch.equal(torch.tensor(engine.points["robust"]), expected)
    ours = attacks.evaluate(model, x, y, suite, eps=eps, norm=norm, batch_size=50, sanity_checks=False)
    robust = torch.tensor(ours.points["robust"])
    differing = (robust != expected).nonzero().flatten().tolist()
    assert all(ours.points["broken_by"][i] in ("fab", "square", None) for i in differing)
    assert int(robust.sum()) <= int(expected.sum()) + 1


# ---------------------------------------------------------------- Square with the reference's draws


def _reference_draws(norm: str, shape: tuple[int, int, int], queries: int, seed: int) -> dict:
    """pyautoattack's Square draws for one point, replayed from torch's generator in its order, as the integers
    ours draws: window corners in [0, side − s] (the reference never draws the last corner, s − 1 short),
    signs and transposes as 0/1. L1 draws as L2."""
    from attacks.square import p_at

    c, h, w = shape
    torch.manual_seed(seed)
    coin = lambda n=1: (torch.rand(n) > 0.5).long()  # noqa: E731   (random_choice's sign, eta's transpose)
    corner = lambda s: int((h - s) * torch.rand(1))  # noqa: E731   (random_int(0, h - s))
    if norm == "Linf":
        start = coin(c * w)
    else:
        s0 = h // 5
        cells = (h // s0) * (w // s0)
        transposes, signs = [], []
        for _ in range(cells):
            transposes.append(coin())
            signs.append(coin(c))
        start = torch.cat(signs + transposes)
    where, flips = [], []
    for i in range(queries):
        area = p_at(i, 0.8, queries, False) * c * h * w / c
        if norm == "Linf":
            s = min(max(int(round(area ** 0.5)), 1), h)
            where.append([corner(s), corner(s)])
            flips.append(coin(c))
        else:
            s = max(int(round(area ** 0.5)), 3)
            s = min(s + (1 - s % 2), h)
            where.append([corner(s) for _ in range(4)])
            transpose = coin()
            flips.append(torch.cat([coin(c), transpose]))
    return {"start": start, "where": torch.tensor(where), "flips": torch.stack(flips)}


@pytest.mark.parametrize("norm,eps", [("Linf", 0.05), ("L2", 0.8), ("L1", 20.0)])
def test_square_with_the_reference_draws_makes_the_reference_images(tiny_classifier, monkeypatch, norm, eps):
    from pyautoattack.square import SquareAttack

    from attacks import square as square_module

    model, x, y = _points(tiny_classifier, 8)
    queries = 150
    draws = _reference_draws(norm, tuple(x.shape[1:]), queries, seed=0)

    def injected(index, count, high, seed, stream):
        if isinstance(stream, int):                       # the start
            return draws["start"][None].expand(len(index), -1)
        it = stream.view(-1) % 1000 if bool((stream < 50000).all()) else stream.view(-1) - 50000
        return draws["where"][it] if bool((stream < 50000).all()) else draws["flips"][it]

    monkeypatch.setattr(square_module, "point_integers", injected)
    compared = 0
    for i in range(len(y)):
        reference = SquareAttack(model, norm=norm, n_queries=queries, eps=eps, seed=0, resc_schedule=False,
                                 device="cpu")
        reference.init_hyperparam(x[i:i + 1])
        torch.manual_seed(0)
        _, expected = reference.attack_single_run(x[i:i + 1], y[i:i + 1])
        ours = attacks.make_attack("square", eps=eps, norm=norm, queries=queries)(model, x[i:i + 1], y[i:i + 1])
        assert torch.allclose(ours, expected, atol=1e-6), (i, float((ours - expected).abs().max()))
        compared += int(not _robust(model, expected, y[i:i + 1]))
    assert 0 < compared < len(y)       # some points broken, some not: both paths compared


# ---------------------------------------------------------------- L1 (AutoAttack's L1 version)


def test_l1_projection_is_exact_and_equals_autoattacks_to_float32():
    from pyautoattack.autopgd_base import L1_projection

    from attacks.l1 import project_l1

    torch.manual_seed(0)
    x = torch.rand(32, 3, 8, 8, dtype=torch.float64)
    for scale, eps in [(1.0, 5.0), (0.1, 5.0), (3.0, 1.0), (0.01, 12.0)]:
        delta = scale * torch.randn_like(x)
        ours = project_l1(x, delta, eps)
        assert torch.allclose(ours, delta + L1_projection(x, delta, eps).double(), atol=2e-4)   # theirs: float32
        assert float(ours.abs().flatten(1).sum(1).max()) <= eps * (1 + 1e-12)
        assert float((x + ours).min()) >= 0 and float((x + ours).max()) <= 1
        # optimal: the same threshold λ on every coordinate that is neither 0 nor at the box
        shrink = (delta.abs() - ours.abs()).flatten(1)
        free = (ours.abs() > 1e-12).flatten(1) & (ours.abs() < torch.where(delta > 0, 1 - x, x) - 1e-12).flatten(1)
        spread = torch.where(free, shrink, torch.nan)
        assert float((spread.nan_to_num(-1).amax(1) - spread.nan_to_num(1e9).amin(1)).clamp_min(0).max()) < 1e-9


def test_fab_l1_hyperplane_projection_equals_autoattacks():
    from pyautoattack.fab_projections import projection_l1

    from attacks.fab import project_to_hyperplane

    torch.manual_seed(0)
    t = torch.rand(64, 300, dtype=torch.float64)
    w = torch.randn(64, 300, dtype=torch.float64) * (torch.rand(64, 300, dtype=torch.float64) > 0.1)
    for scale in (5.0, 50.0):          # 50: some planes the box cannot reach
        b = (w * t).sum(1) + scale * torch.randn(64, dtype=torch.float64)
        assert torch.allclose(project_to_hyperplane(t, w, b, "L1"), projection_l1(t.clone(), w.clone(), b.clone()),
                              atol=1e-9)


@pytest.fixture
def l1_reference_numerics(monkeypatch):
    """Our L1 APGD given AutoAttack's starts (torch's generator: one normal draw per run, and with shrinking eps
    three more that its stages draw and drop) and its float32 projection, so that trajectories can be compared
    point for point: the L1 steps move only the largest gradient coordinates, so rounding changes which."""
    from pyautoattack.autopgd_base import L1_projection

    from attacks import apgd as apgd_module
    from attacks import apgd_l1

    def torch_normal(index, shape, seed, stream, dtype):
        drawn = torch.randn((len(index),) + tuple(shape))
        for _ in range(3 if torch_normal.shrinking else 0):
            torch.randn((len(index),) + tuple(shape))
        return drawn.to(dtype)

    monkeypatch.setattr(apgd_l1, "point_normal", torch_normal)
    monkeypatch.setattr(apgd_l1, "project_l1", lambda x, delta, eps: delta + L1_projection(x, delta, eps))
    for cls in (apgd_module.APGD, apgd_module.APGDT):
        original = cls.perturb

        def seeded(self, model, x, y, index, _original=original):
            torch_normal.shrinking = self.shrinking_eps
            torch.manual_seed(self.seed)
            return _original(self, model, x, y, index)

        monkeypatch.setattr(cls, "perturb", seeded)


@pytest.mark.parametrize("name,shrinking", [("apgd", False), ("apgd", True), ("apgd-t", True)])
def test_l1_apgd_equals_autoattack_point_for_point(tiny_classifier, l1_reference_numerics, name, shrinking):
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    model, x, y = _points(tiny_classifier, 80)
    if name == "apgd":
        reference = APGDAttack(model, n_iter=100, norm="L1", eps=5.0, seed=0, device="cpu", use_largereps=shrinking)
        ours = attacks.make_attack("apgd", eps=5.0, norm="L1", shrinking_eps=shrinking)
    else:
        reference = APGDAttack_targeted(model, n_iter=100, norm="L1", eps=5.0, seed=0, n_target_classes=3,
                                        device="cpu", use_largereps=True)
        ours = attacks.make_attack("apgd-t", eps=5.0, norm="L1", targets=3, shrinking_eps=True, rows_per_pass=1)
    expected = _robust(model, reference.perturb(x, y), y)
    assert 0 < int(expected.sum()) < len(y)
    assert torch.equal(_robust(model, ours(model, x, y), y), expected)


@pytest.mark.parametrize("name", ["fab-t", "fab"])
def test_l1_fab_equals_autoattack_point_for_point(tiny_classifier, name):
    from pyautoattack.fab_pt import FABAttack_PT

    model, x, y = _points(tiny_classifier, 40)
    reference = FABAttack_PT(model, norm="L1", n_iter=60, eps=5.0, seed=0, targeted=name == "fab-t",
                             n_target_classes=3, device="cpu").perturb(x, y)
    expected = _robust(model, reference, y) | (attacks.core.flat_norm(reference - x, "L1") > 5.0 * (1 + 1e-5))
    ours = attacks.make_attack(name, eps=5.0, norm="L1", steps=60, **({"targets": 3} if name == "fab-t" else {}))
    assert 0 < int(expected.sum()) < len(y)
    assert torch.equal(_robust(model, ours(model, x, y), y), expected)


def test_l1_suite_is_autoattacks_l1_version_and_its_bad_input_is_one_line(tiny_classifier):
    suite = attacks.build_suite("autoattack", eps=12.0, norm="L1", seed=0, num_classes=10)
    settings = {s.label: s.attack for s in suite.steps}
    assert list(settings) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert (settings["apgd-ce"].restarts, settings["apgd-ce"].shrinking_eps) == (5, True)
    assert (settings["apgd-t"].targets, settings["apgd-t"].shrinking_eps, settings["fab-t"].targets) == (5, True, 9)
    assert attacks.DEFAULT_EPS["L1"] == 12.0
    model, x, y = tiny_classifier
    with pytest.raises(attacks.AttackError, match="pgd supports Linf and L2, not 'L1'"):
        attacks.evaluate(model, x[:8], y[:8], "pgd", norm="L1")
    with pytest.raises(attacks.AttackError, match="transfer .* has no L1 version"):
        attacks.evaluate(model, x[:8], y[:8], "autoattack", norm="L1", surrogates=[model])
    result = attacks.evaluate(model, x[:30], y[:30], {"name": "l1", "attacks": [
        {"attack": "apgd", "steps": 20, "shrinking_eps": True}, {"attack": "square", "queries": 100}]},
        eps=8.0, norm="L1", sanity_checks=False)
    assert result.norm == "L1" and 0 < result.robust_accuracy < result.clean_accuracy


@pytest.mark.slow
def test_whole_l1_version_against_pyautoattack(tiny_classifier, l1_reference_numerics):
    """AutoAttack's L1 version: the reference engine equals pyautoattack; ours, given its APGD starts and float32
    projection, differs only on points Square decides (its windows are drawn per point, the reference's per
    batch), and is not weaker by more than one point."""
    from pyautoattack import AutoAttack

    model, x, y = tiny_classifier
    x, y = x[:60], y[:60]
    reference = AutoAttack(model, norm="L1", eps=12.0, version="standard", seed=0, device="cpu")
    x_ref, _ = reference.run_standard_evaluation(x, y, batch_size=50)
    expected = _robust(model, x_ref, y)
    suite = attacks.build_suite("autoattack", eps=12.0, norm="L1", seed=0, num_classes=10)
    for step in suite.steps:      # targets one after another, drawing their starts in the reference's order
        if step.label == "apgd-t":
            step.attack = dataclasses.replace(step.attack, rows_per_pass=1)
    ours = attacks.evaluate(model, x, y, suite, eps=12.0, norm="L1", batch_size=50, sanity_checks=False)
    robust = torch.tensor(ours.points["robust"])
    differing = (robust != expected).nonzero().flatten().tolist()
    assert all(ours.points["broken_by"][i] in ("square", None) for i in differing)
    assert int(robust.sum()) <= int(expected.sum()) + 1
