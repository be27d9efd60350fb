"""bf16 attacks (attacks.precision): the passes run under autocast, every verdict stays float32."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import attacks
from attacks import precision as precision_module
from attacks.precision import Autocast, slow_here


class _NearTie(nn.Module):
    """Two logits that differ by about 1e-4 of their size: float32 tells them apart, bfloat16 (8 bits
    of mantissa) rounds both to the same number, and argmax then picks class 0. Every image is class
    1 in float32 and "misclassified" in bfloat16."""

    def __init__(self, pixels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(pixels, 2, bias=False)
        with torch.no_grad():
            self.linear.weight[0].fill_(1.0)
            self.linear.weight[1].fill_(1.0 + 1e-4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1) + 1.0)


class _Recorder(nn.Module):
    """Records, per call, whether autocast and gradients were on."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((torch.is_autocast_enabled(x.device.type), torch.is_grad_enabled()))
        return self.model(x)


def test_a_bf16_evaluation_decides_every_verdict_in_float32():
    model = _NearTie(16).eval()
    x, y = torch.rand(8, 1, 4, 4), torch.ones(8, dtype=torch.long)
    with torch.no_grad():
        assert bool((model(x).argmax(1) == 1).all())
        assert bool((Autocast(model, torch.bfloat16)(x).argmax(1) == 0).all())   # what the attacks see
    suite = {"name": "pgd-only", "attacks": [{"attack": "pgd", "steps": 3, "random_start": False}]}
    result = attacks.evaluate(model, x, y, suite, eps=1e-6, precision="bf16", sanity_checks=False, keep_examples=True,
                              fold_batchnorm=False)
    # the bf16 PGD stops at its first iterate, taking it for adversarial; float32 says it is not
    assert result.clean_accuracy == 1.0 and result.robust_accuracy == 1.0
    assert result.attacks[0].points_broken == 0 and result.precision == "bf16"
    # had the verdicts been bf16 too, nothing would have been robust, or even clean
    everything_bf16 = attacks.evaluate(Autocast(model, torch.bfloat16), x, y, suite, eps=1e-6, sanity_checks=False,
                                       fold_batchnorm=False)
    assert everything_bf16.clean_accuracy == 0.0


def test_bf16_attacks_run_under_autocast_and_the_convergence_check_does_not(tiny_classifier):
    model, x, y = tiny_classifier

    def fp32_and_bf16_gradient_passes(**options) -> tuple[int, int, attacks.EvaluationResult]:
        recorder = _Recorder(model)
        result = attacks.evaluate(recorder, x[:48], y[:48], "fast", eps=0.1, fold_batchnorm=False, **options)
        with_grad = [autocast for autocast, grad in recorder.calls if grad]
        return with_grad.count(False), with_grad.count(True), result

    fp32_passes, bf16_passes, _ = fp32_and_bf16_gradient_passes(precision="bf16", sanity_checks=False)
    assert fp32_passes == 0 and bf16_passes > 0                     # the suite's attacks: all in bf16
    fp32_unchecked, _, _ = fp32_and_bf16_gradient_passes(precision="bf16", convergence_check=False)
    fp32_checked, _, result = fp32_and_bf16_gradient_passes(precision="bf16")
    assert fp32_checked > fp32_unchecked                            # the convergence check adds fp32 passes
    assert result.convergence["precision"] == "fp32" and result.to_dict()["precision"] == "bf16"
    fp32_passes, bf16_passes, plain = fp32_and_bf16_gradient_passes()
    assert bf16_passes == 0 and fp32_passes > 0
    assert plain.precision == "fp32" and "precision" not in plain.convergence


def test_bf16_finds_about_what_fp32_finds(tiny_classifier):
    """The rounding may move a point near the boundary, not the robust accuracy as a whole."""
    model, x, y = tiny_classifier
    fp32 = attacks.evaluate(model, x[:160], y[:160], "fast", eps=0.05, sanity_checks=False)
    bf16 = attacks.evaluate(model, x[:160], y[:160], "fast", eps=0.05, sanity_checks=False, precision="bf16")
    assert bf16.clean_accuracy == fp32.clean_accuracy
    assert 0.1 < fp32.robust_accuracy < fp32.clean_accuracy
    assert abs(bf16.robust_accuracy - fp32.robust_accuracy) <= 0.05


def test_a_state_of_one_precision_is_not_resumed_in_another(tiny_classifier, tmp_path):
    model, x, y = tiny_classifier
    state = tmp_path / "state.json"
    attacks.evaluate(model, x[:16], y[:16], "fast", eps=0.05, sanity_checks=False, state_path=state)
    with pytest.raises(attacks.AttackError, match="different evaluation"):
        attacks.evaluate(model, x[:16], y[:16], "fast", eps=0.05, sanity_checks=False, state_path=state,
                         precision="bf16")
    with pytest.raises(attacks.AttackError, match="precision must be one of fp32, bf16"):
        attacks.evaluate(model, x[:16], y[:16], "fast", precision="fp16")


def test_bf16_is_called_slow_where_the_cpu_has_no_bf16_instructions(monkeypatch):
    monkeypatch.setattr(precision_module, "_cpu_flags", lambda: {"avx2", "fma"})
    assert "no bf16 instructions" in slow_here("bf16", torch.device("cpu"))
    assert slow_here("fp32", torch.device("cpu")) is None
    monkeypatch.setattr(precision_module, "_cpu_flags", lambda: {"avx512f", "amx_bf16"})
    assert slow_here("bf16", torch.device("cpu")) is None
    monkeypatch.setattr(precision_module, "_cpu_flags", lambda: set())     # unknown (not Linux): say nothing
    assert slow_here("bf16", torch.device("cpu")) is None


def test_a_bf16_evaluation_that_the_fp32_check_improves_on_says_to_use_fp32(tiny_classifier):
    model, x, y = tiny_classifier
    weak = {"name": "weak", "attacks": [{"attack": "pgd", "steps": 2, "alpha_fraction": 0.1, "random_start": False}]}
    result = attacks.evaluate(model, x[:64], y[:64], weak, eps=0.1, precision="bf16")
    flag = next(f for f in result.flags if f.code == "not_converged")
    assert result.convergence["broken"] > 0 and result.convergence["precision"] == "fp32"
    assert flag.message.endswith("evaluate in fp32 (--precision fp32) for numbers to report")
    assert "in fp32 with 10 steps" in attacks.convergence_words(result.convergence)


def test_transfer_surrogates_compute_in_the_evaluations_precision(tiny_classifier):
    """A bf16 evaluation makes its transfer examples on bf16 surrogates; a transfer matrix in bf16
    crafts on bf16 sources and judges on the targets in float32."""
    model, x, y = tiny_classifier

    def surrogate_passes(precision: str) -> list[bool]:
        surrogate = _Recorder(model)
        attacks.evaluate(model, x[:24], y[:24], "transfer", eps=0.05, surrogates={"twin": surrogate},
                         precision=precision, sanity_checks=False, fold_batchnorm=False)
        return [autocast for autocast, grad in surrogate.calls if grad]

    assert surrogate_passes("bf16") and all(surrogate_passes("bf16"))
    assert surrogate_passes("fp32") and not any(surrogate_passes("fp32"))

    source, target = _Recorder(model), _Recorder(model)
    matrix = attacks.transfer_matrix({"source": source}, {"target": target}, x[:24], y[:24], eps=0.05, precision="bf16")
    assert source.calls and all(autocast for autocast, _ in source.calls)
    assert target.calls and not any(autocast for autocast, _ in target.calls)
    assert matrix["precision"] == "bf16"
    fp32 = attacks.transfer_matrix({"source": model}, {"target": model}, x[:24], y[:24], eps=0.05)
    # the rounding may move a point near the boundary, not the success rate as a whole
    assert abs(matrix["cells"]["source"]["target"]["success_rate"]
               - fp32["cells"]["source"]["target"]["success_rate"]) <= 0.15
    with pytest.raises(attacks.AttackError, match="precision must be one of"):
        attacks.transfer_matrix({"source": model}, {"target": model}, x[:4], y[:4], eps=0.05, precision="fp16")
