"""Tests of the model zoo: shapes on every data-set geometry, published sizes, MAC counting,
normalization inside the model, the registry and its error messages."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robust_kd.errors import UserError
from robust_kd.models import (
    Normalize,
    NormalizedClassifier,
    create_model,
    list_models,
    model_complexity,
    model_family,
    register_model,
)
from robust_kd.models import registry

EXPECTED_NAMES = [
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4",
    "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2",
    "vgg8", "vgg11", "vgg13", "vgg16", "vgg19",
    "mobilenetv2", "shufflev1", "shufflev2",
    "resnet18", "resnet34", "resnet50",
]  # fmt: skip

# Millions of parameters for 100 classes, from the CRD paper / RepDistiller (resnet18: 11.17M
# for 10 classes plus 90 more 512-wide output rows).
PUBLISHED_PARAMS_M = {
    "resnet8x4": 1.23,
    "resnet32x4": 7.43,
    "resnet20": 0.28,
    "resnet56": 0.86,
    "resnet110": 1.74,
    "wrn_40_2": 2.26,
    "wrn_16_2": 0.70,
    "wrn_40_1": 0.57,
    "vgg13": 9.46,
    "vgg8": 3.96,
    "mobilenetv2": 0.81,
    "shufflev1": 0.95,
    "shufflev2": 1.36,
    "resnet50": 23.71,
    "resnet18": 11.22,
}


def first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Batches of two gain nothing from intra-op threads, and on a shared two-core machine the
    worker threads wait on each other: one thread keeps this file fast under load."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry that tests may add names to without leaking them."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


# --- every architecture on every data-set geometry -------------------------------------------


@pytest.mark.parametrize("name", list_models())
def test_forward_on_rgb32_and_backward_on_gray28(name):
    torch.manual_seed(0)
    rgb = create_model(name, 10).eval()
    with torch.no_grad():
        logits = rgb(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()

    gray = create_model(name, 7, in_channels=1, image_size=28).train()
    logits = gray(torch.rand(2, 1, 28, 28))
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([0, 6])).backward()
    stem = first_conv(gray.net)
    assert stem.in_channels == 1
    assert stem.weight.grad is not None
    assert torch.isfinite(stem.weight.grad).all()
    assert stem.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list_models())
def test_smallest_image_size_works(name):
    model = create_model(name, 3, image_size=registry.MIN_IMAGE_SIZE).eval()
    side = registry.MIN_IMAGE_SIZE
    with torch.no_grad():
        logits = model(torch.rand(1, 3, side, side))
    assert logits.shape == (1, 3) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "vgg8", "mobilenetv2", "shufflev2"])
def test_larger_images_work(name):
    model = create_model(name, 5, image_size=64).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 5)


@pytest.mark.parametrize(("side", "expected_block4_side"), [(32, 4), (64, 4), (28, 3), (56, 7), (63, 7), (72, 4)])
def test_vgg_last_group_map_size_follows_crd_code(side, expected_block4_side):
    """The CRD code skips the fourth max-pool below 64 px, so block4 sees 4x4 maps at 32 and 64."""
    model = create_model("vgg8", 10, in_channels=1 if side == 28 else 3).eval()
    seen = []
    handle = model.net.block4.register_forward_hook(lambda m, i, o: seen.append(o.shape[-1]))
    with torch.no_grad():
        model(torch.rand(1, model.in_channels, side, side))
    handle.remove()
    assert seen == [expected_block4_side]


# --- published sizes ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "published_m"), sorted(PUBLISHED_PARAMS_M.items()))
def test_parameter_count_matches_published(name, published_m):
    parameters = sum(p.numel() for p in create_model(name, 100).parameters())
    assert abs(parameters / 1e6 - published_m) / published_m < 0.01, parameters


# --- complexity --------------------------------------------------------------------------------


def test_model_complexity_counts_conv_grouped_conv_and_linear_by_hand():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),  # out 4x8x8, each output 3*3*3 MACs
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2),  # out 8x4x4, each (4/2)*3*3 MACs
        nn.Flatten(),
        nn.Linear(128, 5),  # 5 outputs, 128 MACs each
    )
    model.train()
    parameters, macs = model_complexity(model, (3, 8, 8))
    assert macs == 4 * 8 * 8 * 27 + 8 * 4 * 4 * 18 + 5 * 128
    assert parameters == (4 * 27 + 4) + (8 * 18 + 8) + (128 * 5 + 5)
    assert model.training, "training mode must be restored"
    assert all(not m._forward_hooks for m in model.modules()), "hooks must be removed"


def test_model_complexity_restores_mixed_training_flags():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 3), nn.BatchNorm1d(3))
    model.train()
    model[2].eval()
    _, macs = model_complexity(model, (1, 1, 3))
    assert macs == 9
    assert model.training and model[1].training and not model[2].training


def test_resnet8x4_macs_in_published_range():
    parameters, macs = model_complexity(create_model("resnet8x4", 100), (3, 32, 32))
    assert 170e6 < macs < 185e6  # about 177M in the KD literature
    assert abs(parameters - 1.23e6) < 0.02e6


def test_model_complexity_follows_input_size():
    model = create_model("resnet8", 10, in_channels=1)
    _, macs28 = model_complexity(model, (1, 28, 28))
    _, macs32 = model_complexity(model, (1, 32, 32))
    assert macs28 < macs32


# --- normalization -----------------------------------------------------------------------------


def test_normalization_is_the_first_submodule_and_matches_manual_normalization():
    torch.manual_seed(0)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.4, 0.3)
    model = create_model("resnet8", 10, mean=mean, std=std).eval()
    assert isinstance(model, NormalizedClassifier)
    first_name, first_module = next(iter(model.named_children()))
    assert first_name == "normalize" and isinstance(first_module, Normalize)
    assert [name for name, _ in model.named_children()] == ["normalize", "net"]

    x = torch.rand(2, 3, 32, 32)
    manual = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), model.net(manual), atol=1e-6)
        assert not torch.allclose(model(x), model.net(x), atol=1e-3)


def test_normalization_buffers_are_saved_and_move_with_the_model():
    model = create_model("resnet8", 10, mean=[0.2, 0.3, 0.4], std=[0.1, 0.2, 0.3])
    state = model.state_dict()
    assert torch.allclose(state["normalize.mean"].flatten(), torch.tensor([0.2, 0.3, 0.4]))
    assert torch.allclose(state["normalize.std"].flatten(), torch.tensor([0.1, 0.2, 0.3]))
    assert state["normalize.mean"].shape == (1, 3, 1, 1)
    model.to(torch.float64)
    assert model.normalize.mean.dtype == torch.float64
    model.to("meta")
    assert model.normalize.std.device.type == "meta"


def test_default_normalization_and_metadata():
    model = create_model("wrn_16_1", 10, in_channels=1, image_size=28)
    assert model.normalize.mean.flatten().tolist() == [0.5]
    assert model.normalize.std.flatten().tolist() == [0.25]
    assert (model.arch, model.num_classes, model.in_channels, model.image_size) == (
        "wrn_16_1",
        10,
        1,
        28,
    )


# --- registry and errors -----------------------------------------------------------------------


def test_list_models_contains_every_architecture_in_natural_order():
    names = list_models()
    assert set(EXPECTED_NAMES) <= set(names)
    assert names.index("resnet8") < names.index("resnet14") < names.index("resnet110")


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("resnet56", "resnet_cifar"),
        ("resnet32x4", "resnet_cifar"),
        ("wrn_40_2", "wrn"),
        ("vgg13", "vgg"),
        ("mobilenetv2", "mobilenet"),
        ("shufflev1", "shufflenet"),
        ("shufflev2", "shufflenet"),
        ("resnet50", "resnet_imagenet_style"),
    ],
)
def test_model_family(name, family):
    assert model_family(name) == family


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [("resnet9", "resnet8"), ("resnet32x5", "resnet32x4"), ("ResNet8x4", "resnet8x4"),
     ("wrn_40-2", "wrn_40_2"), ("ShuffleV1", "shufflev1"), ("shufflenetv2", "shufflev2"),
     ("vgg13_bn", "vgg13")],
)  # fmt: skip
def test_unknown_name_suggests_the_closest(typo, suggestion):
    with pytest.raises(UserError) as caught:
        create_model(typo, 10)
    message = str(caught.value)
    assert f"unknown model '{typo}'" in message
    assert f"did you mean '{suggestion}'?" in message
    assert "resnet14" in message and "robust-kd models" in message
    assert "\n" not in message


def test_unknown_name_without_close_match_lists_choices():
    with pytest.raises(UserError, match="unknown model 'xyzzy'; choose one of: ") as caught:
        model_family("xyzzy")
    assert "did you mean" not in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"num_classes": 1}, "num_classes"),
        ({"num_classes": 2.5}, "num_classes"),
        ({"num_classes": True}, "num_classes"),
        ({"in_channels": 2}, "in_channels"),
        ({"in_channels": 4}, "in_channels"),
        ({"mean": [0.5, 0.5]}, "mean has 2 values"),
        ({"std": [0.2]}, "std has 1 values"),
        ({"in_channels": 1, "mean": [0.1, 0.2, 0.3]}, "mean has 3 values"),
        ({"std": [0.2, 0.0, 0.2]}, "std values must all be positive"),
        ({"mean": 0.5}, "mean must be a list of numbers"),
        ({"mean": [0.5, float("nan"), 0.5]}, "mean values must be finite"),
        ({"image_size": 4}, "image_size"),
    ],
)
def test_bad_arguments_raise_user_error(kwargs, fragment):
    arguments = {"num_classes": 10, **kwargs}
    num_classes = arguments.pop("num_classes")
    with pytest.raises(UserError, match=fragment):
        create_model("resnet8", num_classes, **arguments)


def test_register_model_as_decorator_and_direct_call(scratch_registry):
    @register_model("jpegdl_tiny", family="jpegdl")
    def tiny(num_classes, in_channels):
        return nn.Sequential(
            nn.Conv2d(in_channels, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4, num_classes),
        )  # fmt: skip

    register_model("jpegdl_tiny2", family="jpegdl", builder=tiny)
    assert {"jpegdl_tiny", "jpegdl_tiny2"} <= set(list_models())
    assert model_family("jpegdl_tiny2") == "jpegdl"
    model = create_model("jpegdl_tiny", 3, in_channels=1)
    assert model.arch == "jpegdl_tiny"
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 3)


def test_registering_a_name_twice_fails(scratch_registry):
    with pytest.raises(ValueError, match="already registered"):
        register_model("resnet8", family="resnet_cifar", builder=lambda n, c: nn.Identity())
