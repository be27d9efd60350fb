"""Shared test helpers: real CIFAR images from the foolbox package, writers for data formats, and the
event-driven waits (with a hang cap) of the tests that interrupt and resume processes."""

from __future__ import annotations

import importlib.util
import pickle
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import pytest
from PIL import Image


def foolbox_images(prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """The 20 real test images of ``prefix`` ('cifar10', 'cifar100') shipped in foolbox's package data.

    foolbox is a test dependency used only for these files; it is never imported.
    """
    spec = importlib.util.find_spec("foolbox")
    assert spec is not None and spec.submodule_search_locations, "foolbox (a test dependency) is not installed"
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    files = sorted(folder.glob(f"{prefix}_*.png"), key=lambda p: int(p.stem.split("_")[1]))
    assert len(files) == 20, f"expected 20 {prefix} images in {folder}"
    images = np.stack([np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1) for f in files])
    labels = np.array([int(f.stem.split("_")[-1]) for f in files])
    return images.astype(np.uint8), labels


def _dump(path: Path, obj: dict) -> None:
    # protocol 2 with bytes keys, as in the original Python-2 CIFAR files
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(folder: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                  class_names: list[str] | None = None) -> Path:
    """Write CIFAR-10 "python version" files (5 train batches, test_batch, batches.meta)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = class_names or ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    chunks = np.array_split(np.arange(len(train[0])), 5)
    for i, idx in enumerate(chunks, start=1):
        _dump(folder / f"data_batch_{i}", {
            b"batch_label": f"training batch {i} of 5".encode(),
            b"labels": train[1][idx].tolist(),
            b"data": train[0][idx].reshape(len(idx), -1),
            b"filenames": [f"img{j}.png".encode() for j in idx],
        })
    _dump(folder / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": test[1].tolist(),
                                  b"data": test[0].reshape(len(test[0]), -1), b"filenames": []})
    _dump(folder / "batches.meta", {b"label_names": [n.encode() for n in names], b"num_cases_per_batch": 10000,
                                    b"num_vis": 3072})
    return folder


def write_cifar100(folder: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> Path:
    """Write CIFAR-100 "python version" files (train, test, meta)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in (("train", train), ("test", test)):
        _dump(folder / split, {b"filenames": [], b"batch_label": split.encode(), b"fine_labels": labels.tolist(),
                               b"coarse_labels": (labels // 5).tolist(), b"data": images.reshape(len(images), -1)})
    _dump(folder / "meta", {b"fine_label_names": [f"class{c}".encode() for c in range(100)],
                            b"coarse_label_names": [f"super{c}".encode() for c in range(20)]})
    return folder


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


class TinyCNN(torch.nn.Module):
    """A small Fashion-MNIST classifier for attack tests: fast, and trained enough to be attacked."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        )
        self.head = torch.nn.Linear(32 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features((x - 0.3) / 0.35).flatten(1))


@pytest.fixture(scope="session")
def tiny_classifier() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """(TinyCNN trained for 2 epochs on the embedded Fashion-MNIST train split, test images in [0, 1],
    test labels). Deterministic: fixed seed, single-threaded order of batches."""
    from robust_kd.data import load_dataset

    data = load_dataset("embedded")
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = TinyCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    images, labels = data.train_images.float() / 255, data.train_labels
    for _ in range(2):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order), 128):
            rows = order[start:start + 128]
            loss = torch.nn.functional.cross_entropy(model(images[rows]), labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model, data.test_images.float() / 255, data.test_labels.long()


HANG_SECONDS = 15 * 60
"""The whole-test cap of a test that starts, signals and resumes processes. Each such test takes well under
a minute on an idle 2-core machine; only a real hang comes near this, however slow or busy the machine."""

POLL_SECONDS = 0.02
"""How often a wait looks for the event it waits on (a file the code writes, a process exiting)."""


class HangCap:
    """One test's guard against a real hang: its waits and subprocess timeouts all draw on the same
    :data:`HANG_SECONDS`, counted from the test's start. Nothing in a test waits for a time of its own:
    an interruption is sent when the code has written what the test needs (:meth:`wait_for`)."""

    def __init__(self, seconds: float = HANG_SECONDS) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left of the cap: the timeout of a subprocess step, not a guess at how long it takes."""
        left = self.end - time.monotonic()
        assert left > 0, f"the test ran past its {self.seconds:.0f}-second cap: a hang"
        return left

    def wait_for(self, ready: Callable[[], bool], process: subprocess.Popen, what: str,
                 log: Path | None = None) -> None:
        """Return once ``ready()`` holds. Fail if ``process`` exits first (quoting the end of ``log``, where its
        output goes), or at the cap."""
        while not ready():
            if process.poll() is not None:
                output = log.read_text(errors="replace")[-3000:] if log is not None and log.is_file() else ""
                raise AssertionError(f"the process exited with code {process.returncode} before {what}\n{output}")
            assert time.monotonic() < self.end, f"no sign of {what} within the {self.seconds:.0f}-second cap: a hang"
            time.sleep(POLL_SECONDS)


@pytest.fixture
def hang_cap() -> HangCap:
    return HangCap()


def epochs_written(metrics: Path) -> int:
    """Finished epochs in a run's metrics.jsonl (the trainer writes it, atomically, after the epoch's checkpoint)."""
    return metrics.read_text().count("\n") if metrics.is_file() else 0


def metrics_history(run: Path) -> list[tuple]:
    """(epoch, test accuracy, rounded CE loss) per epoch of a run: what must survive a kill and resume."""
    import json

    return [(r["epoch"], r["test_accuracy"], round(r["train_loss"]["ce"], 5))
            for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


@pytest.fixture
def autoattack_starts(monkeypatch):
    """Our APGD/APGD-T, drawing their starts as AutoAttack does (torch's global RNG, seeded at each
    perturb call), so that the trajectories can be compared point for point."""
    from attacks import apgd as _apgd_module

    def torch_start(x, index, eps, norm, seed, stream):
        if norm == "Linf":
            t = 2 * torch.rand(x.shape) - 1
            return (x + eps * t / t.flatten(1).abs().amax(dim=1).view(-1, 1, 1, 1)).clamp(0, 1)
        t = torch.randn(x.shape)
        return (x + eps * t / (t.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-12)).clamp(0, 1)

    monkeypatch.setattr(_apgd_module, "boundary_start", torch_start)
    for cls in (_apgd_module.APGD, _apgd_module.APGDT):
        original = cls.perturb

        def seeded(self, model, x, y, index, _original=original):
            torch.manual_seed(self.seed)
            return _original(self, model, x, y, index)

        monkeypatch.setattr(cls, "perturb", seeded)


def correct_points(classifier, n: int):
    """(model, images, labels) of the first ``n`` test points the classifier gets right."""
    model, x, y = classifier
    with torch.no_grad():
        correct = model(x[:n]).argmax(1) == y[:n]
    return model, x[:n][correct], y[:n][correct]


def still_robust(model, x_adv, y):
    """Which examples the model still classifies correctly."""
    with torch.no_grad():
        return model(x_adv).argmax(1) == y
