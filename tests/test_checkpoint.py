"""Checkpoints: metadata round trip, safe loading, clear errors, atomic writes."""

from __future__ import annotations

import os
import random
import warnings

import pytest
import torch

from robust_kd import fileio
from robust_kd.checkpoint import load_model, read_checkpoint, save_checkpoint
from robust_kd.errors import UserError
from robust_kd.models import create_model


def _model():
    torch.manual_seed(0)
    return create_model("resnet8", 5, in_channels=1, image_size=28, mean=[0.3], std=[0.4])


def test_load_model_rebuilds_the_model_from_the_file_alone(tmp_path):
    model = _model().eval()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, {"dataset": {"name": "synthetic"}, "epoch": 3})
    loaded = load_model(path)
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(loaded(x), model(x)) and not loaded.training
    meta = loaded.checkpoint_metadata
    assert meta["arch"] == "resnet8" and meta["num_classes"] == 5 and meta["in_channels"] == 1
    assert meta["normalization"] == {"mean": [pytest.approx(0.3)], "std": [pytest.approx(0.4)]}
    assert meta["epoch"] == 3 and meta["versions"]["torch"] == torch.__version__
    # plain torch can read it with weights_only=True: no pickled code inside
    assert torch.load(path, weights_only=True)["format"] == "robust-kd-checkpoint"


def test_missing_corrupt_truncated_and_foreign_files_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_checkpoint(tmp_path / "none.pt")
    # random bytes make the weights-only unpickler raise many kinds of error (KeyError, IndexError,
    # struct.error, UnicodeDecodeError...): every one must become the same one-line error
    rng = random.Random(0)
    junk = tmp_path / "junk.pt"
    for trial in range(200):
        head = b"\x80\x02" if trial % 2 else b""  # half of them look like a pickle stream
        junk.write_bytes(head + rng.randbytes(rng.choice([16, 256, 2048])))
        with warnings.catch_warnings(record=True) as printed:
            warnings.simplefilter("always")
            with pytest.raises(UserError, match="not a readable checkpoint"):
                read_checkpoint(junk)
        assert not printed, printed[0].message        # one line for the user: no torch warning before it
    good = tmp_path / "good.pt"
    save_checkpoint(good, _model(), {})
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UserError, match="not a readable checkpoint"):
        read_checkpoint(cut)
    foreign = tmp_path / "foreign.pt"
    torch.save(_model().state_dict(), foreign)
    with pytest.raises(UserError, match="not a robust-kd checkpoint"):
        read_checkpoint(foreign)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_checkpoint_carrying_code_is_refused_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pt"
    torch.save({"format": "robust-kd-checkpoint", "metadata": _Exploit()}, evil)
    with pytest.raises(UserError, match=r"holds pickled Python objects \(\w+\.system\), which robust-kd does not load"):
        load_model(evil)
    assert not (tmp_path / "pwned").exists()
    whole = tmp_path / "whole_model.pt"          # torch.save(model): a common mistake, named as such
    torch.save(_model(), whole)
    with pytest.raises(UserError,
                       match=r"pickled Python objects \(robust_kd\.models\.normalize\.NormalizedClassifier\)"):
        read_checkpoint(whole)


def test_an_unreadable_checkpoint_says_what_the_file_is_not_torch_advice(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, _model(), {})
    cases = {"notes.pt": b"garbage\n", "empty.pt": b"", "cut.pt": good.read_bytes()[:4096],
             "binary.pt": bytes(range(250, 256)) * 50, "old.pt": b"\x80\x02" + b"\xff" * 64}
    expected = {"notes.pt": "(a text file, not a PyTorch file)", "empty.pt": "(the file is empty)",
                "cut.pt": "(a PyTorch archive that is damaged: cut short", "binary.pt": "(not a PyTorch file)",
                "old.pt": "(an old-style PyTorch file that is damaged or cut short)"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError) as raised:
            read_checkpoint(tmp_path / name)
        message = str(raised.value)
        assert f"is not a readable checkpoint {expected[name]}" in message and "\n" not in message, message
        assert "weights_only" not in message and "arbitrary code" not in message


def test_weights_that_do_not_fit_the_architecture(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, _model(), {})
    payload = torch.load(path, weights_only=True)
    payload["metadata"]["arch"] = "resnet14"
    torch.save(payload, path)
    with pytest.raises(UserError, match="weights do not fit resnet14"):
        load_model(path)


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _model(), {"epoch": 1})
    before = path.read_bytes()

    def crash(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(fileio.torch, "save", crash)
    with pytest.raises(OSError):
        save_checkpoint(path, _model(), {"epoch": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind
