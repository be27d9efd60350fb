"""neuro.activations: forward hooks on named layers of any nn.Module."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from neuro import NeuroError
from neuro.activations import activations, list_layers, load_activations, save_activations


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.fc = nn.Linear(24, 5)
        self.boom = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.boom:
            raise RuntimeError("boom")
        return self.fc(self.features(x).flatten(1))


@pytest.fixture
def model() -> Small:
    torch.manual_seed(0)
    return Small()


def _hooks(m: nn.Module) -> int:
    return sum(len(mod._forward_hooks) for mod in m.modules())


def test_activations_equal_manual_forward_and_hooks_are_removed(model):
    x = torch.rand(7, 3, 8, 8)
    acts = activations(model, x, ["features.2", "features.5", "logits"], batch_size=3)
    with torch.no_grad():
        manual = model.features[:3](x)
        np.testing.assert_allclose(acts["features.2"], manual.flatten(1).numpy(), atol=1e-6)
        np.testing.assert_allclose(acts["features.5"], model.features(x).flatten(1).numpy(), atol=1e-6)
        np.testing.assert_allclose(acts["logits"], model(x).numpy(), atol=1e-6)
    assert list(acts) == ["features.2", "features.5", "logits"]
    assert _hooks(model) == 0


def test_hooks_removed_and_mode_restored_when_forward_fails(model):
    model.train()
    model.boom = True
    with pytest.raises(RuntimeError, match="boom"):
        activations(model, torch.rand(2, 3, 8, 8), ["features.0"])
    assert _hooks(model) == 0 and model.training


def test_batching_invariance_and_training_mode_restored(model):
    model.train()
    x = torch.rand(7, 3, 8, 8)
    one = activations(model, x, ["features.3"], batch_size=1)
    seven = activations(model, x, ["features.3"], batch_size=7)
    np.testing.assert_allclose(one["features.3"], seven["features.3"], atol=1e-5)
    assert model.training


def test_uint8_hwc_input_and_resizing(model):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(4, 8, 8, 3), dtype=np.uint8)
    as_tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    a = activations(model, images, ["logits"])["logits"]
    b = activations(model, as_tensor, ["logits"])["logits"]
    np.testing.assert_allclose(a, b, atol=1e-6)
    big = rng.integers(0, 256, size=(2, 20, 20, 3), dtype=np.uint8)
    resized = activations(model, big, ["features.0"], size=8)["features.0"]
    assert resized.shape == (2, 4 * 8 * 8)


def test_unknown_layer_names_a_close_match(model):
    with pytest.raises(NeuroError, match="features.2"):
        activations(model, torch.rand(1, 3, 8, 8), ["feature.2"])


def test_blocks_of_project_models():
    from robust_kd.models import create_model
    layers = list_layers(create_model("resnet8x4", 10), "blocks")
    assert "net.layer1.0" in layers and "net.layer3.0" in layers and layers[-1] == "logits"
    jpeg = list_layers(create_model("jpegdl_resnet8x4", 10), "blocks")
    assert jpeg[0] == "input_layer"
    small = list_layers(Small(), "blocks")
    assert small == ["features.2", "features.5", "logits"]     # flat stage: its pools; the classifier = logits


def test_save_load_round_trip(model, tmp_path):
    acts = activations(model, torch.rand(3, 3, 8, 8), "blocks")
    save_activations(acts, tmp_path / "acts", ["a", "b", "c"])
    back, names = load_activations(tmp_path / "acts")
    assert names == ["a", "b", "c"] and list(back) == list(acts)
    for k in acts:
        np.testing.assert_array_equal(back[k], acts[k])
    first = sorted((tmp_path / "acts").glob("*.npy"))[0]
    first.write_bytes(first.read_bytes()[:40])                      # a cut array file
    with pytest.raises(NeuroError, match="is damaged"):
        load_activations(tmp_path / "acts")
    (tmp_path / "acts" / "layers.json").write_text("{not json")
    with pytest.raises(NeuroError, match="is damaged"):
        load_activations(tmp_path / "acts")


def test_readme_python_example_runs_on_a_grey_model():
    """The README's neuro example: 92 RGB images into a 1-channel 28-px model, then the RSA table."""
    import neuro
    from robust_kd.models import create_model
    model = create_model("resnet8", 10, in_channels=1, image_size=28)
    hit = neuro.datasets.load_rsa92()
    acts = neuro.activations(model, hit.images, "blocks", size=28, channels=1)
    assert all(len(a) == 92 for a in acts.values())
    layers = neuro.RDMs.concat([neuro.compute_rdm(a, "correlation", conditions=hit.conditions, name=k)
                                for k, a in acts.items()])
    table = neuro.rsa(layers, {"hIT": hit.hit_subjects}, "spearman", n_bootstrap=20, n_permutations=20)
    assert len(table.rows) == layers.n_rdm and table.rows[0]["n_subjects"] == 8


def test_activations_refuse_unscaled_images_and_reused_modules_and_keep_each_modules_mode():
    import warnings

    import numpy as np
    import pytest
    import torch
    from torch import nn

    import neuro
    from neuro import NeuroError

    torch.manual_seed(0)
    relu = nn.ReLU()
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), relu, nn.Conv2d(4, 4, 3), relu, nn.Flatten())
    images = np.random.default_rng(0).uniform(size=(4, 3, 8, 8)).astype(np.float32)
    for bad, message in [(images * 255, "divide by 255"), (images.astype(np.int64), "uint8 .0-255. or floats"),
                         (images - 0.5, "must lie in")]:
        with pytest.raises(NeuroError, match=message):
            neuro.activations(net, bad, ["0"])
    # one ReLU at two places has no single activation: named, an error; from "all", left out with a warning
    with pytest.raises(NeuroError, match="runs more than once"):
        neuro.activations(net, images, ["2"])
    with pytest.warns(UserWarning, match="left out '2'"):
        acts = neuro.activations(net, images, "all", batch_size=2)
    assert "2" not in acts and "4" not in acts and acts["3"].shape == (4, 4 * 4 * 4)
    # channels-last tensors are taken like channels-last arrays
    last = neuro.activations(net, torch.from_numpy(images).permute(0, 2, 3, 1), ["3"])["3"]
    np.testing.assert_array_equal(last, neuro.activations(net, images, ["3"])["3"])
    net.train()
    net[1].eval()       # a frozen batch norm inside a training model stays frozen
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        neuro.activations(net, images, ["3"])
    assert net.training and net[0].training and not net[1].training
