"""Each method with its default configuration against numbers produced by its authors' own code.

The fixtures in ``tests/fixtures/fidelity`` were made by running the authors' released repositories
(named with their commit in each file's ``source``) on fixed inputs, in float64; only the numbers are
kept (see that folder's README). Here our distiller, built exactly as ``robust-kd distill`` builds it
for the pair at hand (``published_options``), must give the same loss and the same gradient with
respect to the student's logits. Random draws (CutMix) are the authors' own, injected.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robust_kd.distill import StepContext, create_distiller
from robust_kd.distill import functional as functional_module
from robust_kd.distill.energy import _thresholds
from robust_kd.distill.functional import CutMixDraw, energy
from robust_kd.distill.setup import published_options
from robust_kd.jpeg import JpegConfig, JpegLayer, tables_from_sensitivity

FIXTURES = Path(__file__).parent / "fixtures" / "fidelity"
ARCHITECTURE_NAMES = {"shufflenetv2": "shufflev2"}  # the authors' spelling -> ours
REL = 1e-6


def load(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def fixture_cases(name: str, methods: tuple[str, ...]) -> list:
    data = load(name)
    return [pytest.param(case, id=f"{case['method']}:{case['pair']}:{case.get('epoch', '')}")
            for case in data["cases"] if case["method"] in methods and "->" in case["pair"]]


def our_distiller(method: str, pair: str):
    teacher, student = (ARCHITECTURE_NAMES.get(a, a) for a in pair.split("->"))
    options, _ = published_options(method, teacher, student)
    return create_distiller(method, options)


def context(images=None, labels=None, epoch=None, student=None, teacher=None) -> StepContext:
    return StepContext(images=images if images is not None else torch.zeros(1), labels=labels,
                       progress=(epoch - 0.5) if epoch is not None else 100.0,  # mid-way through that epoch
                       student=student, teacher=teacher, generator=torch.Generator().manual_seed(0))


def tensor(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def total_and_grad(distiller, student, teacher, labels, ctx) -> tuple[float, torch.Tensor]:
    student = student.clone().requires_grad_(True)
    terms = distiller.loss(student, distiller.adjust_teacher(teacher, labels), labels, ctx)
    total = sum(terms.values())
    (grad,) = torch.autograd.grad(total, student)
    return float(total.detach()), grad


def assert_close(got: float, expected: float, rel: float = REL) -> None:
    assert got == pytest.approx(expected, rel=rel, abs=1e-9)


def assert_grad(got: torch.Tensor, expected, rel: float = REL) -> None:
    expected = tensor(expected)
    assert torch.allclose(got, expected, rtol=rel, atol=rel * float(expected.abs().max())), \
        float((got - expected).abs().max())


# ---------------------------------------------------------------- losses on logits


@pytest.mark.parametrize("case", fixture_cases("mdistiller_ls", ("kd", "dkd", "ls", "dkd_ls")) +
                         fixture_cases("ttm", ("ttm", "wttm")))
def test_logit_methods_equal_the_authors_code(case):
    """KD and DKD (mdistiller), KD+LS and DKD+LS (logit-standardization-KD), TTM and WTTM (zkxufo/TTM),
    each with our per-pair defaults, at the authors' epoch (DKD's warm-up)."""
    inputs = case["inputs"]
    student, teacher = tensor(inputs["student"]), tensor(inputs["teacher"])
    labels = torch.tensor(inputs["labels"])
    distiller = our_distiller(case["method"], case["pair"])
    total, grad = total_and_grad(distiller, student, teacher, labels, context(labels=labels, epoch=case.get("epoch")))
    assert_close(total, case["total"])
    assert_grad(grad, case["grad_student"])


@pytest.mark.parametrize("case", fixture_cases("energy", ("energy_kd",)))
def test_energy_kd_equals_the_authors_code(case):
    """Thresholds from a 'training set' of teacher logits, each sample's temperature, loss and gradient."""
    inputs = case["inputs"]
    distiller = our_distiller("energy_kd", case["pair"])
    o = distiller.options
    energies = energy(tensor(inputs["dataset_teacher_logits"]), o.energy_temperature).sort().values
    low, high = _thresholds(energies, o.low_rate, o.high_rate)
    assert (low, high) == pytest.approx((case["thresholds"]["low_standard"], case["thresholds"]["high_standard"]),
                                        rel=1e-12)
    distiller.load_state_dict({"thresholds": [low, high], "augment_thresholds": [low, high]})
    teacher = tensor(inputs["teacher"])
    assert distiller.sample_temperatures(teacher).tolist() == case["sample_temperature"]
    labels = torch.tensor(inputs["labels"])
    total, grad = total_and_grad(distiller, tensor(inputs["student"]), teacher, labels, context(labels=labels))
    assert_close(total, case["total"])
    assert_grad(grad, case["grad_student"])


@pytest.mark.parametrize("case", fixture_cases("cskd", ("cskd", "cswt")))
def test_cskd_terms_equal_the_third_party_code(case):
    """CSKD has no official code: our cs and CSWT terms against the only implementation (llieeai/lud).
    Its CE on two views, sample masks and extra Gram-matrix terms are not in the paper and not ours
    (docs/methods.md)."""
    inputs, parts = case["inputs"], case["components"]
    student, teacher = tensor(inputs["student"]), tensor(inputs["teacher"])
    labels = torch.tensor(inputs["labels"])
    distiller = our_distiller(case["method"], case["pair"])
    expected = {"cs": parts["cs_loss(T)"]}
    if case["method"] == "cswt":
        expected["cswt"] = parts["cs_loss_mat(T_mat)"]
    for name, reference in expected.items():
        s = student.clone().requires_grad_(True)
        term = distiller.loss(s, teacher, labels, context(labels=labels))[name]
        (grad,) = torch.autograd.grad(term, s)
        assert_close(float(term.detach()), reference["value"])
        assert_grad(grad, reference["grad_student"])


@pytest.mark.parametrize("case", [c for c in load("r2kd")["cases"] if c["pair"] == "logits_only"])
def test_r2kd_correlation_terms_equal_the_authors_code(case):
    inputs = case["inputs"]
    student, teacher = tensor(inputs["student"]), tensor(inputs["teacher"])
    distiller = create_distiller("r2kd", {"augment": "none"})
    value, rank = distiller.correlation_terms(student, teacher)
    assert_close(float(value), case["terms"]["loss_value"])
    assert_close(float(rank), case["terms"]["loss_rank"], rel=1e-6)  # their rank term is float32


# ---------------------------------------------------------------- methods that run the models again


def tiny_model(state: dict) -> nn.Module:
    """The fixtures' models: conv 3→4, ReLU, global average pool, linear 4→10, with the stored weights."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 10)).double()
    model.load_state_dict({k: tensor(v) for k, v in state.items()})
    return model.eval()


class Recorder:
    """Calls the student and keeps its logits on the mixed batch (a leaf of the gradient)."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.outputs = model, []

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(images)
        logits.retain_grad()
        self.outputs.append(logits)
        return logits


def inject_cutmix(monkeypatch, lam: float, perm: list[int], centre: tuple[int, int]) -> None:
    def draw(batch, height, width, generator, alpha=1.0):
        assert batch == len(perm)
        return CutMixDraw(lam, torch.tensor(perm), centre)

    monkeypatch.setattr(functional_module, "draw_cutmix", draw)


@pytest.mark.parametrize("case", fixture_cases("energy", ("heda",)))
def test_heda_equals_the_authors_code(case, monkeypatch):
    """Released KD w/ HE-DA: which samples are mixed (the first two images lead), the CutMix with the
    authors' draws, each term, and the gradients on the clean and the mixed logits."""
    inputs, draws = case["inputs"], case["draws"]
    student_model, teacher_model = tiny_model(inputs["student_state"]), tiny_model(inputs["teacher_state"])
    images, labels = tensor(inputs["images"]), torch.tensor(inputs["labels"])
    distiller = our_distiller("heda", case["pair"])
    o = distiller.options
    energies = energy(tensor(inputs["dataset_teacher_logits"]), o.energy_temperature).sort().values
    augment = _thresholds(energies, o.augment_low_rate, o.augment_high_rate)
    assert augment == pytest.approx((case["thresholds"]["low_standard"], case["thresholds"]["high_standard"]),
                                    rel=1e-12)
    distiller.load_state_dict({"thresholds": list(augment), "augment_thresholds": list(augment)})
    with torch.no_grad():
        teacher = teacher_model(images)
    assert distiller.augment_rows(teacher, images).tolist() == case["mixed_batch_source_indices"]
    inject_cutmix(monkeypatch, draws["lam_beta"], draws["perm"], (draws["centre"]["cx_dim2"],
                                                                   draws["centre"]["cy_dim3"]))
    student = student_model(images).detach().requires_grad_(True)
    recorder = Recorder(student_model)
    ctx = context(images=images, labels=labels, student=recorder, teacher=lambda x: teacher_model(x).detach())
    terms = distiller.loss(student, teacher, labels, ctx)
    expected = case["terms"]
    for ours, theirs in (("ce", "loss_ce"), ("kd", "loss_kd"), ("kd_aug", "loss_aug")):
        assert_close(float(terms[ours].detach()), expected[theirs])
    sum(terms.values()).backward()
    assert_grad(student.grad, case["grad_student"])
    assert_grad(recorder.outputs[0].grad, case["grad_student_aug_logits"])


@pytest.mark.parametrize("case", [c for c in load("r2kd")["cases"]
                                  if c["pair"] != "logits_only" and c["authors_config"]["augmentation"] == "cutmix"])
def test_r2kd_equals_the_authors_code(case, monkeypatch):
    """R2KD end to end: the pruned teacher copy, the mixed teacher logits, CutMix with the authors' draws,
    each term and the gradients on the clean and the mixed student logits."""
    inputs, draws = case["inputs"], case["draws"]
    student_model, teacher_model = tiny_model(inputs["student_state"]), tiny_model(inputs["teacher_state"])
    images, labels = tensor(inputs["images"]), torch.tensor(inputs["labels"])
    distiller = our_distiller("r2kd", case["pair"])
    distiller.attach(teacher_model)
    for name, value in case["pruned_teacher_state"].items():
        assert torch.equal(distiller.pruned.state_dict()[name], tensor(value)), name
    with torch.no_grad():
        teacher = distiller.teacher_forward(teacher_model, images)
    assert torch.allclose(teacher, tensor(case["intermediates"]["mixed_teacher_logits_clean"]), rtol=1e-12)
    inject_cutmix(monkeypatch, draws["lam_beta"], draws["perm"], (draws["cx_dim2"], draws["cy_dim3"]))
    student = student_model(images).detach().requires_grad_(True)
    recorder = Recorder(student_model)
    ctx = context(images=images, labels=labels, student=recorder,
                  teacher=lambda x: distiller.teacher_forward(teacher_model, x).detach())
    terms = distiller.loss(student, teacher, labels, ctx)
    assert_close(float(terms["ce"].detach()), case["terms"]["loss_ce"])
    assert_close(float(sum(v.detach() for k, v in terms.items() if k != "ce")), case["terms"]["loss_kd"])
    sum(terms.values()).backward()
    assert_grad(student.grad, case["grad_student"])
    assert_grad(recorder.outputs[0].grad, case["grad_student_aug_logits"])


def test_every_method_with_released_code_has_a_fixture():
    covered = set()
    for name in ("mdistiller_ls", "ttm", "energy", "r2kd", "cskd"):
        data = load(name)
        assert data["source"]["commit"] and data["source"]["repo"], name
        covered |= {case["method"] for case in data["cases"]}
    assert {"kd", "dkd", "ls", "dkd_ls", "ttm", "wttm", "energy_kd", "heda", "r2kd", "cskd", "cswt"} <= covered
    pairs = {(c["method"], c["pair"]) for name in ("mdistiller_ls", "ttm", "energy") for c in load(name)["cases"]}
    for method in ("kd", "dkd", "ls", "dkd_ls", "ttm", "wttm", "energy_kd", "heda"):
        assert len({pair for m, pair in pairs if m == method}) >= 3, method


# ---------------------------------------------------------------- JPEG-DL's layer


ZIGZAG = [[0, 1, 5, 6, 14, 15, 27, 28], [2, 4, 7, 13, 16, 26, 29, 42], [3, 8, 12, 17, 25, 30, 41, 43],
          [9, 11, 18, 24, 31, 40, 44, 53], [10, 19, 23, 32, 39, 45, 52, 54], [20, 22, 33, 38, 46, 51, 55, 60],
          [21, 34, 37, 47, 50, 56, 59, 61], [35, 36, 48, 49, 57, 58, 62, 63]]  # JPEG's zigzag order


def jpeg_arrays() -> dict:
    with np.load(FIXTURES / "jpegdl.npz", allow_pickle=False) as arrays:
        return {key: arrays[key] for key in arrays.files}


def shipped_sensitivity(arrays: dict, model: str) -> torch.Tensor:
    """The authors' shipped map of ``model`` (three 64-vectors in zigzag order) as a 3×8×8 tensor."""
    order = torch.tensor(ZIGZAG)
    return torch.stack([torch.tensor(arrays[f"senmap_{c}_{model}_zigzag"])[order] for c in ("Y", "Cb", "Cr")])


def test_sensitivity_tables_from_the_shipped_maps_equal_the_authors():
    data, arrays = load("jpegdl"), jpeg_arrays()
    for model, expected in data["tables_sensitivity_init_cifar100"].items():
        luma, chroma = tables_from_sensitivity(shipped_sensitivity(arrays, model), JpegConfig().q_max)
        assert torch.allclose(luma.float(), torch.tensor(expected["luma"]), rtol=1e-6), model
        assert torch.allclose(chroma.float(), torch.tensor(expected["chroma"]), rtol=1e-6), model


def authors_layer(tables: dict) -> JpegLayer:
    """Our layer with the training config's defaults (the authors' CIFAR layer) and the given tables."""
    layer = JpegLayer(3, **JpegConfig().layer_options())
    layer.set_tables(torch.tensor(tables["luma"]), torch.tensor(tables["chroma"]))
    return layer


def flat_levels() -> torch.Tensor:
    return torch.tensor([0.0, 0.25, 0.75, 1.0]).view(4, 1, 1, 1).expand(4, 3, 32, 32).double()


@pytest.mark.parametrize("name", ["sensitivity_MobileNetV2", "standard_q50", "dcprobe_flat_sensitivity_MobileNetV2"])
def test_jpeg_layer_in_the_authors_configuration_equals_their_layer(name):
    """Per pixel, to 1e-5 of the [0, 1] range: 8-bit indices (which clip MobileNetV2's small luma DC step:
    flat black and white come out as grey levels 99 and 157), tables in [1e-5, 255], chroma centred on 128.5."""
    case, arrays = load("jpegdl")["cases"][name], jpeg_arrays()
    images = flat_levels() if name.startswith("dcprobe") else torch.tensor(arrays["input_01"])
    with torch.no_grad():
        out = authors_layer(case["tables"])(images.float()).double()
    expected = torch.tensor(arrays[case["npz"]["output_0to255"]]) / 255.0
    assert float((out - expected).abs().max()) < 1e-5
    if name.startswith("dcprobe"):
        assert out[0].mean() * 255 == pytest.approx(99.0, abs=0.01) and out[3].mean() * 255 == pytest.approx(157.0,
                                                                                                              abs=0.01)


def test_our_unclipped_option_departs_from_the_authors_layer_where_8_bits_clip():
    """The negative control: 16 bits and no chroma offset (our option) do not clip the flat images."""
    case = load("jpegdl")["cases"]["dcprobe_flat_sensitivity_MobileNetV2"]
    layer = JpegLayer(3, bits=16, table_min=0.05, chroma_offset=0.0)
    layer.set_tables(torch.tensor(case["tables"]["luma"]), torch.tensor(case["tables"]["chroma"]))
    with torch.no_grad():
        out = layer(flat_levels().float())
    assert float(out[0].mean()) * 255 < 1.0 and float(out[3].mean()) * 255 > 254.0
