"""The command line: each verb works, and every bad input is one line on stderr with exit code 2."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from robust_kd.cli import main
from robust_kd.models import list_models

TINY = ["--data", "synthetic", "--device", "cpu", "epochs=1", "batch_size=32", "data.options.size=16",
        "data.options.train=64", "data.options.test=32"]


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_models_lists_every_architecture_with_sizes(capsys):
    code, out, _ = run(capsys, "models", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["name"] for r in rows] == list_models()
    by_name = {r["name"]: r for r in rows}
    assert by_name["resnet8x4"]["parameters"] == pytest.approx(1.23e6, rel=0.01)
    assert by_name["resnet8x4"]["macs_32x32"] == pytest.approx(177e6, rel=0.02)
    code, out, _ = run(capsys, "models")
    assert code == 0 and "resnet32x4" in out and "MACs" in out


def test_data_lists_and_shows_data_sets(capsys):
    code, out, _ = run(capsys, "data", "--json")
    assert code == 0 and {"embedded", "cifar10", "imagefolder"} <= {r["name"] for r in json.loads(out)}
    code, out, _ = run(capsys, "data", "--show", "embedded", "--json")
    info = json.loads(out)
    assert code == 0 and info["train_size"] == 8000 and info["train_per_class"] == [800] * 10
    code, out, _ = run(capsys, "data", "--show", "embedded")
    assert code == 0 and "8000 train / 2000 test" in out


def test_train_prints_the_final_accuracy_and_json(capsys, runs_dir):
    code, out, err = run(capsys, "train", "--model", "resnet8", "--runs-dir", str(runs_dir), *TINY)
    assert code == 0 and "test accuracy" in out and "run folder:" in out and "epoch 1/1" in err
    code, out, _ = run(capsys, "train", "--model", "resnet8", "--runs-dir", str(runs_dir), "--json", *TINY)
    summary = json.loads(out)
    assert code == 0 and summary["epochs"] == 1 and summary["model"] == "resnet8"


@pytest.mark.parametrize("args, message", [
    (["train", "--model", "resnet9"], "unknown model 'resnet9'"),
    (["train", "--data", "cifar11"], "unknown data set 'cifar11'"),
    (["train", "--data", "mnist", "--data-root", "nonexistent/mnist"],
     "data folder 'nonexistent/mnist' does not exist"),
    (["train", "--data", "cifar10"], "needs a folder: pass --data-root"),
    (["train", "--data", "synthetic", "data.options.size=4"], r"option size must be an integer from 8 to 256"),
    (["train", "optimizer.lrr=0.1"], "unknown config key 'optimizer.lrr'"),
    (["train", "epochs=three"], "config key 'epochs' expects an integer, got 'three'"),
    (["train", "--recipe", "slow"], "unknown recipe 'slow'"),
    (["train", "--seed", "x"], "not a valid integer"),
    (["train", "--colour", "red"], r"No such option.*--colour"),
    (["frobnicate"], r"No such command.*frobnicate"),
])
def test_bad_input_is_one_line_exit_2_and_no_run_folder(capsys, runs_dir, args, message):
    code, out, err = run(capsys, *args, "--runs-dir", str(runs_dir)) if args[0] == "train" else run(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("robust-kd: error:") and re.search(message, lines[0]), err
    assert "Traceback" not in err
    assert not runs_dir.exists()


def test_the_installed_command_and_module_entry_points(tmp_path):
    exe = shutil.which("robust-kd", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert exe is not None, "the robust-kd console script is not installed next to this Python"
    result = subprocess.run([exe, "train", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "Example: robust-kd train" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "robust_kd.cli", "train", "--model", "nope",
                          "--runs-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
