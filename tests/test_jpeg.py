"""JPEG-DL: the layer against real JPEG (Pillow), the soft quantizer against its formula, training."""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import foolbox_images
from PIL import Image

from robust_kd.checkpoint import load_model, read_checkpoint
from robust_kd.cli import main
from robust_kd.data import Augment, BatchLoader, load_dataset
from robust_kd.errors import UserError
from robust_kd.jpeg import JpegLayer, abs_avg_tables, sensitivity_tables, set_jpeg_mode, standard_tables
from robust_kd.jpeg.config import JpegConfig
from robust_kd.jpeg.dct import block_dct, block_idct, dct_matrix, from_blocks, to_blocks
from robust_kd.jpeg.quantize import hard_quantize, index_range, soft_quantize
from robust_kd.jpeg.training import JpegTableTraining
from robust_kd.models import create_model, list_models
from robust_kd.train import prepare_training, resolve_train_config, train


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def pillow_jpeg(array: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode with Pillow (libjpeg), 4:4:4, at ``quality``."""
    image = Image.fromarray(array)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, subsampling=0)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert(image.mode))


def through_layer(array: np.ndarray, quality: int) -> np.ndarray:
    grey = array.ndim == 2
    x = torch.from_numpy(array.copy()).float() / 255
    x = x[None, None] if grey else x.permute(2, 0, 1)[None]
    layer = JpegLayer(1 if grey else 3, mode="hard", quality=quality)
    with torch.no_grad():
        out = layer(x)[0] * 255
    return out[0].numpy() if grey else out.permute(1, 2, 0).numpy()


def _real_images() -> list[np.ndarray]:
    cifar, _ = foolbox_images("cifar10")
    images = [cifar[i].transpose(1, 2, 0) for i in range(4)]
    folder = Path(next(iter(importlib.util.find_spec("foolbox").submodule_search_locations))) / "data"
    for path in sorted(folder.glob("imagenet_0[0-2]_*.jpg")):
        images.append(np.asarray(Image.open(path).convert("RGB"))[100:161, 50:127])  # 61×77: not multiples of 8
    return images


# ---------------------------------------------------------------- transform


def test_dct_is_orthonormal_and_the_transform_is_exactly_invertible():
    d = dct_matrix()
    assert torch.allclose(d @ d.T, torch.eye(8, dtype=d.dtype), atol=1e-12)
    x = torch.rand(2, 3, 19, 21, dtype=torch.float64) * 255
    blocks, size = to_blocks(x)
    assert torch.allclose(from_blocks(block_idct(block_dct(blocks.double())), size), x, atol=1e-9)
    for channels in (1, 3):
        image = torch.rand(2, channels, 27, 33)
        assert torch.allclose(JpegLayer(channels, mode="off")(image), image, atol=2e-5)


def test_tables_of_ones_reconstruct_the_image_up_to_coefficient_rounding():
    grey = torch.randint(0, 256, (4, 1, 32, 32)).float() / 255  # 8-bit levels, as a codec sees them
    layer = JpegLayer(1, mode="hard")
    layer.set_tables(torch.ones(8, 8))
    coefficients, size = layer.coefficients(grey)
    assert torch.allclose(layer.images(coefficients, size), grey, atol=2e-5)  # the transform pair is exact
    # unit steps leave only the rounding of coefficients: the DCT is orthonormal, so the pixel error
    # has the RMS of a uniform rounding error, 1/√12 ≈ 0.29 of a level (a very sharp soft quantizer)
    sharp = JpegLayer(1, mode="soft", alpha=1e4)
    sharp.set_tables(torch.ones(8, 8))
    rms = ((sharp(grey) - grey) * 255).square().mean().sqrt()
    assert 0.25 < rms < 0.33
    assert ((layer(grey) - grey) * 255).abs().max() <= 2  # hard mode then rounds back to 8-bit levels


def test_the_quality_tables_are_the_ones_pillow_writes():
    image = Image.fromarray(np.zeros((16, 16, 3), np.uint8))
    for quality in (25, 50, 75, 95):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality, subsampling=0)
        written = Image.open(io.BytesIO(buffer.getvalue())).quantization
        luma, chroma = standard_tables(quality)
        assert np.array_equal(np.array(written[0]).reshape(8, 8), luma.numpy())
        assert np.array_equal(np.array(written[1]).reshape(8, 8), chroma.numpy())


@pytest.mark.parametrize("quality", [25, 50, 75, 95])
def test_hard_mode_matches_a_real_jpeg_encode_and_decode(quality):
    for array in _real_images():
        assert psnr(through_layer(array, quality), pillow_jpeg(array, quality)) >= 40.0
    fashion = load_dataset("embedded").test_images[:4, 0].numpy()  # grey 28×28: the luma path only
    for array in fashion:
        assert psnr(through_layer(array, quality), pillow_jpeg(array, quality)) >= 40.0


def test_hard_mode_is_not_the_identity():
    array = _real_images()[0]
    assert psnr(through_layer(array, 25), array) < 35.0  # the comparison above is not vacuous


# ---------------------------------------------------------------- quantizers


def _direct_soft_quantizer(z, q, alpha, window, bits):
    """JPEG-DL's formula written out: softmax over the window of −α(i·q − z)², mean of i·q."""
    low, high = index_range(bits)
    first = (torch.round(z / q) - window // 2).clamp(low, high - window + 1).detach()
    points = (first.unsqueeze(-1) + torch.arange(window, dtype=z.dtype)) * q.unsqueeze(-1)
    weights = torch.softmax(-alpha * (points - z.unsqueeze(-1)) ** 2, dim=-1)
    return (weights * points).sum(-1)


@pytest.mark.parametrize("alpha", [0.05, 1.0, 5.0])
def test_soft_quantizer_values_and_gradients_equal_the_direct_formula(alpha):
    torch.manual_seed(0)
    z = (torch.randn(3, 2, 2, 2, 8, 8, dtype=torch.float64) * 60).requires_grad_()
    q = (torch.rand(8, 8, dtype=torch.float64) * 12 + 0.3).requires_grad_()
    ours = soft_quantize(z, q, alpha, 5, 8)
    reference = _direct_soft_quantizer(z, q, alpha, 5, 8)
    assert torch.allclose(ours, reference, atol=1e-9)
    for a, b in zip(torch.autograd.grad(ours.square().sum(), (z, q)),
                    torch.autograd.grad(reference.square().sum(), (z, q))):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-7)


def test_soft_tends_to_hard_rounding_as_alpha_grows():
    torch.manual_seed(1)
    z = torch.randn(4, 1, 1, 1, 8, 8) * 40
    q = torch.rand(8, 8) * 8 + 2
    hard = hard_quantize(z, q, 11)
    assert (soft_quantize(z, q, 1e4, 5, 11) - hard).abs().max() < 1e-3
    assert (soft_quantize(z, q, 1e-3, 5, 11) - hard).abs().max() > 0.1


def test_gradients_reach_both_tables_and_the_input():
    layer = JpegLayer(3)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    (layer(x) * torch.randn(2, 3, 32, 32)).sum().backward()
    for grad in (layer.luma_table.grad, layer.chroma_table.grad, x.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert set_jpeg_mode(layer, "hard") == 1
    y = torch.rand(1, 3, 8, 8, requires_grad=True)
    layer(y).sum().backward()
    assert torch.count_nonzero(y.grad) == 0  # rounding passes no gradient: attacks on it need BPDA


def test_grey_images_use_the_luma_path_only():
    grey, rgb = JpegLayer(1), JpegLayer(3)
    assert grey.chroma_table is None and sum(p.numel() for p in grey.parameters()) == 64
    assert sum(p.numel() for p in rgb.parameters()) == 128
    image = torch.rand(2, 1, 28, 28)
    # a grey picture in RGB has zero chroma, which the (symmetric) soft quantizer keeps at zero
    assert torch.allclose(rgb(image.repeat(1, 3, 1, 1)), grey(image).repeat(1, 3, 1, 1), atol=1e-4)
    with pytest.raises(UserError, match="expects B×1×H×W"):
        grey(torch.rand(1, 3, 8, 8))


def test_tables_stay_positive_and_bounded():
    layer = JpegLayer(3, table_min=0.5, table_max=100.0)
    with torch.no_grad():
        layer.luma_table.fill_(-3.0)
        layer.chroma_table.fill_(1e4)
    assert torch.isfinite(layer(torch.rand(1, 3, 16, 16))).all()  # the forward clamps too
    layer.project_parameters_()
    assert layer.luma_table.min() == 0.5 and layer.chroma_table.max() == 100.0


def test_the_smallest_steps_never_clip_a_coefficient():
    fine = JpegLayer(1, mode="hard")
    fine.set_tables(torch.zeros(8, 8))  # projected up to the lower bound
    assert fine.luma_table.max() == fine.table_min
    extremes = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1).expand(2, 1, 16, 16)  # DC = -1024 and +1016
    assert torch.allclose(fine(extremes), extremes, atol=1 / 255)
    narrow = JpegLayer(1, mode="hard", bits=8, table_min=1e-5)  # the paper's code's range clips them
    narrow.set_tables(torch.full((8, 8), 0.05))
    assert not torch.allclose(narrow(extremes), extremes, atol=0.1)


# ---------------------------------------------------------------- initialisation


def test_abs_avg_init_is_twice_the_mean_absolute_coefficient_over_sqrt_128():
    images = torch.rand(6, 3, 16, 16)
    layer = JpegLayer(3)
    luma, chroma = abs_avg_tables(layer, images)
    ycbcr = images.permute(0, 2, 3, 1).numpy().astype(np.float64) * 255 @ np.array(
        [[0.299, 0.587, 0.114], [-0.168735892, -0.331264108, 0.5], [0.5, -0.418687589, -0.081312411]]).T
    ycbcr[..., 1:] += 128.0
    d = dct_matrix().numpy()
    coefficients = np.zeros((3, 8, 8))
    count = 0
    for image in ycbcr:
        for r in range(0, 16, 8):
            for c in range(0, 16, 8):
                for ch in range(3):
                    coefficients[ch] += np.abs(d @ (image[r:r + 8, c:c + 8, ch] - 128) @ d.T)
                count += 1
    mean_abs = coefficients / count
    assert np.allclose(luma.numpy(), 2 * mean_abs[0] / np.sqrt(128), rtol=1e-4)
    assert np.allclose(chroma.numpy(), 2 * mean_abs[1:].mean(0) / np.sqrt(128), rtol=1e-4)


def test_sensitivity_init_scales_the_luma_maximum_to_q_max():
    torch.manual_seed(0)
    model = create_model("resnet8", 4)
    images, labels = torch.rand(8, 3, 16, 16), torch.randint(0, 4, (8,))
    luma, chroma = sensitivity_tables(JpegLayer(3), images, labels, model, q_max=10.0)
    assert luma.max() == pytest.approx(10.0) and (luma > 0).all() and (chroma > 0).all()
    assert not torch.allclose(luma, luma.mean().expand_as(luma))  # frequencies differ in sensitivity


# ---------------------------------------------------------------- models and training


def test_every_architecture_has_a_jpegdl_variant_that_runs():
    plain = [n for n in list_models() if not n.startswith("jpegdl_")]
    assert all(f"jpegdl_{n}" in list_models() for n in plain)
    for name in ("jpegdl_resnet8", "jpegdl_mobilenetv2"):
        model = create_model(name, 10, in_channels=1)
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
        assert isinstance(model.input_layer, JpegLayer) and model.input_layer.chroma_table is None


def test_jpegdl_training_moves_the_tables_with_adam_and_the_checkpoint_keeps_them(runs_dir):
    overrides = ["epochs=2", "batch_size=32", "data.options.size=16", "data.options.train=256",
                 "data.options.test=64", "jpeg.lr=0.05", "device=cpu"]
    config = resolve_train_config("quick", {"model": "jpegdl_resnet8", "data": {"name": "synthetic"}}, overrides)
    trainer = prepare_training(config, runs_dir=runs_dir, name="probe")
    assert isinstance(trainer.optimizers["jpeg"], torch.optim.Adam)
    assert isinstance(trainer.optimizers["network"], torch.optim.SGD)
    sgd_ids = {id(p) for group in trainer.optimizers["network"].param_groups for p in group["params"]}
    assert id(trainer.model.input_layer.luma_table) not in sgd_ids

    summary = train("jpegdl_resnet8", "synthetic", "quick", overrides=overrides, runs_dir=runs_dir)
    assert summary["jpeg_table_shift"] > 0.01
    payload = read_checkpoint(summary["checkpoint"])
    initial = torch.tensor(payload["trainer"]["jpeg_initial_tables"][0]["luma"])
    learned = torch.tensor(payload["metadata"]["jpeg_tables"]["luma"])
    assert not torch.allclose(initial, learned)
    assert torch.equal(payload["model"]["input_layer.luma_table"], learned)
    model = load_model(summary["checkpoint"])
    assert torch.equal(model.input_layer.luma_table.detach(), learned)
    assert model.input_layer.options()["alpha"] == 5.0


def test_the_jpeg_table_part_trains_the_tables_and_nothing_else():
    dataset = load_dataset("synthetic", size=16, train=32, test=8)
    context = SimpleNamespace(device=torch.device("cpu"), dataset=dataset, load_model=load_model,
                              train_batches=BatchLoader(dataset.train_images, dataset.train_labels, batch_size=8,
                                                        shuffle=True, augment=Augment(crop_padding=4)))
    plain = JpegTableTraining.of(create_model("resnet8", 4), JpegConfig())
    plain.prepare(context)
    plain.after_step()
    assert plain.parameters() == [] and plain.optimizers() == {} and plain.learning_rates(0.1, 0.1) == {}
    assert plain.epoch_metrics() == {} and plain.state_dict() == []

    model = create_model("jpegdl_resnet8", 4)
    part = JpegTableTraining.of(model, JpegConfig(lr=0.01, lr_schedule="follow", init="abs_avg"))
    assert part.parameters() == [model.input_layer.luma_table, model.input_layer.chroma_table]
    assert isinstance(part.optimizers()["jpeg"], torch.optim.Adam) and list(part.optimizers()) == ["jpeg"]
    assert part.learning_rates(0.05, 0.1) == {"jpeg": pytest.approx(0.005)}
    assert JpegTableTraining.of(model, JpegConfig(lr=0.01, lr_schedule="constant")).learning_rates(0.05, 0.1) == {
        "jpeg": 0.01}
    part.prepare(context)  # abs_avg tables from the training images
    assert not torch.equal(model.input_layer.luma_table.detach(), standard_tables(50)[0])
    assert [sorted(t) for t in part.state_dict()] == [["chroma", "luma"]]
    assert part.epoch_metrics() == {"jpeg_table_shift": 0.0, "jpeg_table_shift_max": 0.0}
    with torch.no_grad():
        model.input_layer.luma_table.mul_(1.5)
        model.input_layer.chroma_table[0, 0] = -1.0
    part.after_step()  # projected back into [table_min, table_max]
    assert float(model.input_layer.chroma_table.detach().min()) == pytest.approx(0.05)
    shift = part.epoch_metrics()
    assert shift["jpeg_table_shift"] > 0.25 and shift["jpeg_table_shift_max"] >= 0.5
    resumed = JpegTableTraining.of(model, JpegConfig())
    resumed.load_state_dict(json.loads(json.dumps(part.state_dict())))  # as a checkpoint keeps it
    assert resumed.epoch_metrics() == shift


def test_sensitivity_init_without_a_checkpoint_is_refused_before_the_run(runs_dir):
    with pytest.raises(UserError, match="jpegdl_resnet8 starts its JPEG tables from the sensitivity of a "
                                        "pretrained plain resnet8 .*'robust-kd train --model resnet8'"):
        resolve_train_config("quick", {"model": "jpegdl_resnet8"}, ["jpeg.init=sensitivity"])
    assert resolve_train_config("standard", {"model": "resnet8"}, []).jpeg.init == "sensitivity"  # plain: unused
    config = resolve_train_config("quick", {"model": "jpegdl_resnet8"},
                                  ["jpeg.init=sensitivity", "jpeg.init_checkpoint=missing.pt"])
    with pytest.raises(UserError, match="missing.pt' does not exist"):
        prepare_training(config, runs_dir=runs_dir)
    assert not runs_dir.exists()


def test_models_show_draws_learned_and_standard_tables(tmp_path, capsys):
    out = tmp_path / "tables.png"
    assert main(["models", "--show", "jpegdl_resnet8", "--runs-dir", str(tmp_path), "--out", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["jpeg"]["standard_q50"]["luma"][0][0] == 16 and len(info["jpeg"]["tables"]["chroma"]) == 8
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["models", "--show", "resnet8"]) == 0 and "jpeg" not in capsys.readouterr().out.lower()


@pytest.mark.parametrize("mode", ["soft", "hard", "off"])
def test_the_layer_computes_in_float32_under_a_training_steps_autocast(mode):
    """Training on a GPU runs the forward under bf16 autocast; the layer's colour transform and DCT
    must not follow (DC coefficients reach ±1024, where bf16 steps by 4-8; before the fix the
    outputs moved by up to 59/255). CPU autocast stands in for CUDA's."""
    layer = JpegLayer(3, mode=mode)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = layer(x)
    assert got.dtype == x.dtype and torch.allclose(got, expected, atol=1e-6)


def test_the_layer_trains_after_a_forward_under_inference_mode(monkeypatch):
    """A JPEG-DL teacher runs under inference_mode before a JPEG-DL student trains: the layer's
    constants converted then must still serve a backward pass."""
    from robust_kd.jpeg import constants

    monkeypatch.setattr(constants, "_converted", {})
    teacher, student = JpegLayer(3, mode="soft"), JpegLayer(3, mode="soft")
    x = torch.rand(2, 3, 16, 16)
    with torch.inference_mode():
        teacher(x)
    student(x).sum().backward()
    assert student.luma_table.grad is not None and torch.isfinite(student.luma_table.grad).all()


def test_tables_start_from_the_first_epochs_augmented_images_as_the_authors_loader():
    dataset = load_dataset("synthetic", size=16, train=32, test=8)
    batches = BatchLoader(dataset.train_images, dataset.train_labels, batch_size=8, shuffle=True,
                          augment=Augment(crop_padding=4))
    context = SimpleNamespace(device=torch.device("cpu"), dataset=dataset, load_model=load_model,
                              train_batches=batches)
    first_epoch = torch.cat([images for images, _ in batches.epoch(0)])[:20]
    part = JpegTableTraining.of(create_model("jpegdl_resnet8", 4), JpegConfig(init="abs_avg", init_images=20))
    images, labels = part._init_images(context)
    assert torch.equal(images, first_epoch) and labels.shape == (20,)
    stored = JpegTableTraining.of(create_model("jpegdl_resnet8", 4),
                                  JpegConfig(init="abs_avg", init_images=20, init_augmented=False))
    images, _ = stored._init_images(context)
    assert torch.equal(images, dataset.train_images[:20].float() / 255.0)
