"""Batch norm folded into convolutions for an evaluation (attacks.fold): same function, caller's model
untouched, only safe pairs folded, and the same verdicts as the unfolded model."""

from __future__ import annotations

import copy
import importlib
import json
import random
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

import attacks
from attacks.provenance import model_fingerprint
from attacks.fold import fold_for_evaluation, foldable_pairs, folded_copy, same_function
from robust_kd.models.registry import create_model


def _with_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Batch norms with running statistics and affine parameters far from the identity."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.3)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.2)
    return model.eval()


def _batch_norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_folded_copy_is_the_same_function_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = _with_statistics(create_model("resnet8", 10))
    before = model_fingerprint(model)
    folded = folded_copy(model)
    assert _batch_norms(model) == 9 and _batch_norms(folded) == 0
    assert model_fingerprint(model) == before
    x = torch.rand(6, 3, 32, 32, requires_grad=True)
    expected, got = model(x), folded(x)
    assert torch.allclose(expected, got, atol=1e-5, rtol=1e-5)
    (grad_expected,) = torch.autograd.grad(expected.logsumexp(1).sum(), x)
    (grad_got,) = torch.autograd.grad(got.logsumexp(1).sum(), x)
    assert torch.allclose(grad_expected, grad_got, atol=1e-6, rtol=1e-4)
    assert same_function(model, folded, x.detach())


class _SharedOutput(nn.Module):
    """The convolution's output is read twice: folding the norm into it would change the sum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.norm(y) + y


class _ReadsTheNorm(nn.Module):
    """The forward reads the norm's weight itself: the norm must stay."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.norm(self.conv(x)) * self.norm.weight.mean()


class _NormAfterPooling(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.pool, self.norm = nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.norm(self.pool(self.conv(x)))


class _CallsAGrandchild(nn.Module):
    """Control flow on the data stops torch.fx, and one branch calls the block's convolution alone:
    folding the block's pair would change that branch, which a probe may never take."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))

    def forward(self, x):
        if float(x.amax()) > 0.9:
            return self.block(x).flatten(1)
        return self.block[0](x).flatten(1)


class _Rounding(nn.Module):
    """No convolution inside, and code that does not trace (as a JPEG layer's): an opaque leaf."""

    def forward(self, x):
        return x if float(x.amax()) > 2 else torch.round(x * 255) / 255


class _Recording(nn.Module):
    """Keeps its features on self (as distillation code does) and draws from every global generator."""

    def __init__(self) -> None:
        super().__init__()
        self.pre, self.conv, self.norm = _Rounding(), nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
        self.features = []

    def forward(self, x):
        self.features.append(type(x).__name__)
        jitter = torch.randint(0, 2, (1,)).item() + random.random() * 0 + np.random.rand() * 0
        return self.norm(self.conv(self.pre(x) + 0 * jitter)).flatten(1)


def test_only_a_norm_that_alone_reads_a_convolution_is_folded():
    assert foldable_pairs(_with_statistics(_SharedOutput())) == []
    assert foldable_pairs(_with_statistics(_NormAfterPooling())) == []
    assert foldable_pairs(_with_statistics(_ReadsTheNorm())) == []
    assert foldable_pairs(_with_statistics(_CallsAGrandchild())) == []   # the whole model must trace
    parametrized = _with_statistics(nn.Sequential(weight_norm(nn.Conv2d(3, 4, 3)), nn.BatchNorm2d(4)))
    assert foldable_pairs(parametrized) == [] and folded_copy(parametrized) is parametrized
    assert foldable_pairs(_with_statistics(_Recording())) == [("conv", "norm")]   # the leaf need not trace


def test_a_module_in_training_mode_or_with_hooks_is_left_alone():
    training = _with_statistics(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1),
                                              nn.BatchNorm2d(4), nn.Flatten()))
    training[3].train()   # the probe would update this norm's statistics on the caller's module
    assert folded_copy(training) is training
    training[3].eval()
    training[4].train()   # no buffers: nothing for the probe to change
    assert _batch_norms(folded_copy(training)) == 0
    seen = []
    watched = _with_statistics(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1),
                                             nn.BatchNorm2d(4)))
    handle = watched[2].register_forward_hook(lambda module, inputs, output: seen.append(type(output).__name__))
    assert folded_copy(watched) is watched and seen == []   # tracing would have called the hook with a Proxy
    handle.remove()
    assert _batch_norms(folded_copy(watched)) == 0


class _Noisy(nn.Module):
    """Random on every call (as an EOT view): no copy can be checked to be the same function."""

    def __init__(self) -> None:
        super().__init__()
        self.body = _with_statistics(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten()))

    def forward(self, x):
        return self.body(x + 0.1 * torch.rand_like(x))


class _Uncopyable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = _with_statistics(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))

    def forward(self, x):
        return self.block(x).flatten(1)

    def __deepcopy__(self, memo):
        raise TypeError("cannot copy this module")


def test_fold_for_evaluation_keeps_what_it_cannot_check_and_the_random_state():
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    model, noisy, recording = _with_statistics(create_model("resnet8", 10)), _Noisy(), _with_statistics(_Recording())
    probe = torch.rand(4, 3, 32, 32)
    states = torch.random.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    folded_model, same_again, kept_noisy, nothing, folded_recording = fold_for_evaluation(
        [model, model, noisy, None, recording], probe)
    assert torch.equal(torch.random.get_rng_state(), states[0]) and random.getstate() == states[1]
    assert np.array_equal(np.random.get_state()[1], states[2])
    assert folded_model is not model and same_again is folded_model and _batch_norms(folded_model) == 0
    assert kept_noisy is noisy and nothing is None
    assert folded_recording is not recording and _batch_norms(folded_recording) == 0
    assert recording.features == ["Tensor"]     # the probe's call only: tracing ran on the copy
    uncopyable = _Uncopyable()
    assert foldable_pairs(uncopyable) and folded_copy(uncopyable) is uncopyable


def _batch_norm_twin(model: nn.Module) -> nn.Module:
    """The trained convolutions of ``model`` each split into a convolution and a batch norm with
    non-trivial statistics: the same function written with batch norms, as most zoo models are."""
    twin = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(1)
    layers = list(twin.features)
    rebuilt = []
    for layer in layers:
        rebuilt.append(layer)
        if isinstance(layer, nn.Conv2d):
            n = layer.out_channels
            norm = nn.BatchNorm2d(n).eval()
            mean, var = torch.randn(n, generator=generator) * 0.3, torch.rand(n, generator=generator) + 0.5
            gamma, beta = torch.rand(n, generator=generator) + 0.5, torch.randn(n, generator=generator) * 0.2
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(var)
            norm.weight.data.copy_(gamma)
            norm.bias.data.copy_(beta)
            # conv'(x) = (conv(x) - beta) / scale + mean, so that norm(conv'(x)) = conv(x)
            scale = gamma / torch.sqrt(var + norm.eps)
            layer.weight.data /= scale.view(-1, 1, 1, 1)
            layer.bias.data = (layer.bias.data - beta) / scale + mean
            rebuilt.append(norm)
    twin.features = nn.Sequential(*rebuilt)
    return twin.eval()


def test_evaluation_with_folded_norms_gives_the_same_verdicts_and_resumes_across_the_setting(tiny_classifier, tmp_path,
                                                                                            monkeypatch):
    model, x, y = tiny_classifier
    twin = _batch_norm_twin(model)
    x, y = x[:80], y[:80]
    with torch.no_grad():
        assert torch.allclose(twin(x), model(x), atol=1e-4)
    before = model_fingerprint(twin)
    folded = attacks.evaluate(twin, x, y, "fast", eps=0.06, state_path=tmp_path / "folded.json")
    plain = attacks.evaluate(twin, x, y, "fast", eps=0.06, fold_batchnorm=False)
    assert folded.points["robust"] == plain.points["robust"]
    assert folded.points["broken_by"] == plain.points["broken_by"]
    assert 0 < sum(plain.points["robust"]) < sum(plain.points["clean_correct"])
    assert model_fingerprint(twin) == before and _batch_norms(twin) == 2 and not twin.training
    # the state names the caller's weights, so the unfolded setting resumes the folded run's state
    resumed = attacks.evaluate(twin, x, y, "fast", eps=0.06, state_path=tmp_path / "folded.json", fold_batchnorm=False)
    assert resumed.points == folded.points
    assert json.loads((tmp_path / "folded.json").read_text())["key"]["model"] == before
    # a transfer surrogate is folded too; examples made on the folded copy break the same points
    prepare_module = importlib.import_module("attacks.prepare")
    folded_modules = []

    def recording(modules, probe):
        folded_modules.extend(fold_for_evaluation(modules, probe))
        return folded_modules[-len(modules):]

    monkeypatch.setattr(prepare_module, "fold_for_evaluation", recording)
    transferred = [attacks.evaluate(model, x, y, "transfer", eps=0.06, surrogates={"twin": twin}, sanity_checks=False,
                                    fold_batchnorm=fold).points for fold in (True, False)]
    assert transferred[0] == transferred[1]
    assert "transfer [twin]" in transferred[0]["broken_by"]
    assert [_batch_norms(m) for m in folded_modules if isinstance(m, nn.Module)] == [0, 0]   # model, surrogate
    assert model_fingerprint(twin) == before and _batch_norms(twin) == 2


def test_every_module_of_a_jpegdl_evaluation_is_folded():
    """The JPEG layer does not trace, and the BPDA wrappers build their input layer in training mode:
    neither may stop the network behind them from being folded."""
    from robust_kd.jpeg.variants import hard_model_bpda, soft_model_bpda, twin_without_jpeg

    torch.manual_seed(0)
    model = _with_statistics(create_model("jpegdl_resnet8", 10))
    modules = [model, soft_model_bpda(model), hard_model_bpda(model, "identity"), hard_model_bpda(model, "soft"),
               twin_without_jpeg(model)]
    folded = fold_for_evaluation(modules, torch.rand(8, 3, 32, 32))
    assert [_batch_norms(m) for m in folded] == [0] * len(modules)
    assert all(_batch_norms(m) == 9 for m in modules)
    # the wrappers share the model's network, and their copies share one folded network: one copy in memory
    assert all(m.net is model.net for m in modules)
    assert all(f.net is folded[0].net for f in folded) and folded[0].net is not model.net
    probe = torch.rand(8, 3, 32, 32)
    with torch.no_grad():
        assert all(torch.allclose(m(probe), f(probe), atol=1e-5) for m, f in zip(modules, folded))


def test_vgg_traces_and_folds():
    """VGG's fourth pool decides from its own input's size, so the forward has no branch for fx."""
    model = _with_statistics(create_model("vgg8", 10))
    (folded,) = fold_for_evaluation([model], torch.rand(4, 3, 32, 32))
    assert _batch_norms(model) == 5 and _batch_norms(folded) == 0


class _Holder(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x).flatten(1)


class _CallsTheConvolutionToo(_Holder):
    """Calls the shared network's convolution alone too, and has a pair of its own."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__(net)
        self.head = _with_statistics(nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)))

    def forward(self, x):
        return self.head(self.net(x) + self.net[0](x)).flatten(1)


def test_a_shared_network_folded_for_one_module_is_kept_only_where_it_is_sound():
    net = _with_statistics(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    holder, other_holder, direct = _Holder(net), _Holder(net), _CallsTheConvolutionToo(net)
    memo = {}
    first = folded_copy(holder, memo)
    assert first is not holder and _batch_norms(first) == 0
    second = folded_copy(other_holder, memo)
    assert second is not other_holder and second.net is first.net      # one folded copy of the shared network
    assert folded_copy(direct, memo) is direct    # its own graph would not fold the pair: not the shared copy


def test_the_probe_compares_at_full_float32_precision(monkeypatch):
    """cuDNN's default TF32 convolutions move a model's and its folded copy's logits apart by about
    2e-4 of their scale, above the tolerance: the probe runs at full precision and then puts the
    caller's setting back."""
    import attacks.precision as precision

    flags = precision._precision_flags()
    if not flags:   # a torch with only the legacy switches (their own test below): the mechanism on stand-ins
        flags = [SimpleNamespace(fp32_precision="none"), SimpleNamespace(fp32_precision="none")]
        monkeypatch.setattr(precision, "_precision_flags", lambda: flags)
    seen = []

    class Records(nn.Module):
        def forward(self, x):
            seen.append([flag.fp32_precision for flag in flags])
            return x.flatten(1)

    before = [flag.fp32_precision for flag in flags]
    flags[0].fp32_precision = "tf32"
    try:
        assert same_function(Records(), Records(), torch.rand(2, 3, 4, 4))
        assert seen == [["ieee"] * len(flags)] * 2
        assert flags[0].fp32_precision == "tf32"
    finally:
        for flag, value in zip(flags, before):
            flag.fp32_precision = value


def test_the_probe_falls_back_to_the_legacy_tf32_switches(monkeypatch):
    """A torch without the fp32_precision settings: the probe turns allow_tf32 off, and back."""
    import attacks.precision as precision

    monkeypatch.setattr(precision, "_precision_flags", lambda: [])
    seen = []

    class Records(nn.Module):
        def forward(self, x):
            seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
            return x.flatten(1)

    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = True
    try:
        assert same_function(Records(), Records(), torch.rand(2, 3, 4, 4))
        assert seen == [(False, False)] * 2 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
