"""Data sets: every loader on real or format-exact files, bad folders, and the batch loader."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from robust_kd.data import Augment, BatchLoader, dataset_entry, list_datasets, load_dataset
from robust_kd.data.cifar import CIFAR10
from robust_kd.data.idx import DEBIAN_FASHION_MNIST, SPLIT_FILES, embedded_root, read_idx, write_idx
from robust_kd.data.loader import crop_and_flip
from robust_kd.errors import UserError

from conftest import foolbox_images, write_cifar10, write_cifar100


# ---------------------------------------------------------------- registry


def test_registry_lists_every_data_set():
    names = {e.name for e in list_datasets()}
    assert {"embedded", "fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder", "synthetic"} <= names
    assert dataset_entry("fashion-mnist").default_root == DEBIAN_FASHION_MNIST


def test_unknown_data_set_suggests_the_closest_name():
    with pytest.raises(UserError, match=r"unknown data set 'cifar-10'.*did you mean 'cifar10'"):
        load_dataset("cifar-10")


def test_unknown_option_is_refused():
    with pytest.raises(UserError, match="has no option colour"):
        load_dataset("synthetic", colour=3)


def test_a_folder_for_a_data_set_that_reads_none_is_refused_not_ignored():
    from robust_kd.data.registry import stored_root

    for name in ("embedded", "synthetic", "cifar10-samples"):
        assert not dataset_entry(name).reads_folder
        with pytest.raises(UserError, match=rf"data set '{name}' comes with the installed packages and reads no "
                                            r"folder; drop --data-root '/some/where'"):
            load_dataset(name, "/some/where")
        assert stored_root(name, "/some/where") is None      # a run's stored config: dropped, not an error
    assert dataset_entry("cifar10").reads_folder and stored_root("cifar10", "/some/where") == "/some/where"


# ---------------------------------------------------------------- embedded and idx


def test_embedded_subset_is_stratified_fashion_mnist():
    data = load_dataset("embedded")
    assert data.train_images.shape == (8000, 1, 28, 28) and data.test_images.shape == (2000, 1, 28, 28)
    assert data.train_images.dtype == torch.uint8
    assert data.train_labels.bincount().tolist() == [800] * 10
    assert data.test_labels.bincount().tolist() == [200] * 10
    assert data.class_names[0] == "T-shirt/top" and data.num_classes == 10
    # real images, not blank: Fashion-MNIST's mean pixel is about 0.286
    assert abs(data.train_images.float().mean().item() / 255 - 0.286) < 0.02
    assert (embedded_root() / "LICENSE").is_file() and "Zalando" in (embedded_root() / "README.md").read_text()


@pytest.mark.skipif(not Path(DEBIAN_FASHION_MNIST).is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_embedded_subset_matches_the_debian_files_at_the_recorded_indices():
    full = load_dataset("fashion-mnist")
    mini = load_dataset("embedded")
    assert full.train_images.shape[0] == 60000 and full.test_images.shape[0] == 10000
    for split in ("train", "test"):
        index = torch.from_numpy(np.loadtxt(embedded_root() / f"{split}-source-indices.txt", dtype=np.int64))
        assert torch.equal(getattr(full, f"{split}_images")[index], getattr(mini, f"{split}_images"))
        assert torch.equal(getattr(full, f"{split}_labels")[index], getattr(mini, f"{split}_labels"))


def _write_idx_folder(folder: Path, data, gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for split, (images_stem, labels_stem) in SPLIT_FILES.items():
        write_idx(folder / f"{images_stem}{suffix}", getattr(data, f"{split}_images")[:, 0].numpy())
        write_idx(folder / f"{labels_stem}{suffix}", getattr(data, f"{split}_labels").numpy().astype(np.uint8))
    return folder


def test_idx_round_trip_gzip_and_raw(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    for name in ("a.idx", "a.idx.gz"):
        write_idx(tmp_path / name, array)
        assert np.array_equal(read_idx(tmp_path / name), array)
    assert (tmp_path / "a.idx").read_bytes()[:4] == bytes([0, 0, 8, 3])


def test_fashion_mnist_and_mnist_load_from_a_folder_and_from_torchvision_layout(tmp_path):
    mini = load_dataset("embedded")
    plain = _write_idx_folder(tmp_path / "fm", mini)
    loaded = load_dataset("fashion-mnist", plain)
    assert torch.equal(loaded.train_images, mini.train_images) and torch.equal(loaded.test_labels, mini.test_labels)
    assert loaded.hflip is True
    _write_idx_folder(tmp_path / "tv" / "MNIST" / "raw", mini, gz=False)
    digits = load_dataset("mnist", tmp_path / "tv")
    assert digits.class_names == tuple("0123456789") and digits.hflip is False
    assert torch.equal(digits.test_images, mini.test_images)


def test_mnist_without_a_folder_says_what_to_pass():
    with pytest.raises(UserError, match="needs a folder: pass --data-root"):
        load_dataset("mnist")


def test_missing_or_malformed_idx_folders_name_the_expected_file(tmp_path):
    with pytest.raises(UserError, match="does not exist.*apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", tmp_path / "nowhere")
    folder = _write_idx_folder(tmp_path / "fm", load_dataset("embedded"))
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match=r"missing '.*t10k-labels-idx1-ubyte.gz'"):
        load_dataset("fashion-mnist", folder)
    raw = gzip.decompress((folder / "train-images-idx3-ubyte.gz").read_bytes())
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_dataset("fashion-mnist", folder)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="cannot read idx file"):
        load_dataset("fashion-mnist", folder)


# ---------------------------------------------------------------- CIFAR


def test_cifar10_loader_reads_real_cifar_images_in_the_python_format(tmp_path):
    images, labels = foolbox_images("cifar10")
    assert labels.tolist()[:10] == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]  # CIFAR-10 test-set order
    folder = write_cifar10(tmp_path / "cifar-10-batches-py", (images[:15], labels[:15]), (images[15:], labels[15:]))
    for root in (folder, tmp_path):  # the batches folder itself, or torchvision's parent folder
        data = load_dataset("cifar10", root)
        assert data.train_images.shape == (15, 3, 32, 32) and data.test_images.shape == (5, 3, 32, 32)
        assert np.array_equal(data.train_images.numpy(), images[:15])
        assert np.array_equal(data.test_images.numpy(), images[15:])
        assert data.train_labels.tolist() == labels[:15].tolist()
        assert data.class_names[3] == "cat" and data.num_classes == 10


def test_cifar100_loader_reads_fine_labels(tmp_path):
    images, labels = foolbox_images("cifar100")
    write_cifar100(tmp_path / "cifar-100-python", (images[:12], labels[:12]), (images[12:], labels[12:]))
    data = load_dataset("cifar100", tmp_path)
    assert data.num_classes == 100 and data.train_labels.tolist() == labels[:12].tolist()
    assert np.array_equal(data.test_images.numpy(), images[12:])


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_cifar_loader_refuses_pickles_that_would_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    images, labels = foolbox_images("cifar10")
    folder = write_cifar10(tmp_path / "c", (images[:10], labels[:10]), (images[10:], labels[10:]))
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": _Exploit()}, f, protocol=2)
    with pytest.raises(UserError, match="not a CIFAR python batch.*refusing to load"):
        load_dataset("cifar10", folder)
    assert not (tmp_path / "pwned").exists()


def test_cifar_missing_and_corrupt_files(tmp_path):
    with pytest.raises(UserError, match=r"missing '.*cifar-10-batches-py/test_batch'.*cifar-10-python.tar.gz"):
        load_dataset("cifar10", tmp_path)
    images, labels = foolbox_images("cifar10")
    folder = write_cifar10(tmp_path / "c", (images[:10], labels[:10]), (images[10:], labels[10:]))
    (folder / "data_batch_3").write_bytes((folder / "data_batch_3").read_bytes()[:200])
    with pytest.raises(UserError, match="data_batch_3"):
        load_dataset("cifar10", folder)


def test_cifar_download_fails_fast_with_one_clear_line_offline(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    # a closed local port: the same failure as a machine without network, without touching the network
    monkeypatch.setattr(tvd.CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    monkeypatch.setattr(tvd.CIFAR10, "mirrors", ["http://127.0.0.1:9/"], raising=False)
    with pytest.raises(UserError) as err:
        load_dataset("cifar10", tmp_path / "dl", download=True)
    message = str(err.value)
    assert "download failed" in message and "extract it into" in message and "\n" not in message
    assert CIFAR10.archive in message


# ---------------------------------------------------------------- image folders and synthetic


def _write_png_classes(root: Path, classes: dict[str, int], size=(40, 30), mode="RGB") -> None:
    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / name / f"{i}.png")


def test_imagefolder_split_resize_and_channels(tmp_path):
    _write_png_classes(tmp_path / "flat", {"cats": 10, "dogs": 5})
    data = load_dataset("imagefolder", tmp_path / "flat", size=16)
    assert data.class_names == ("cats", "dogs") and data.image_shape == (3, 16, 16)
    assert data.train_images.shape[0] + data.test_images.shape[0] == 15
    assert set(data.test_labels.tolist()) == {0, 1}  # stratified
    _write_png_classes(tmp_path / "split" / "train", {"a": 4, "b": 4}, mode="L")
    _write_png_classes(tmp_path / "split" / "test", {"a": 2, "b": 1}, mode="L")
    data = load_dataset("imagefolder", tmp_path / "split", size=12)
    assert data.channels == 1 and data.test_labels.tolist() == [0, 0, 1] and data.train_images.shape[0] == 8


def test_imagefolder_bad_inputs(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_dataset("imagefolder", tmp_path / "none")
    _write_png_classes(tmp_path / "one", {"only": 3})
    with pytest.raises(UserError, match="at least 2"):
        load_dataset("imagefolder", tmp_path / "one")
    _write_png_classes(tmp_path / "bad", {"a": 3, "b": 3})
    (tmp_path / "bad" / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(UserError, match="broken.png"):
        load_dataset("imagefolder", tmp_path / "bad")


def test_synthetic_is_deterministic_and_checks_its_options():
    a, b = load_dataset("synthetic", seed=3), load_dataset("synthetic", seed=3)
    assert (torch.equal(a.train_images, b.train_images)
            and not torch.equal(a.train_images, load_dataset("synthetic", seed=4).train_images))
    assert load_dataset("synthetic", channels=1, size=28).image_shape == (1, 28, 28)
    with pytest.raises(UserError, match="size"):
        load_dataset("synthetic", size=4)
    with pytest.raises(UserError, match="channels must be 1 or 3"):
        load_dataset("synthetic", channels=2)


# ---------------------------------------------------------------- batch loader


def _reference_crop_flip(image: torch.Tensor, dy: int, dx: int, flip: bool, pad: int) -> torch.Tensor:
    padded = F.pad(image, (pad, pad, pad, pad))
    out = padded[:, dy : dy + image.shape[1], dx : dx + image.shape[2]]
    return out.flip(2) if flip else out


def test_crop_and_flip_equals_a_per_image_reference():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 10, 12), generator=g, dtype=torch.uint8)
    offsets = torch.randint(0, 9, (6, 2), generator=g)
    flips = torch.tensor([True, False, True, True, False, False])
    out = crop_and_flip(images, offsets, flips, 4)
    for i in range(6):
        expected = _reference_crop_flip(images[i], int(offsets[i, 0]), int(offsets[i, 1]), bool(flips[i]), 4)
        assert torch.equal(out[i], expected)


def test_batch_loader_covers_every_sample_once_and_is_seeded():
    data = load_dataset("synthetic", train=100, test=10)
    loader = BatchLoader(data.train_images, data.train_labels, batch_size=32, shuffle=True,
                         augment=Augment(4, True), seed=7)
    assert len(loader) == 4
    batches = list(loader.epoch(0))
    assert [b[0].shape[0] for b in batches] == [32, 32, 32, 4]
    x = torch.cat([b[0] for b in batches])
    assert x.dtype == torch.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == sorted(data.train_labels.tolist())
    again = torch.cat([b[0] for b in loader.epoch(0)])
    other_epoch = torch.cat([b[0] for b in loader.epoch(1)])
    assert torch.equal(x, again) and not torch.equal(x, other_epoch)
    same_seed = BatchLoader(data.train_images, data.train_labels, batch_size=32, shuffle=True, augment=Augment(4, True),
                            seed=7)
    assert torch.equal(torch.cat([b[0] for b in same_seed.epoch(1)]), other_epoch)


def test_batch_loader_without_augmentation_gives_the_exact_pixels():
    data = load_dataset("synthetic", train=20, test=10)
    loader = BatchLoader(data.test_images, data.test_labels, batch_size=4)
    x = torch.cat([b[0] for b in loader])
    assert torch.equal(x, data.test_images.float() / 255)
    dropping = BatchLoader(data.train_images, data.train_labels, batch_size=8, drop_last=True)
    assert len(dropping) == 2 and sum(b[0].shape[0] for b in dropping) == 16


def test_image_dataset_rejects_wrong_shapes():
    from robust_kd.data import ImageDataset

    good = torch.zeros(4, 3, 16, 16, dtype=torch.uint8)
    labels = torch.zeros(4, dtype=torch.long)
    with pytest.raises(UserError, match="2 channels"):
        ImageDataset("x", torch.zeros(4, 2, 16, 16, dtype=torch.uint8), labels, good, labels, ("a", "b"), (0.5,) * 2,
                     (0.2,) * 2)
    with pytest.raises(UserError, match="uint8"):
        ImageDataset("x", good.float(), labels, good, labels, ("a", "b"), (0.5,) * 3, (0.2,) * 3)
    with pytest.raises(UserError, match="labels must lie"):
        ImageDataset("x", good, labels + 5, good, labels, ("a", "b"), (0.5,) * 3, (0.2,) * 3)


def test_a_damaged_gzipped_idx_file_is_one_clear_error(tmp_path):
    """Flipped bytes inside the deflate stream raise zlib.error, cut files EOFError: both one line."""
    import random

    from robust_kd.data.idx import read_idx, write_idx
    from robust_kd.errors import UserError

    good = tmp_path / "good-idx1-ubyte.gz"
    write_idx(good, np.arange(200, dtype=np.uint8))
    data = good.read_bytes()
    rng = random.Random(1)
    damaged = tmp_path / "bad-idx1-ubyte.gz"
    for trial in range(100):
        broken = bytearray(data)
        for _ in range(rng.randint(1, 5)):
            broken[rng.randrange(10, len(broken))] = rng.randrange(256)
        damaged.write_bytes(bytes(broken) if trial % 2 else data[: rng.randrange(1, len(data))])
        try:
            read_idx(damaged)                       # a flip that leaves the stream valid may still read
        except UserError:
            pass
    assert read_idx(good).tolist() == list(range(200))
