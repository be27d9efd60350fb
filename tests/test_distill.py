"""Distillation methods: each loss against a formula written out in numpy, gradients, training, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from robust_kd.checkpoint import read_checkpoint
from robust_kd.cli import main
from robust_kd.distill import StepContext, create_distiller, list_methods
from robust_kd.distill import energy as energy_module
from robust_kd.distill.dkd import warmup_ramp
from robust_kd.distill.r2kd import soft_ranks
from robust_kd.distill.setup import distill, published_options
from robust_kd.errors import UserError
from robust_kd.train import train

B, C = 8, 5
RNG = np.random.default_rng(7)
ZS = RNG.normal(size=(B, C)) * 2.0
ZT = RNG.normal(size=(B, C)) * 3.0
Y = np.array([0, 1, 2, 3, 4, 0, 1, 2])
Y[ZT.argmax(1) == Y] = (Y[ZT.argmax(1) == Y] + 1) % C  # some of these are made wrong on purpose …
Y[:2] = ZT[:2].argmax(1)  # … and the first two right, so KA has both kinds


# ---------------------------------------------------------------- numpy formulas (no shared code)


def softmax(z, t=1.0):
    z = np.asarray(z, dtype=np.float64) / t
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def kl(p, q):
    return (p * (np.log(p) - np.log(q))).sum(axis=1)


def ce(z, y):
    return float(-np.log(softmax(z)[np.arange(len(y)), y]).mean())


def cosine(a, b, axis):
    return (a * b).sum(axis) / (np.linalg.norm(a, axis=axis) * np.linalg.norm(b, axis=axis))


def kd_np(zs, zt, y, t=4.0, wce=0.1, wkd=0.9, t_rows=None):
    t_rows = np.full(len(y), t) if t_rows is None else t_rows
    per = np.array([t_rows[i] ** 2 * kl(softmax(zt[i:i + 1], t_rows[i]), softmax(zs[i:i + 1], t_rows[i]))[0]
                    for i in range(len(y))])
    return {"ce": wce * ce(zs, y), "kd": wkd * per.mean()}


def _ctx(zs=None, images=None, student=None, teacher=None, seed=0):
    images = torch.zeros(B, 3, 8, 8, dtype=torch.float64) if images is None else images
    return StepContext(images=images, labels=torch.tensor(Y), progress=50.0,
                       student=student or (lambda x: None), teacher=teacher or (lambda x: None),
                       generator=torch.Generator().manual_seed(seed))


def ours(method, options=None, state=None, zs=ZS, zt=ZT, y=Y, context=None):
    distiller = create_distiller(method, options or {})
    if state is not None:
        distiller.load_state_dict(state)
    student, teacher, labels = torch.tensor(zs), torch.tensor(zt), torch.tensor(y)
    teacher = distiller.adjust_teacher(teacher, labels)
    terms = distiller.loss(student, teacher, labels, context or _ctx())
    return {k: float(v) for k, v in terms.items()}


def assert_terms(got, expected):
    assert set(got) == set(expected)
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-5, rel=1e-5), key


# ---------------------------------------------------------------- every method, two ways


def test_kd():
    assert_terms(ours("kd"), kd_np(ZS, ZT, Y))
    assert_terms(ours("kd", {"temperature": 2.0, "ce_weight": 1.0, "kd_weight": 0.5}), kd_np(ZS, ZT, Y, 2.0, 1.0, 0.5))


def test_ttm_and_wttm():
    gamma, beta = 0.25, 7.0
    p_hat = softmax(gamma * ZT)
    per = kl(p_hat, softmax(ZS))
    assert_terms(ours("ttm", {"gamma": gamma, "beta": beta}), {"ce": ce(ZS, Y), "ttm": beta * per.mean()})
    weight = (softmax(ZT) ** gamma).sum(axis=1)  # U_γ on the untransformed teacher
    assert 1.0 <= weight.min() and weight.max() <= C ** (1 - gamma)
    assert_terms(ours("wttm", {"gamma": gamma, "beta": beta}), {"ce": ce(ZS, Y), "wttm": beta * (weight * per).mean()})


@pytest.mark.parametrize("direction", ["paper", "code"])
def test_energy_kd(direction):
    energies = -4.0 * np.log(np.exp(ZT / 4.0).sum(axis=1))
    low, high = np.sort(energies)[2], np.sort(energies)[-3]
    t = np.full(B, 4.0)
    t[energies < low] = 6.0 if direction == "paper" else 2.0  # confident samples: smoother in the paper
    t[energies > high] = 2.0 if direction == "paper" else 6.0
    state = {"thresholds": [low, high], "augment_thresholds": [low, high]}
    assert_terms(ours("energy_kd", {"direction": direction}, state), kd_np(ZS, ZT, Y, t_rows=t))


def test_energy_thresholds_are_the_code_quantiles():
    energies = torch.arange(10.0)
    assert energy_module._thresholds(energies, 0.2, 0.2) == (2.0, 7.0)
    assert energy_module._thresholds(energies, 0.0, 0.5) == (0.0, 4.0)


def test_heda_adds_kd_on_mixed_high_energy_samples(monkeypatch):
    monkeypatch.setattr(energy_module, "cutmix", lambda images, generator, alpha=1.0: images)  # mixing tested elsewhere
    images = torch.tensor(RNG.normal(size=(B, 3, 8, 8)))
    weights_s, weights_t = torch.tensor(RNG.normal(size=(3 * 64, C))), torch.tensor(RNG.normal(size=(3 * 64, C)))
    student = lambda x: x.flatten(1) @ weights_s  # noqa: E731
    teacher = lambda x: x.flatten(1) @ weights_t  # noqa: E731
    energies = -4.0 * np.log(np.exp(ZT / 4.0).sum(axis=1))
    high = np.sort(energies)[-4]  # HE-DA's 50%: above the 5th-highest energy of 8
    state = {"thresholds": [-1e9, 1e9], "augment_thresholds": [-1e9, high]}
    got = ours("heda", {}, state, context=_ctx(images=images, student=student, teacher=teacher))
    chosen = energies > high
    rows = np.concatenate([[0, 1], np.flatnonzero(chosen)])  # released: the first two images lead the mixed batch
    xs, xt = student(images).numpy()[rows], teacher(images).numpy()[rows]
    expected = kd_np(ZS, ZT, Y)  # released HE-DA: plain KD at T = 4 (no per-sample temperatures)
    expected["kd_aug"] = 0.9 * 16.0 * kl(softmax(xt, 4.0), softmax(xs, 4.0)).mean()
    assert chosen.sum() == 3
    assert_terms(got, expected)
    state = {"thresholds": [-1e9, 1e9], "augment_thresholds": [-1e9, 1e9]}  # none chosen: the lead pair alone
    got = ours("heda", {}, state, context=_ctx(images=images, student=student, teacher=teacher))
    xs, xt = student(images).numpy()[:2], teacher(images).numpy()[:2]
    assert got["kd_aug"] == pytest.approx(0.9 * 16.0 * kl(softmax(xt, 4.0), softmax(xs, 4.0)).mean(), rel=1e-6)
    got = ours("heda", {"augment_lead_images": False}, state, context=_ctx(images=images, student=student,
                                                                         teacher=teacher))
    assert got["kd_aug"] == 0.0


def test_energy_kd_gives_confident_samples_the_sharp_temperature_as_released():
    assert create_distiller("energy_kd").options.direction == "code"
    distiller = create_distiller("energy_kd")
    distiller.load_state_dict({"thresholds": [-10.0, -5.0], "augment_thresholds": [-10.0, -5.0]})
    confident, uncertain = torch.tensor([[60.0, 0, 0]]), torch.tensor([[0.0, 0, 0]])  # E ≈ −60 and −4.4
    assert float(distiller.sample_temperatures(confident)) == 2.0
    assert float(distiller.sample_temperatures(uncertain)) == 6.0


def test_heda_is_released_kd_with_he_da_and_energy_kd_with_it_an_option():
    heda = create_distiller("heda")
    assert not heda.options.energy_temperatures and heda.options.temperature == 4.0
    assert create_distiller("heda", {"energy_temperatures": True}).options.augment == "cutmix"


@pytest.mark.parametrize("method, options", [("heda", {}), ("ka", {}), ("energy_kd", {"energy_temperatures": False})])
def test_ka_lsr_works_with_one_base_temperature(method, options):
    distiller = create_distiller(method, {**options, "ka": "lsr"})
    distiller.load_state_dict({"thresholds": [-10.0, -5.0], "augment_thresholds": [-1e9, 1e9]})
    labels = torch.tensor(Y)
    adjusted = distiller.adjust_teacher(torch.tensor(ZT), labels)
    wrong = ZT.argmax(1) != Y
    target = softmax(adjusted.numpy()[wrong], 4.0)
    assert np.allclose(target[np.arange(wrong.sum()), Y[wrong]], 0.9)


def test_ka_lsr_with_per_sample_energy_temperatures_is_one_line():
    with pytest.raises(UserError, match="ka=lsr smooths a wrong teacher's target at one base temperature"):
        create_distiller("energy_kd", {"ka": "lsr"})


def test_cskd_and_cswt():
    ps, pt = softmax(ZS, 4.0), softmax(ZT, 4.0)
    cs = 2.0 * 16.0 * (1 - cosine(ps, pt, axis=0).mean())
    assert_terms(ours("cskd"), {"ce": ce(ZS, Y), "cs": cs})
    c = cosine(softmax(ZS), softmax(ZT), axis=1)
    t = 2.0 + 4.0 * (c.max() - c) / (c.max() - c.min())
    qs = np.stack([softmax(ZS[i:i + 1], t[i])[0] for i in range(B)])
    qt = np.stack([softmax(ZT[i:i + 1], t[i])[0] for i in range(B)])
    cswt = 2.0 * t.mean() ** 2 * (1 - cosine(qs, qt, axis=0).mean())
    assert_terms(ours("cswt"), {"ce": ce(ZS, Y), "cs": cs, "cswt": cswt})


def _ranks(x):
    return np.argsort(np.argsort(x, axis=1), axis=1) + 1.0


def test_r2kd_value_and_rank_terms():
    ps, pt = softmax(ZS, 4.0), softmax(ZT, 4.0)
    value = 2.0 * 16.0 * ((1 - np.abs(cosine(ps, pt, axis=1)).mean()) + (1 - np.abs(cosine(ps, pt, axis=0)).mean()))
    spearman = np.mean([scipy.stats.spearmanr(ps[i], pt[i])[0] for i in range(B)])
    got = ours("r2kd", {"augment": "none"})  # rank=hard: the released term is the default
    assert_terms(got, {"ce": ce(ZS, Y), "value": value, "rank": 2.0 * (1 - spearman)})
    # soft ranks: r_i = 1 + Σ_{j≠i} σ((x_i − x_j)/s), s = 0.1·std(row)
    s = 0.1 * ps.std(axis=1, ddof=1, keepdims=True)
    soft = 0.5 + (1 / (1 + np.exp(-(ps[:, :, None] - ps[:, None, :]) / s[:, :, None]))).sum(axis=2)
    rho = np.mean([np.corrcoef(soft[i], _ranks(pt)[i])[0, 1] for i in range(B)])
    got = ours("r2kd", {"rank": "soft", "augment": "none"})
    assert got["rank"] == pytest.approx(2.0 * (1 - rho), abs=1e-5)


def test_r2kd_teacher_is_mixed_with_a_pruned_copy():
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 20), torch.nn.ReLU(),
                                  torch.nn.Linear(20, C)).double()
    distiller = create_distiller("r2kd")
    distiller.attach(teacher)
    for layer, pruned in ((teacher[1], distiller.pruned[1]), (teacher[3], distiller.pruned[3])):
        zeros = pruned.weight == 0
        assert zeros.sum() == round(0.1 * layer.weight.numel())
        assert layer.weight.abs()[zeros].max() <= layer.weight.abs()[~zeros].min()  # the smallest 10% by |w|
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    expected = 0.7 * teacher(x) + 0.3 * distiller.pruned(x)
    assert torch.allclose(distiller.teacher_forward(teacher, x).double(), expected, atol=1e-5)
    assert distiller.pruned[1].weight.count_nonzero() < teacher[1].weight.count_nonzero()  # the teacher is untouched


def _wrong():
    return ZT.argmax(1) != Y


def test_ka_probability_shift():
    pt = softmax(ZT, 4.0)
    for i in np.flatnonzero(_wrong()):
        top = pt[i].argmax()
        pt[i, [Y[i], top]] = pt[i, [top, Y[i]]]
    per = 16.0 * kl(pt, softmax(ZS, 4.0))
    assert 0 < _wrong().sum() < B
    assert_terms(ours("ka"), {"ce": 0.1 * ce(ZS, Y), "kd": 0.9 * per.mean()})


def test_ka_label_smoothing():
    pt = softmax(ZT, 4.0)
    for i in np.flatnonzero(_wrong()):
        pt[i] = 0.1 / (C - 1)
        pt[i, Y[i]] = 0.9
    per = 16.0 * kl(pt, softmax(ZS, 4.0))
    assert_terms(ours("kd", {"ka": "lsr"}), {"ce": 0.1 * ce(ZS, Y), "kd": 0.9 * per.mean()})


@pytest.mark.parametrize("weighting", ["flsw", "cwsm"])
def test_dtd(weighting):
    if weighting == "flsw":
        w = (1 - cosine(ZS, ZT, axis=1)) ** 1.0
    else:
        w = 1 / (softmax(ZS).max(axis=1) + 1e-3)
    tau = np.maximum(4.0 + 2.0 * (w.mean() - w), 0.5)
    assert_terms(ours("dtd", {"dtd_weight": weighting}), kd_np(ZS, ZT, Y, t_rows=tau))


def _dkd_np(zs, zt, y, t, alpha, beta, ramp):
    ps, pt = softmax(zs, t), softmax(zt, t)
    rows = np.arange(len(y))
    bs = np.stack([ps[rows, y], 1 - ps[rows, y]], 1)
    bt = np.stack([pt[rows, y], 1 - pt[rows, y]], 1)
    tckd = kl(bt, bs)
    mask = np.ones_like(ps, dtype=bool)
    mask[rows, y] = False
    rest_s = ps[mask].reshape(len(y), -1)
    rest_t = pt[mask].reshape(len(y), -1)
    nckd = kl(rest_t / rest_t.sum(1, keepdims=True), rest_s / rest_s.sum(1, keepdims=True))
    return {"ce": ce(zs, y), "tckd": ramp * alpha * t * t * tckd.mean(), "nckd": ramp * beta * t * t * nckd.mean()}


def _zscore(z):
    return (z - z.mean(1, keepdims=True)) / (z.std(1, ddof=1, keepdims=True) + 1e-7)


def test_dkd_with_its_warmup():
    assert_terms(ours("dkd", {"beta": 6.0}), _dkd_np(ZS, ZT, Y, 4.0, 1.0, 6.0, ramp=1.0))
    early = ours("dkd", {}, context=_ctx())
    assert early["nckd"] > 0
    context = _ctx()
    context.progress = 4.5  # half-way through the fifth epoch: mdistiller's epoch 5 of the 20-epoch warm-up
    assert_terms(ours("dkd", {}, context=context), _dkd_np(ZS, ZT, Y, 4.0, 1.0, 8.0, ramp=0.25))


def test_dkd_warmup_counts_epochs_from_one_as_mdistiller():
    """mdistiller passes the 1-based epoch: the first epoch already has 1/20 of the terms, constant within it."""
    assert [warmup_ramp(p, 20.0) for p in (0.0, 0.5, 0.99, 1.0, 18.7, 19.0, 40.0)] == [
        0.05, 0.05, 0.05, 0.1, 0.95, 1.0, 1.0]
    assert warmup_ramp(0.3, 0.0) == 1.0


def test_logit_standardization_and_dkd_ls():
    zs, zt = _zscore(ZS), _zscore(ZT)
    expected = {"ce": 0.1 * ce(ZS, Y), "kd": 9.0 * 4.0 * kl(softmax(zt, 2.0), softmax(zs, 2.0)).mean()}
    assert_terms(ours("ls"), expected)
    expected = _dkd_np(zs, zt, Y, 2.0, 9.0, 72.0, ramp=1.0)
    expected["ce"] = ce(ZS, Y)
    assert_terms(ours("dkd_ls"), expected)


def test_every_method_has_a_formula_test():
    tested = {"kd", "ttm", "wttm", "energy_kd", "heda", "cskd", "cswt", "r2kd", "ka", "dtd", "dkd", "ls", "dkd_ls"}
    assert set(list_methods()) == tested


# ---------------------------------------------------------------- gradients of the custom terms


def _grad_check(method, options, term=None, state=None):
    distiller = create_distiller(method, options)
    if state:
        distiller.load_state_dict(state)
    teacher, labels = torch.tensor(ZT), torch.tensor(Y)
    # per-sample temperatures are detached by design: hold them at their value for the numeric check
    if distiller.options.dtd:
        fixed = distiller.temperature(torch.tensor(ZS), teacher)
        distiller.temperature = lambda student, teacher: fixed
    if hasattr(distiller, "cswt_temperatures"):
        fixed_cswt = distiller.cswt_temperatures(torch.tensor(ZS), teacher)
        distiller.cswt_temperatures = lambda student, teacher: fixed_cswt

    def f(student):
        terms = distiller.loss(student, teacher, labels, _ctx())
        return terms[term] if term else sum(terms.values())

    student = torch.tensor(ZS, requires_grad=True)
    assert torch.autograd.gradcheck(f, (student,), eps=1e-6, atol=1e-5)
    (grad,) = torch.autograd.grad(f(student), student)
    return grad


@pytest.mark.parametrize("method, options, term", [
    ("wttm", {}, "wttm"), ("dkd", {}, "nckd"), ("dkd", {}, "tckd"), ("cswt", {}, "cswt"),
    ("r2kd", {"rank": "soft", "augment": "none"}, "rank"), ("r2kd", {"augment": "none"}, "value"), ("ls", {}, "kd"),
    ("dtd", {}, "kd"), ("ka", {}, "kd"),
])
def test_custom_terms_have_correct_gradients(method, options, term):
    grad = _grad_check(method, options, term)
    assert grad.abs().sum() > 0


def test_released_r2kd_rank_term_has_no_gradient_but_the_soft_one_does():
    distiller = create_distiller("r2kd", {"augment": "none"})  # the default is the released term
    assert distiller.options.rank == "hard"
    student = torch.tensor(ZS, requires_grad=True)
    rank = distiller.loss(student, torch.tensor(ZT), torch.tensor(Y), _ctx())["rank"]
    assert not rank.requires_grad
    x = torch.tensor(RNG.normal(size=(3, 6)))
    assert torch.allclose(soft_ranks(x, 1e-4), torch.tensor(_ranks(x.numpy())), atol=1e-3)


# ---------------------------------------------------------------- options and configs


def test_published_per_pair_defaults():
    options, where = published_options("wttm", "resnet32x4", "resnet8x4")
    assert (options["gamma"], options["beta"], options["weighted"]) == (0.1, 3.0, True) and "pair" in where
    assert published_options("ttm", "vgg13", "vgg8")[0]["beta"] == 45.0
    assert published_options("ttm", "jpegdl_vgg13", "jpegdl_vgg8")[0]["beta"] == 45.0
    assert published_options("dkd", "resnet56", "resnet20")[0]["beta"] == 2.0
    assert published_options("energy_kd", "resnet56", "resnet20")[0]["low_rate"] == 0.3
    options, where = published_options("wttm", "resnet8", "resnet8")
    assert options["beta"] == 3.0 and "pair" not in where
    assert published_options("energy_kd", "a", "b")[0]["direction"] == "code"


def test_every_method_config_builds_for_every_listed_pair():
    import yaml

    folder = Path(__file__).resolve().parents[1] / "configs" / "methods"
    assert {p.stem for p in folder.glob("*.yaml")} == set(list_methods())
    for path in folder.glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        create_distiller(path.stem, data["options"])
        for pair in (data.get("pairs") or {}).values():
            create_distiller(path.stem, {**data["options"], **pair})


def test_bad_options_are_refused():
    with pytest.raises(UserError, match=r"unknown config key 'distill.options.gama' "
                                        r"\(did you mean 'distill.options.gamma'\?\)"):
        create_distiller("ttm", {"gama": 0.2})
    with pytest.raises(UserError, match="unknown distillation method 'wtm'.*did you mean 'wttm'"):
        create_distiller("wtm")
    with pytest.raises(UserError, match="dtd=true does not apply"):
        create_distiller("energy_kd", {"dtd": True})
    with pytest.raises(UserError, match="three positive numbers"):
        create_distiller("energy_kd", {"temperatures": [1, 2]})


# ---------------------------------------------------------------- distilling for real


SMALL = ["batch_size=32", "eval_batch_size=64", "data.options.size=16", "data.options.train=192",
         "data.options.test=64", "device=cpu"]


@pytest.fixture(scope="module")
def teacher_checkpoint(tmp_path_factory) -> str:
    runs = tmp_path_factory.mktemp("teacher")
    summary = train("resnet14", "synthetic", "quick", overrides=SMALL + ["epochs=3"], runs_dir=runs)
    return summary["checkpoint"]


@pytest.mark.parametrize("method", sorted({"kd", "ttm", "wttm", "energy_kd", "heda", "cskd", "cswt", "r2kd",
                                           "ka", "dtd", "dkd", "ls", "dkd_ls"}))
def test_each_method_distils_with_a_falling_finite_loss(method, teacher_checkpoint, tmp_path):
    summary = distill(teacher_checkpoint, "resnet8", method, "synthetic", "quick", overrides=SMALL + ["epochs=3"],
                      runs_dir=tmp_path)
    records = [json.loads(line) for line in (Path(summary["run"]) / "metrics.jsonl").read_text().splitlines()]
    totals = [sum(r["train_loss"].values()) for r in records]
    assert all(np.isfinite(totals)) and totals[-1] < totals[0], totals
    assert summary["method"] == method and 0 <= summary["teacher"]["test_accuracy"] <= 1


def test_energy_thresholds_are_kept_for_a_resume(teacher_checkpoint, tmp_path):
    summary = distill(teacher_checkpoint, "resnet8", "energy_kd", "synthetic", "quick", overrides=SMALL + ["epochs=1"],
                      runs_dir=tmp_path)
    state = read_checkpoint(summary["checkpoint"])["trainer"]["objective_state"]
    low, high = state["thresholds"]
    assert low < high
    again = distill(teacher_checkpoint, "resnet8", "energy_kd", "synthetic", "quick", overrides=SMALL + ["epochs=1"],
                    runs_dir=tmp_path)
    assert again == summary


def test_the_teacher_cache_changes_nothing_but_the_work(teacher_checkpoint, tmp_path):
    plain = SMALL + ["epochs=2", "augment.crop_padding=0", "augment.hflip=false"]
    off = distill(teacher_checkpoint, "resnet8", "kd", "synthetic", "quick", runs_dir=tmp_path / "a",
                  overrides=plain + ["distill.teacher_cache=never"])
    on = distill(teacher_checkpoint, "resnet8", "kd", "synthetic", "quick", runs_dir=tmp_path / "b",
                 overrides=plain + ["distill.teacher_cache=always"])
    a, b = read_checkpoint(off["checkpoint"])["model"], read_checkpoint(on["checkpoint"])["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "teacher_cache_filled" not in off
    assert on["teacher_cache_filled"] == 1.0  # one view per image: epoch 2 took every teacher output from the cache


def test_distill_cli_and_its_bad_inputs(teacher_checkpoint, tmp_path, capsys):
    runs = str(tmp_path / "runs")
    code = main(["distill", "--teacher", teacher_checkpoint, "--student", "resnet8", "--method", "wttm",
                 "--data", "synthetic", "--runs-dir", runs, *SMALL, "epochs=1"])
    out = capsys.readouterr()
    assert code == 0 and "teacher" in out.out and "resnet8 (wttm from resnet14)" in out.out
    assert "wttm options from configs/methods/wttm.yaml" in out.err
    bad = [
        (["--data", "synthetic", "data.options.classes=3"], "predicts 4 classes"),
        (["--data", "synthetic", "--method", "kdd"], "unknown distillation method 'kdd'"),
        (["--data", "synthetic", "distill.options.tempreature=3"], "unknown config key 'distill.options.tempreature'"),
    ]
    for args, message in bad:
        code = main(["distill", "--teacher", teacher_checkpoint, "--runs-dir", runs + "2", *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "runs2").exists()
    assert main(["distill", "--student", "resnet8"]) == 2 and "needs --teacher" in capsys.readouterr().err
    assert main(["distill", "--list", "--json"]) == 0
    assert {r["method"] for r in json.loads(capsys.readouterr().out)} == set(list_methods())


def test_the_methods_document_is_current():
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "make_methods_doc.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, "docs/methods.md is out of date: run python scripts/make_methods_doc.py"


def test_jpegdl_models_distil_as_teacher_and_as_student(tmp_path):
    teacher = train("jpegdl_resnet8", "synthetic", "quick", overrides=SMALL + ["epochs=1"], runs_dir=tmp_path)
    summary = distill(teacher["checkpoint"], "jpegdl_resnet8", "wttm", "synthetic", "quick",
                      overrides=SMALL + ["epochs=1"], runs_dir=tmp_path)
    assert summary["teacher"]["arch"] == "jpegdl_resnet8" and "jpeg_table_shift" in summary
    assert "input_layer.luma_table" in read_checkpoint(summary["checkpoint"])["model"]


class _HostSyncs(TorchDispatchMode):
    """Records the operations that, on CUDA, make the host wait for the device: reading a value (item,
    nonzero, masked_select) and indexing or writing with a boolean mask (a nonzero inside)."""

    READS = ("aten::nonzero", "aten::_local_scalar_dense", "aten::masked_select")
    INDEXING = ("aten::index", "aten::index_put", "aten::index_put_")

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        by_mask = name in self.INDEXING and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
                                                 for i in (args[1] or []))
        if name in self.READS or by_mask:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("method, options", [("wttm", {}), ("kd", {"ka": "ps"}), ("kd", {"ka": "lsr"}),
                                             ("energy_kd", {})])
def test_a_training_step_of_these_methods_makes_the_host_wait_for_nothing(method, options):
    """Knowledge adjustment and Energy KD's temperatures work on every row with torch.where: on CUDA a
    boolean mask or a value read on the host would stop the host until the GPU caught up, every step."""
    distiller = create_distiller(method, options)
    if method == "energy_kd":
        distiller.load_state_dict({"thresholds": [-1.0, 1.0], "augment_thresholds": [-1.0, 1.0]})
    student, teacher, labels = torch.tensor(ZS), torch.tensor(ZT), torch.tensor(Y)
    with _HostSyncs() as syncs:
        terms = distiller.loss(student, distiller.adjust_teacher(teacher, labels), labels, _ctx())
    assert terms and syncs.seen == []


def test_a_full_teacher_cache_is_read_without_asking_the_device_what_is_missing():
    from types import SimpleNamespace

    from robust_kd.distill.objective import DistillationObjective, TeacherCache

    cpu = torch.device("cpu")
    objective = DistillationObjective(create_distiller("kd"), torch.nn.Linear(4, C), device=cpu, teacher_arch="t",
                                      student_arch="s", cache="always")
    objective.cache = TeacherCache(6, 1, C, cpu)
    batch = SimpleNamespace(index=torch.arange(6), view=None, images=torch.rand(6, 4))
    with _HostSyncs() as filling:
        first = objective._teacher_for(batch)
    assert filling.seen and objective.cache.unfilled == 0     # filling it asks which entries are missing
    with _HostSyncs() as reading:
        again = objective._teacher_for(batch)
    assert reading.seen == [] and torch.equal(again, first)


def test_r2kd_pruned_copy_uses_batch_statistics_as_released_and_is_not_cached():
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                  torch.nn.Linear(4 * 36, C)).eval()
    teacher[1].running_mean.fill_(5.0)  # running statistics far from any batch's
    x = torch.randn(6, 3, 8, 8)
    released = create_distiller("r2kd")
    released.attach(teacher)
    with torch.inference_mode():
        whole, part = released.teacher_forward(teacher, x), released.teacher_forward(teacher, x[:3])
    assert not torch.allclose(whole[:3], part, atol=1e-4)  # a sample's logits depend on its batch
    assert not released.teacher_is_cacheable()
    running = create_distiller("r2kd", {"pruned_batchnorm": "eval"})
    running.attach(teacher)
    with torch.inference_mode():
        assert torch.allclose(running.teacher_forward(teacher, x)[:3], running.teacher_forward(teacher, x[:3]),
                              atol=1e-5)
    assert running.teacher_is_cacheable() and create_distiller("kd").teacher_is_cacheable()


def test_every_method_names_its_source_and_its_departures_are_real_options():
    """configs/methods/<name>.yaml: ``source`` (the code its defaults come from) and ``departures``: each
    key an option=value of that method that its default is not (so every departure is off by default)."""
    import yaml

    folder = Path(__file__).resolve().parents[1] / "configs" / "methods"
    for path in folder.glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        assert data["source"].strip(), path.name
        defaults = published_options(path.stem, "", "")[0]
        for departure in data["departures"]:
            key, value = departure.split("=")
            parsed = yaml.safe_load(value)
            create_distiller(path.stem, {key: parsed})  # a real option with an allowed value
            assert defaults[key] != parsed, f"{path.name}: {departure} is the default, not a departure"
