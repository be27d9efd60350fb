"""The trainer: it learns, writes its run folder, resumes exactly, and fails cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import epochs_written, metrics_history

from robust_kd.checkpoint import load_model, read_checkpoint
from robust_kd.data import BatchLoader, load_dataset
from robust_kd.errors import UserError
from robust_kd.models import create_model
from robust_kd.train import Reporter, TrainingDiverged, evaluate, resolve_train_config, train
from robust_kd.train.objective import Objective
from robust_kd.train.run import RunFolder
from robust_kd.train.state import TrainState
from robust_kd.train.trainer import Trainer

SMALL = ["data.options.size=16", "data.options.classes=4", "data.options.train=256", "data.options.test=64",
         "batch_size=32", "eval_batch_size=64", "device=cpu"]


class _Recorder(Reporter):
    def __init__(self) -> None:
        self.starts: list[int] = []
        self.epochs: list[int] = []

    def start(self, title, epochs, first_epoch):
        self.starts.append(first_epoch)

    def end_epoch(self, record, epochs):
        self.epochs.append(record["epoch"])


def test_training_learns_and_writes_a_complete_run_folder(runs_dir, capsys):
    reporter = _Recorder()
    summary = train("resnet8", "synthetic", "quick", overrides=SMALL + ["epochs=3"], runs_dir=runs_dir,
                    reporter=reporter)
    assert summary["final_test_accuracy"] > 0.6  # 4 classes: chance is 0.25
    assert reporter.epochs == [1, 2, 3]
    run = Path(summary["run"])
    assert run.parent == runs_dir and run.name == "resnet8_synthetic_quick_seed0"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert set(records[0]["train_loss"]) == {"ce"} and 0 <= records[-1]["test_accuracy"] <= 1
    assert (run / "config.yaml").is_file() and json.loads((run / "summary.json").read_text()) == summary
    assert summary["best_test_accuracy"] == max(r["test_accuracy"] for r in records)

    # the best checkpoint reproduces its recorded accuracy from the file alone
    best = load_model(run / "checkpoints" / "best.pt")
    data = load_dataset("synthetic", size=16, classes=4, train=256, test=64)
    accuracy = evaluate(best, BatchLoader(data.test_images, data.test_labels, batch_size=64))["accuracy"]
    assert accuracy == pytest.approx(summary["best_test_accuracy"])
    meta = read_checkpoint(run / "checkpoints" / "last.pt")["metadata"]
    assert meta["epoch"] == 3 and meta["dataset"]["name"] == "synthetic" and meta["recipe"]["epochs"] == 3

    # rerunning a finished run trains nothing and gives the same summary
    again = _Recorder()
    again_summary = train("resnet8", "synthetic", "quick", overrides=SMALL + ["epochs=3"], runs_dir=runs_dir,
                          reporter=again)
    assert again_summary == summary
    assert again.starts == [3] and again.epochs == []

    # a longer schedule under the same name is another run: refused unless --fresh, which says what it deletes
    (run / "attacks").mkdir()
    for name in ("fast-a.json", "fast-b.json"):
        (run / "attacks" / name).write_text("{}")
    with pytest.raises(UserError, match=r"holds a run with other settings \(epochs: 3 → 4\).*"
                                        r"add --fresh .* \(it deletes that folder, with 2 attack results\)"):
        train("resnet8", "synthetic", "quick", overrides=SMALL + ["epochs=4"], runs_dir=runs_dir)
    capsys.readouterr()
    fresh = _Recorder()
    train("resnet8", "synthetic", "quick", overrides=SMALL + ["epochs=1"], runs_dir=runs_dir, fresh=True,
          reporter=fresh)
    assert fresh.starts == [0] and fresh.epochs == [1]
    assert f"--fresh: removed '{run}' with 2 attack results" in capsys.readouterr().err


def test_divergence_stops_with_a_clear_message_and_keeps_finished_work(runs_dir):
    with pytest.raises(TrainingDiverged, match="training diverged: the loss is (nan|inf).*lower optimizer.lr"):
        train("resnet8", "synthetic", "quick", overrides=SMALL + ["epochs=2", "optimizer.lr=1e30"], runs_dir=runs_dir)


def test_bad_inputs_leave_no_run_folder(runs_dir):
    with pytest.raises(UserError, match="unknown model"):
        train("resnet9", "synthetic", "quick", overrides=SMALL, runs_dir=runs_dir)
    with pytest.raises(UserError, match="unknown data set"):
        train("resnet8", "cifar", "quick", runs_dir=runs_dir)
    with pytest.raises(UserError, match="unknown config key"):
        train("resnet8", "synthetic", "quick", overrides=["optimiser.lr=0.1"], runs_dir=runs_dir)
    binary = runs_dir.parent / "recipe.yaml"
    binary.write_bytes(bytes(range(128, 256)))
    with pytest.raises(UserError, match="cannot read config file .*UnicodeDecodeError"):
        train("resnet8", "synthetic", str(binary), runs_dir=runs_dir)
    assert not runs_dir.exists()


def test_a_damaged_run_config_is_one_clear_error(runs_dir):
    summary = train("resnet8", "synthetic", "quick", overrides=SMALL + ["epochs=1"], runs_dir=runs_dir)
    config = Path(summary["checkpoint"]).parent.parent / "config.yaml"
    config.write_bytes(bytes(range(128, 256)))
    with pytest.raises(UserError, match="repair it or start over with --fresh"):
        train("resnet8", "synthetic", "quick", overrides=SMALL + ["epochs=1"], runs_dir=runs_dir)


def test_an_objective_defines_only_its_loss_and_the_base_class_gives_the_hooks(runs_dir):
    class HalfCrossEntropy(Objective):
        def __call__(self, model, batch, step):
            logits = model(batch.images)
            return logits, {"half_ce": 0.5 * F.cross_entropy(logits.float(), batch.labels)}

    config = resolve_train_config("quick", {"model": "resnet8", "data": {"name": "synthetic"}}, SMALL + ["epochs=1"])
    data = load_dataset("synthetic", size=16, classes=4, train=256, test=64)
    model = create_model("resnet8", 4, image_size=16, mean=data.mean, std=data.std)
    run = RunFolder.prepare(runs_dir, "half", config.as_dict())
    summary = Trainer(config, model, data, run, objective=HalfCrossEntropy()).fit()
    record = json.loads((run.path / "metrics.jsonl").read_text())
    assert set(record["train_loss"]) == {"half_ce"} and summary["epochs"] == 1
    assert read_checkpoint(run.last_checkpoint)["trainer"]["objective_state"] == {}


def test_the_train_state_keeps_each_part_state_under_its_own_key():
    state = TrainState(epochs_done=2, part_states={"jpeg_initial_tables": [{"luma": [[1.0]]}]},
                       objective_state={"thresholds": [1, 2]})
    data = state.as_dict()
    assert list(data) == ["epochs_done", "history", "best_accuracy", "best_epoch", "train_seconds",
                          "jpeg_initial_tables", "objective_state"]  # where checkpoints have always kept it
    assert TrainState.from_dict(data, {"jpeg_initial_tables": []}) == state
    older = {k: v for k, v in data.items() if k != "jpeg_initial_tables"}  # written before the part existed
    assert TrainState.from_dict(older, {"jpeg_initial_tables": []}).part_states == {"jpeg_initial_tables": []}


# ---------------------------------------------------------------- kill and resume


def _train_command(runs_dir: Path, name: str) -> list[str]:
    return [
        sys.executable, "-m", "robust_kd.cli", "train", "--model", "resnet8", "--data", "synthetic",
        "--runs-dir", str(runs_dir), "--name", name, "--device", "cpu", "epochs=4", "batch_size=32",
        "data.options.size=16", "data.options.train=3000", "data.options.test=200", "data.options.classes=4",
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_a_run_killed_mid_epoch_resumes_to_the_same_result(runs_dir, tmp_path, hang_cap):
    """SIGKILL once the first epoch is written (driven by the metrics file, not by a clock): epochs 2-4 are
    still to run, far more than one poll of the file; a busy machine only slows the victim, so widens that."""
    reference = subprocess.run(_train_command(runs_dir, "whole"), env=_env(), capture_output=True, text=True,
                               timeout=hang_cap.left(), check=False)
    assert reference.returncode == 0, reference.stderr

    log = tmp_path / "killed.log"           # a file, not a pipe: a pipe nobody reads would stall a slow victim
    with open(log, "w") as output:
        victim = subprocess.Popen(_train_command(runs_dir, "killed"), env=_env(), stdout=output,
                                  stderr=subprocess.STDOUT)
    metrics = runs_dir / "killed" / "metrics.jsonl"
    hang_cap.wait_for(lambda: epochs_written(metrics) >= 1, victim, "a first finished epoch", log)
    victim.send_signal(signal.SIGKILL)  # no chance to clean up: as a power cut
    victim.wait(timeout=hang_cap.left())
    assert victim.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    done = epochs_written(metrics)
    assert 1 <= done < 4 and not (runs_dir / "killed" / "summary.json").exists()

    resumed = subprocess.run(_train_command(runs_dir, "killed"), env=_env(), capture_output=True, text=True,
                             timeout=hang_cap.left(), check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming after epoch {done}" in resumed.stderr

    whole = read_checkpoint(runs_dir / "whole" / "checkpoints" / "last.pt")
    killed = read_checkpoint(runs_dir / "killed" / "checkpoints" / "last.pt")
    for key, value in whole["model"].items():
        assert torch.allclose(value.float(), killed["model"][key].float(), atol=1e-6), key
    assert metrics_history(runs_dir / "killed") == metrics_history(runs_dir / "whole")


@pytest.mark.parametrize("model, expected", [
    ("mobilenetv2", 0.01), ("jpegdl_mobilenetv2", 0.01), ("jpegdl_shufflev1", 0.01), ("jpegdl_shufflev2", 0.01),
    ("resnet20", 0.05), ("jpegdl_resnet20", 0.05),
])
def test_standard_recipe_lr_of_jpegdl_models_is_their_architectures(model, expected):
    """The JPEG-DL authors train jpegdl_<arch> at <arch>'s published LR (0.01 for MobileNetV2 and ShuffleNets)."""
    plain_model = ["jpeg.init_checkpoint=plain.pt"]  # read only when training starts
    assert resolve_train_config("standard", {"model": model}, plain_model).base_lr() == expected


def test_lr_by_model_names_a_jpegdl_model_exactly():
    config = resolve_train_config("standard", {"model": "jpegdl_mobilenetv2"},
                                  ["optimizer.lr_by_model.jpegdl_mobilenetv2=0.02", "jpeg.init=abs_avg"])
    assert config.base_lr() == 0.02
