"""robust-kd attack / transfer: model resolution, JPEG-DL variants, results files, resume, bad input."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml

import attacks
from robust_kd.checkpoint import save_checkpoint
from robust_kd.cli import main
from robust_kd.models import create_model

TINY = ["--data", "synthetic", "--device", "cpu", "epochs=1", "batch_size=32", "data.options.size=16",
        "data.options.train=64", "data.options.test=32", "data.options.classes=4"]


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory) -> Path:
    """A runs folder with a 1-epoch jpegdl_resnet8 and resnet8 on tiny synthetic data."""
    runs = tmp_path_factory.mktemp("runs")
    for model in ("jpegdl_resnet8", "resnet8"):
        assert main(["train", "--model", model, "--runs-dir", str(runs), *TINY]) == 0
    return runs


def test_jpegdl_model_is_attacked_soft_and_hard_with_transfer_and_resumes(capsys, trained_runs):
    args = ["attack", "--model", "jpegdl_resnet8", "--suite", "fast", "--n", "16", "--runs-dir", str(trained_runs),
            "--device", "cpu"]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    path = Path(out.strip().splitlines()[-1].removeprefix("results: "))
    content = json.loads(path.read_text())
    assert path.parent == trained_runs / "jpegdl_resnet8_synthetic_quick_seed0" / "attacks"
    variants = {e["variant"]: e for e in content["evaluations"]}
    assert set(variants) == {"soft", "hard"}
    soft_labels = [a["label"] for a in variants["soft"]["attacks"]]
    assert soft_labels == ["pgd-20", "fgsm", "pgd-20 [bpda-identity]", "fgsm [bpda-identity]",
                           "transfer [twin-without-jpeg]"]
    assert [a["label"] for a in variants["hard"]["attacks"]] == ["pgd-20", "fgsm", "transfer [twin-without-jpeg]"]
    for key in ("threat_model", "eps", "clean_acc", "robust_acc", "name", "model", "data", "seed", "device", "flags"):
        assert key in content
    for e in content["evaluations"]:
        assert e["n_examples"] == 16 and len(e["points"]["robust"]) == 16 and "versions" in e
    assert content["robust_acc"] == min(e["robust_acc"] for e in content["evaluations"])
    headline = variants[content["headline_variant"]]     # clean and robust accuracy of the same variant
    assert (content["clean_acc"], content["robust_acc"]) == (headline["clean_acc"], headline["robust_acc"])
    # hard-variant BPDA gradients exist, so no masked-gradient flag there
    assert "zero_or_nan_gradients" not in {f["code"] for f in variants["hard"]["flags"]}
    assert "soft ·" in err or "soft:" in err
    code, out2, _ = run(capsys, *args)  # a rerun resumes from the saved state: same verdicts
    again = json.loads(path.read_text())
    assert code == 0 and [e["points"] for e in again["evaluations"]] == [e["points"] for e in content["evaluations"]]


def test_piped_output_shows_that_a_long_batch_is_alive(capsys, trained_runs, monkeypatch):
    import importlib

    progress_module = importlib.import_module("attacks.progress")
    from robust_kd.cli.attack_cmd import AttackProgress

    monkeypatch.setattr(progress_module, "HEARTBEAT_SECONDS", 0.0)
    monkeypatch.setattr(AttackProgress, "PIPED_EVERY", 0.0)   # a line whenever there is news, not once a minute
    code, out, err = run(capsys, "attack", "--model", "resnet8", "--suite", "fast", "--n", "16", "--batch-size", "4",
                         "--runs-dir", str(trained_runs), "--fresh", "--no-convergence-check")
    assert code == 0, err
    assert re.search(r"^pgd-20: 0/\d+ points attacked, batch of \d in flight, [1-9]\d*% of its work done, "
                     r"(at most ~\d+ (s|min|h) left, )?[\d,]+ forward passes so far; "
                     r"robust so far \d+/16", err, re.M), err
    assert re.search(r"^pgd-20: \d+/\d+ points attacked, robust so far \d+/16 \(", err, re.M), err
    assert re.search(r"^pgd-20: attacked \d+, broke \d+, robust \d+/16", err, re.M), err


def test_sigterm_keeps_the_finished_batches_and_a_rerun_resumes(trained_runs, tmp_path, hang_cap):
    """A cluster's time limit or `kill` sends SIGTERM: the evaluation saves its finished batches,
    exits 143 with one line, and the same command finishes the rest (no point attacked twice).

    The signal goes when the state file holds a first finished batch, however long that takes (a busy
    machine: minutes); the batches left (one point each, 1500 steps) outlast one poll of that file."""
    import signal
    import subprocess

    suite = tmp_path / "slow.yaml"
    suite.write_text("name: slow\nattacks:\n  - {attack: pgd, label: pgd-slow, steps: 1500, alpha_fraction: 0.001}\n")
    command = [sys.executable, "-m", "robust_kd.cli", "attack", "--model", "resnet8", "--suite", str(suite),
               "--n", "32", "--batch-size", "1", "--eps", "1/255", "--runs-dir", str(trained_runs),
               "--device", "cpu", "--no-convergence-check", "--json"]
    states = trained_runs / "resnet8_synthetic_quick_seed0" / "attacks" / ".state"

    def batches() -> int:
        found = list(states.glob("slow-*.json"))     # written atomically: never read half-written
        return len(json.loads(found[0].read_text())["batches"]) if found else 0

    log = tmp_path / "attack.err"               # a file, not a pipe: a pipe nobody reads could stall the attack
    with open(log, "w") as err:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
    hang_cap.wait_for(lambda: batches() >= 1, process, "a first finished batch in the state file", log)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=hang_cap.left())
    err = log.read_text()
    assert process.returncode == 143, err
    assert err.strip().splitlines()[-1] == ("robust-kd: terminated (SIGTERM); finished batches and the last snapshot "
                                            "of the one in flight are saved, rerun the same command to resume")
    kept = batches()
    assert kept >= 1
    done = subprocess.run(command, capture_output=True, text=True, timeout=hang_cap.left())
    assert done.returncode == 0, done.stderr
    evaluation = json.loads(done.stdout)["evaluations"][0]
    record = next(a for a in evaluation["attacks"] if a["label"] == "pgd-slow")
    assert record["points_attacked"] == sum(evaluation["points"]["clean_correct"]) > kept - 1


def test_eps_list_gives_a_curve_in_one_file(capsys, trained_runs):
    code, out, err = run(capsys, "attack", "--model", "resnet8", "--suite", "fast", "--n", "12", "--eps",
                         "1/255,4/255,16/255", "--runs-dir", str(trained_runs), "--json")
    assert code == 0, err
    content = json.loads(out)
    assert [e["eps"] for e in content["evaluations"]] == ["1/255", "4/255", "16/255"]
    accuracies = [e["robust_acc"] for e in content["evaluations"]]
    assert accuracies == sorted(accuracies, reverse=True)


def test_yaml_suite_file(capsys, trained_runs, tmp_path):
    suite = tmp_path / "mine.yaml"
    suite.write_text("name: mine\nattacks:\n  - {attack: pgd, label: pgd-3, steps: 3}\n"
                     "  - {attack: square, queries: 5}\n")
    code, out, err = run(capsys, "attack", "--model", "resnet8", "--suite", str(suite), "--n", "8", "--runs-dir",
                         str(trained_runs), "--json")
    assert code == 0, err
    evaluation = json.loads(out)["evaluations"][0]
    assert [a["label"] for a in evaluation["attacks"]] == ["pgd-3", "square"]
    assert evaluation["convergence"]["attack"] == "pgd-3" and evaluation["convergence"]["probe"]["steps"] == 15


def test_convergence_check_is_printed_and_can_be_skipped(capsys, trained_runs, tmp_path):
    suite = tmp_path / "short.yaml"
    suite.write_text("name: short\nattacks:\n  - {attack: pgd, label: pgd-2, steps: 2}\n")
    args = ["attack", "--model", "resnet8", "--suite", str(suite), "--n", "8", "--eps", "1/255", "--runs-dir",
            str(trained_runs)]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    line = next(text for text in out.splitlines() if text.startswith("convergence [model, eps 1/255]: "))
    evaluation = json.loads(Path(out.strip().splitlines()[-1].removeprefix("results: ")).read_text())["evaluations"][0]
    assert line.endswith(attacks.convergence_words(evaluation["convergence"]))
    # --fresh also removes what a write killed in the middle left behind
    results = Path(out.strip().splitlines()[-1].removeprefix("results: "))
    leftover = results.parent / ".state" / f".{results.stem}.model.json.k2j4x9.tmp"
    leftover.write_text("{")
    code, out, err = run(capsys, *args, "--no-convergence-check", "--fresh", "--json")
    assert code == 0, err
    assert not leftover.exists() and (results.parent / ".state").is_dir()
    assert json.loads(out)["evaluations"][0]["convergence"] is None and "convergence [" not in out


def test_bf16_attacks_get_their_own_results_file_and_say_so(capsys, trained_runs, monkeypatch):
    from attacks import precision as precision_module

    monkeypatch.setattr(precision_module, "_cpu_flags", lambda: {"avx2"})   # as on a CPU without bf16 units
    args = ["attack", "--model", "resnet8", "--suite", "fast", "--n", "8", "--runs-dir", str(trained_runs)]
    code, out, err = run(capsys, *args, "--precision", "bf16")
    assert code == 0, err
    assert "attacks in bf16, verdicts in fp32" in out and "bf16 attacks run slower than fp32 here" in err
    results = Path(out.strip().splitlines()[-1].removeprefix("results: "))
    assert results.name.endswith("-bf16.json")
    content = json.loads(results.read_text())
    assert content["precision"] == "bf16" and content["evaluations"][0]["precision"] == "bf16"
    assert content["evaluations"][0]["convergence"]["precision"] == "fp32"
    code, out, err = run(capsys, *args, "--json")    # fp32 beside it: no clash with the bf16 state
    assert code == 0, err
    assert json.loads(out)["precision"] == "fp32"


def test_a_run_stopped_between_variants_says_what_it_lacks_and_n_beyond_the_data_is_said(capsys, trained_runs,
                                                                                          monkeypatch):
    from robust_kd.report.build import robustness_section
    from robust_kd.report.collect import collect
    from robust_kd.robustness import AttackRun

    evaluate_variant = AttackRun._evaluate

    def stop_before_hard(self, model, points, variant, *rest):
        if variant.label == "hard":
            raise KeyboardInterrupt
        return evaluate_variant(self, model, points, variant, *rest)

    args = ["attack", "--model", "jpegdl_resnet8", "--suite", "fast", "--n", "100000", "--eps", "1/255", "--seed", "7",
            "--runs-dir", str(trained_runs), "--device", "cpu", "--no-convergence-check"]
    monkeypatch.setattr(AttackRun, "_evaluate", stop_before_hard)
    code, _, err = run(capsys, *args)
    assert code == 130, err
    # --n beyond the test split: said, and the file is named by the points used
    tested = re.search(r"--n 100000: synthetic has (\d+) test points; using all \1", err)
    assert tested, err
    path = (trained_runs / "jpegdl_resnet8_synthetic_quick_seed0" / "attacks"
            / f"fast-Linf-1-255-n{tested[1]}-seed7.json")
    stopped = json.loads(path.read_text())
    assert stopped["complete"] is False and stopped["variants_pending"] == ["hard"]
    assert [e["variant"] for e in stopped["evaluations"]] == ["soft"]
    section = robustness_section(collect([trained_runs / "jpegdl_resnet8_synthetic_quick_seed0"]))
    assert any("unfinished, the variants hard are not evaluated yet" in p for p in section.paragraphs)
    monkeypatch.setattr(AttackRun, "_evaluate", evaluate_variant)
    code, _, err = run(capsys, *args)
    assert code == 0, err
    finished = json.loads(path.read_text())
    assert finished["complete"] is True and "variants_pending" not in finished
    assert [e["variant"] for e in finished["evaluations"]] == ["soft", "hard"]


def test_transfer_matrix_command(capsys, trained_runs, tmp_path):
    out_file = tmp_path / "matrix.json"
    code, out, err = run(capsys, "transfer", "--source", "resnet8,jpegdl_resnet8", "--target", "resnet8,jpegdl_resnet8",
                         "--n", "16", "--eps", "8/255", "--runs-dir", str(trained_runs), "--out", str(out_file))
    assert code == 0, err
    matrix = json.loads(out_file.read_text())
    assert set(matrix["cells"]) == {"resnet8", "jpegdl_resnet8"}
    for row in matrix["cells"].values():
        for cell in row.values():
            assert 0 <= cell["success_rate"] <= 1 and cell["broken"] <= cell["points"]
    assert "source \\ target" in out and "matrix:" in out
    # the examples saved batch by batch for resuming are gone once the matrix is written
    assert not list((trained_runs / "transfer" / ".state").glob("resnet8+jpegdl_resnet8-to-*"))
    # a JPEG-DL source is differentiated with its JPEG layer as the identity (BPDA), unless asked otherwise
    assert matrix["source_gradients"] == {"resnet8": "model", "jpegdl_resnet8": "bpda-identity"}
    assert "jpegdl_resnet8 as a source: its JPEG layer differentiated as the identity" in err
    code, out, err = run(capsys, "transfer", "--source", "jpegdl_resnet8", "--target", "resnet8", "--n", "16",
                         "--runs-dir", str(trained_runs), "--out", str(tmp_path / "soft.json"),
                         "--jpeg-gradient", "soft")
    assert code == 0, err
    assert json.loads((tmp_path / "soft.json").read_text())["source_gradients"] == {"jpegdl_resnet8": "model"}


def test_an_interrupted_transfer_command_resumes_from_its_saved_batches(capsys, trained_runs, tmp_path, monkeypatch):
    transfer_module = importlib.import_module("attacks.transfer")
    craft = transfer_module.craft
    calls = []

    def craft_then_stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return craft(*args, **kwargs)

    out_file = tmp_path / "m.json"
    args = ["transfer", "--source", "resnet8", "--target", "resnet8", "--n", "16", "--batch-size", "4",
            "--runs-dir", str(trained_runs), "--out", str(out_file), "--device", "cpu"]
    monkeypatch.setattr(transfer_module, "craft", craft_then_stop)
    code, _, err = run(capsys, *args)
    assert code == 130 and "finished batches of examples are saved, rerun the same command to resume" in err, err
    saved = trained_runs / "transfer" / ".state" / "resnet8-to-resnet8-Linf-8-255-n16"    # by settings, not --out
    assert len(list(saved.glob("*.pt"))) == 1 and not out_file.exists()
    calls.clear()
    monkeypatch.setattr(transfer_module, "craft", lambda *a, **k: (calls.append(1), craft(*a, **k))[1])
    code, _, err = run(capsys, *args)
    assert code == 0, err
    assert len(calls) == 3 and out_file.is_file() and not saved.exists()   # the three batches it lacked


def test_a_second_command_on_the_same_evaluation_is_refused_while_the_first_runs(capsys, trained_runs):
    from robust_kd.fileio import one_at_a_time

    args = ["attack", "--model", "resnet8", "--suite", "fast", "--n", "4", "--eps", "1/255", "--seed", "11",
            "--runs-dir", str(trained_runs), "--no-convergence-check"]
    state_dir = trained_runs / "resnet8_synthetic_quick_seed0" / "attacks" / ".state"
    with one_at_a_time(state_dir / "fast-Linf-1-255-n4-seed11.lock", "held by this test"):
        code, _, err = run(capsys, *args)                      # what a second process would see
        assert code == 2 and "another robust-kd attack is running this evaluation now" in err, err
        assert err.strip().splitlines()[-1].startswith("robust-kd: error: another") and "Traceback" not in err
        code, _, err = run(capsys, *args[:-1], "--no-convergence-check", "--fresh")
        assert code == 2 and "another robust-kd attack is running" in err    # --fresh deletes nothing under it
    code, _, err = run(capsys, *args)
    assert code == 0, err
    code, _, err = run(capsys, *args, "--fresh")                # the lock file itself survives --fresh
    assert code == 0, err


def test_a_run_is_named_by_its_folder_name_under_the_runs_dir(capsys, trained_runs, tmp_path):
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(trained_runs / "resnet8_synthetic_quick_seed0", runs / "my_run",
                    ignore=shutil.ignore_patterns("attacks"))
    code, out, err = run(capsys, "attack", "--model", "my_run", "--suite", "fast", "--n", "4", "--eps", "1/255",
                         "--runs-dir", str(runs), "--no-convergence-check")
    assert code == 0, err
    assert Path(out.strip().splitlines()[-1].removeprefix("results: ")).parent == runs / "my_run" / "attacks"
    code, _, err = run(capsys, "transfer", "--source", "my_run", "--target", "my_run", "--n", "4",
                       "--runs-dir", str(runs))
    assert code == 0, err
    # a Linf habit under L2 gets a hint, a usual L2 radius none
    for eps, hinted in (("8/255", True), ("0.5", False)):
        code, _, err = run(capsys, "attack", "--model", "my_run", "--suite", "fast", "--n", "4", "--eps", eps,
                           "--norm", "L2", "--runs-dir", str(runs), "--no-convergence-check")
        assert code == 0, err
        assert ("--eps 8/255 with --norm L2 bounds the whole image's perturbation" in err) == hinted, err


def test_results_never_mix_checkpoints(capsys, trained_runs, tmp_path):
    """Checkpoints other than last.pt (best.pt, or any other file) get their own results; a run
    trained further is refused until --fresh."""
    import shutil

    moved = tmp_path / "run"
    shutil.copytree(trained_runs / "resnet8_synthetic_quick_seed0", moved, ignore=shutil.ignore_patterns("attacks"))
    other = _write_checkpoint(tmp_path / "other.pt", create_model("resnet8", 4, in_channels=3, image_size=16))
    shutil.copy(moved / "checkpoints" / "last.pt", moved / "checkpoints" / "best.pt")
    shutil.copy(other, moved / "checkpoints" / "b.pt")
    settings = ["--suite", "fast", "--n", "4", "--eps", "1/255", "--no-convergence-check"]
    names = []
    for model in (moved, moved / "checkpoints" / "best.pt", moved / "checkpoints" / "b.pt"):
        code, out, err = run(capsys, "attack", "--model", str(model), *settings)
        assert code == 0, err
        names.append(Path(out.strip().splitlines()[-1].removeprefix("results: ")).name)
    assert names == ["fast-Linf-1-255-n4-seed0.json", "fast-Linf-1-255-n4-seed0-best.json",
                     "fast-Linf-1-255-n4-seed0-b.json"]
    shutil.copy(other, moved / "checkpoints" / "last.pt")          # the run, trained further
    code, _, err = run(capsys, "attack", "--model", str(moved), *settings)
    assert code == 2 and "the model's weights" in err and "add --fresh" in err and "Traceback" not in err
    assert run(capsys, "attack", "--model", str(moved), *settings, "--fresh")[0] == 0


def test_transfer_bad_input_is_one_line_and_settings_get_their_own_file(capsys, trained_runs, tmp_path):
    base = ["transfer", "--source", "resnet8", "--target", "resnet8", "--n", "4", "--runs-dir", str(trained_runs)]
    for extra, message in ((["--steps", "0"], "--steps must be at least 1"),
                           (["--batch-size", "0"], "--batch-size must be at least 1"),
                           (["--out", str(tmp_path)], "is a folder; give the path of a JSON file"),
                           (["--jpeg-gradient", "soft"], "--jpeg-gradient soft applies to jpegdl_* sources only")):
        code, _, err = run(capsys, *base, *extra)
        assert code == 2 and message in err.strip().splitlines()[-1] and "Traceback" not in err, err
    names = set()
    for extra in ([], ["--steps", "5"], ["--precision", "bf16"]):
        code, out, err = run(capsys, *base, *extra)
        assert code == 0, err
        names.add(out.strip().splitlines()[-1].removeprefix("matrix: "))
    assert len(names) == 3 and any(name.endswith("-steps5.json") for name in names)
    bf16 = next(name for name in names if name.endswith("-bf16.json"))
    assert json.loads(Path(bf16).read_text())["precision"] == "bf16" and "made in bf16" in out
    code, _, err = run(capsys, *base, "--precision", "fp16")
    assert code == 2 and "'fp16' is not one of 'fp32', 'bf16'" in err and "Traceback" not in err, err


def test_norm_is_shown_and_taken_in_its_own_spelling_and_any_case(capsys):
    for verb, norms in (("attack", "[Linf|L2|L1]"), ("transfer", "[Linf|L2]"), ("rsa-adversarial", "[Linf|L2]")):
        code, out, _ = run(capsys, verb, "--help")
        assert code == 0 and f"--norm {norms}" in out, out


def test_attack_list_shows_suites_and_attacks(capsys):
    code, out, _ = run(capsys, "attack", "--list")
    assert code == 0
    for name in ("autoattack", "autoattack_plus", "autoattack_rand", "autoattack_quick", "fast", "pgd", "blackbox",
                 "transfer", "adaptive", "apgd-t", "fab", "square"):
        assert name in out
    for attack in ("apgd", "apgd-t", "fab", "fab-t", "square"):   # every AutoAttack version and norm
        assert re.search(rf"\W{re.escape(attack)}\s+Linf/L2/L1\s", out), attack
    assert "white_box" not in out and "``" not in out
    pgd_row = next(line for line in out.splitlines() if re.match(r"\W*pgd\s+Linf/L2\s", line))
    assert (all(s in pgd_row for s in ("steps", "alpha_fraction", "label", "seed_offset"))
            and "norm," not in pgd_row), pgd_row


# ---------------------------------------------------------------- the pretrained model and its data


def test_autoattack_resnet18_is_pyautoattacks_model(capsys, tmp_path):
    from robust_kd.data import load_dataset
    from robust_kd.models.pretrained import load_pretrained

    folder = Path(list(importlib.util.find_spec("pyautoattack").submodule_search_locations)[0]) / "examples"
    sys.path.insert(0, str(folder))
    try:
        from resnet import ResNet18  # the architecture file that ships beside the weights
    finally:
        sys.path.remove(str(folder))
    reference = ResNet18()
    reference.load_state_dict(torch.load(folder / "model_test.pt", map_location="cpu", weights_only=True))
    ours = load_pretrained("autoattack_resnet18_cifar10")
    data = load_dataset("cifar10-samples")
    x = data.test_images.float() / 255
    with torch.no_grad():
        assert torch.allclose(ours(x), reference.eval()(x), atol=1e-5)
        assert float((ours(x).argmax(1) == data.test_labels).float().mean()) >= 0.9
    code, out, err = run(capsys, "attack", "--model", "autoattack_resnet18_cifar10", "--suite", "fast", "--n", "4",
                         "--json", "--runs-dir", str(tmp_path))
    content = json.loads(out)
    assert code == 0 and content["data"]["name"] == "cifar10-samples" and content["robust_acc"] < content["clean_acc"]
    assert (tmp_path / "autoattack_resnet18_cifar10" / "attacks").is_dir()


def test_shipped_cifar10_images_are_foolbox_files_byte_for_byte():
    from robust_kd.data.cifar10_samples import samples_folder

    foolbox = Path(list(importlib.util.find_spec("foolbox").submodule_search_locations)[0]) / "data"
    ours = sorted(samples_folder().glob("cifar10_*.png"))
    assert len(ours) == 20
    for file in ours:
        assert file.read_bytes() == (foolbox / file.name).read_bytes()


def test_shipped_suite_yaml_files_match_the_registry():
    from importlib import resources

    folder = Path(str(resources.files("robust_kd.configs") / "suites"))
    surrogate = torch.nn.Linear(2, 2)
    for name in ("fast", "pgd", "autoattack", "autoattack_plus", "autoattack_rand", "blackbox"):
        data = yaml.safe_load((folder / f"{name}.yaml").read_text())
        context = dict(eps=8 / 255, norm="Linf", seed=3, num_classes=10, surrogates={"twin": surrogate})
        from_yaml = attacks.build_suite(data, **context)
        from_registry = attacks.build_suite(name, **context)
        assert (sorted((s.label, s.kind) for s in from_yaml.steps)
                == sorted((s.label, s.kind) for s in from_registry.steps))
        registry = {s.label: s.attack.describe() for s in from_registry.steps}
        for step in from_yaml.steps:
            assert step.attack.describe() == registry[step.label], step.label
    assert attacks.build_suite(yaml.safe_load((folder / "example_custom.yaml").read_text()), eps=0.1, norm="L2", seed=0,
                               num_classes=10).steps


# ---------------------------------------------------------------- bad input: one line, exit 2


def _write_checkpoint(path: Path, model: torch.nn.Module) -> Path:
    save_checkpoint(path, model, {})
    return path


@pytest.fixture(scope="module")
def odd_checkpoints(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("checkpoints")
    hundred = create_model("resnet8", 100, in_channels=1, image_size=28)
    broken = create_model("resnet8", 10, in_channels=1, image_size=28)
    with torch.no_grad():
        broken.net.fc.weight.fill_(float("nan"))
    corrupt = folder / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    return {"hundred": _write_checkpoint(folder / "hundred.pt", hundred),
            "nan": _write_checkpoint(folder / "nan.pt", broken), "corrupt": corrupt}


@pytest.mark.parametrize("args, message", [
    (["--suite", "fast"], r"--model is required"),
    (["--model", "resnet8", "--suite", "autoatack"], r"unknown suite 'autoatack' \(did you mean 'autoattack'\?\)"),
    (["--model", "resnet8", "--eps", "2"], r"--eps 2 is out of range for Linf"),
    (["--model", "resnet8", "--eps", "1/255,300/255"], r"--eps 300/255 is out of range for Linf"),
    (["--model", "resnet8", "--data-root", "elsewhere"],
     r"data set 'synthetic' comes with the installed packages and reads no folder; drop --data-root 'elsewhere'"),
    (["--model", "resnet8", "--eps", "8/0"], r"--eps: '8/0' divides by zero"),
    (["--model", "resnet8", "--eps", "1e400"], r"--eps: '1e400' is not a number"),
    (["--model", "resnet8", "--eps", "8/255,0.0313725490196078431372549"],
     r"--eps lists 8/255 and 0.03137.*give each eps once"),
    (["--model", "resnet8", "--norm", "L3"], r"'L3' is not one of 'Linf', 'L2', 'L1'"),
    (["--model", "resnet8", "--norm", "L1"], r"pgd supports Linf and L2, not 'L1'; in L1 use suite autoattack"),
    (["--model", "resnet8", "--norm", "linf", "--eps", "3"], r"--eps 3 is out of range for Linf"),   # any case
    (["--model", "resnet8", "--n", "0"], r"--n must be at least 1"),
    (["--model", "resnet8", "--precision", "fp16"], r"'fp16' is not one of 'fp32', 'bf16'"),
    (["--model", "resnet8", "--data", "embedded"], r"takes 3-channel images but embedded has 1"),
    (["--model", "resnet9"], r"neither a checkpoint, a run folder, a run under .* nor a model name \(did you mean"),
    (["--model", "resnet32x4"], r"no trained resnet32x4 under .*robust-kd train --model resnet32x4"),
    (["--model", "missing.pt"], r"checkpoint 'missing.pt' does not exist"),
    (["--model", "missing.pth"], r"checkpoint 'missing.pth' does not exist"),
    (["--model", "resnet8", "--suite", "transfer"],
     r"suite 'transfer' attacks a jpegdl_\* model .* robust-kd transfer"),
    (["--model", "resnet8", "--suite", "autoattack_quik"], r"did you mean 'autoattack_quick'"),
    (["--model", "resnet8", "--suite", "missing.yaml"], r"suite file 'missing.yaml' does not exist; check the path"),
    (["--model", "resnet8", "--suite", "fast", "--eot", "2"], r"--eot applies to suite 'adaptive' only"),
    (["--model", "{hundred}", "--data", "embedded"], r"has 100 classes but embedded has 10"),
    (["--model", "{nan}", "--data", "embedded"], r"NaN"),
    (["--model", "{corrupt}"], r"corrupt|not a robust-kd checkpoint|cannot read"),
])
def test_bad_attack_input_is_one_line(capsys, trained_runs, odd_checkpoints, args, message):
    args = [a.format(**{k: str(v) for k, v in odd_checkpoints.items()}) for a in args]
    code, out, err = run(capsys, "attack", *args, "--runs-dir", str(trained_runs), "--n", "4") if "--n" not in args \
        else run(capsys, "attack", *args, "--runs-dir", str(trained_runs))
    lines = err.strip().splitlines()
    assert code == 2, err
    assert lines[-1].startswith("robust-kd: error:") and re.search(message, lines[-1]), err
    assert "Traceback" not in err


def run_suite_file(capsys, trained_runs, suite: Path, content: str | bytes, *extra: str) -> tuple[int, str, str]:
    """Write ``content`` to the suite file ``suite`` and attack the trained resnet8 with it on 4 points."""
    suite.write_bytes(content if isinstance(content, bytes) else content.encode())
    return run(capsys, "attack", "--model", "resnet8", "--suite", str(suite), "--n", "4", *extra, "--runs-dir",
               str(trained_runs))


def test_unsupported_norm_in_a_suite_file_is_one_line(capsys, trained_runs, tmp_path):
    code, _, err = run_suite_file(capsys, trained_runs, tmp_path / "l2only.yaml", "attacks:\n  - {attack: cw-l2}\n")
    assert code == 2 and re.search(r"cw-l2 supports L2, not 'Linf'", err.strip().splitlines()[-1]), err
    # an entry may not change the norm its results are labelled with
    code, _, err = run_suite_file(capsys, trained_runs, tmp_path / "l3.yaml", "attacks:\n  - {attack: pgd, norm: L3}\n")
    assert code == 2 and "sets norm; the evaluation's norm (--norm) applies to every attack" in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("content, message", [
    (b"\xfd\x00\x17binary garbage\xff", r"cannot read suite file .*UnicodeDecodeError"),
    (b"attacks:\n  - {attack: pgd, steps: many}\n", r"attack 'pgd': steps must be an integer, got 'many'"),
    (b"attacks:\n  - {attack: apgd, loss: hinge}\n", r"attack 'apgd': loss must be one of 'ce', 'dlr', got 'hinge'"),
    (b"attacks:\n  - {attack: square, queries: 1.5}\n", r"attack 'square': queries must be an integer, got 1.5"),
])
def test_a_suite_file_with_bad_content_is_one_line(capsys, trained_runs, tmp_path, content, message):
    code, _, err = run_suite_file(capsys, trained_runs, tmp_path / "bad.yaml", content)
    assert code == 2 and re.search(message, err.strip().splitlines()[-1]), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err    # said before the model loads


def test_a_suite_caveat_is_kept_in_the_results_and_printed(capsys, trained_runs, tmp_path):
    code, out, err = run_suite_file(capsys, trained_runs, tmp_path / "tiny.yaml", "name: tiny\ncaveat: >-\n"
                                    "  two PGD steps only,\n  a smoke test\nattacks:\n  - {attack: pgd, steps: 2}\n")
    assert code == 0, err
    assert "NOTE suite tiny: two PGD steps only, a smoke test" in out
    result = json.loads(Path(out.strip().splitlines()[-1].split("results: ")[1]).read_text())
    assert result["suite_caveat"] == "two PGD steps only, a smoke test"
    code, _, err = run_suite_file(capsys, trained_runs, tmp_path / "tiny.yaml",
                                  "caveat: [1, 2]\nattacks:\n  - {attack: pgd, steps: 2}\n")
    assert code == 2 and "'caveat' must be text" in err


def test_a_norm_an_attack_does_not_support_is_one_line(capsys, trained_runs, tmp_path):
    code, _, err = run_suite_file(capsys, trained_runs, tmp_path / "cw.yaml",
                                  "attacks:\n  - {attack: cw-l2, steps: 5}\n")
    assert code == 2 and re.search(r"cw-l2 supports L2, not 'Linf'", err) and "Traceback" not in err
    code, out, err = run_suite_file(capsys, trained_runs, tmp_path / "cw.yaml",
                                    "attacks:\n  - {attack: cw-l2, steps: 5}\n", "--norm", "L2", "--json")
    assert code == 0, err


def test_out_of_gpu_memory_retries_with_a_smaller_batch(capsys, trained_runs, monkeypatch):
    """The allocator's error, and cuDNN's failing to allocate its workspace (a plain RuntimeError):
    the batch is halved each time; any other RuntimeError is not retried."""
    import robust_kd.robustness as robustness

    real, batch_sizes = robustness.attacks.evaluate, []
    failures = [torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)"),
                RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED (simulated)")]

    def flaky(*args, **kwargs):
        batch_sizes.append(kwargs["batch_size"])
        if len(batch_sizes) <= len(failures):
            raise failures[len(batch_sizes) - 1]
        return real(*args, **kwargs)

    monkeypatch.setattr(robustness.attacks, "evaluate", flaky)
    code, out, err = run(capsys, "attack", "--model", "resnet8", "--suite", "fast", "--n", "8", "--batch-size", "8",
                         "--runs-dir", str(trained_runs), "--fresh")
    assert code == 0, err
    assert batch_sizes[:3] == [8, 4, 2] and "out of GPU memory: retrying with --batch-size 2" in err
    assert not robustness.attacks.out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


@pytest.mark.parametrize("suite", ["autoattack", "adaptive"])
def test_every_module_of_a_jpegdl_variant_goes_to_the_device(suite):
    """A CUDA run moves each variant to the device, its gradient views too: they are copies made while
    the model was on the CPU (the meta device stands in for CUDA here)."""
    from types import SimpleNamespace

    from robust_kd.models import create_model
    from robust_kd.robustness import variants_of

    model = create_model("jpegdl_resnet8", num_classes=10).eval()
    variants = variants_of(SimpleNamespace(model=model), suite)
    assert {v.label for v in variants} == {"soft", "hard"}
    assert sum(len(v.context.get("gradient_views", {})) for v in variants) == (2 if suite == "adaptive" else 1)
    for variant in variants:
        variant.to(torch.device("meta"))
        tensors = [t for module in variant.modules() for t in (*module.parameters(), *module.buffers())]
        assert tensors and all(t.device.type == "meta" for t in tensors), variant.label
        assert not any(module.training for module in variant.modules())


def test_save_examples_writes_the_broken_points_examples_and_a_figure(capsys, trained_runs):
    import numpy as np

    args = ["attack", "--model", "jpegdl_resnet8", "--suite", "fast", "--n", "12", "--eps", "2/255,16/255",
            "--runs-dir", str(trained_runs), "--no-convergence-check", "--seed", "5"]
    # first without --save-examples: a rerun that adds it cannot show the points that run broke
    code, out, err = run(capsys, *args)
    assert code == 0, err
    code, out, err = run(capsys, *args, "--save-examples")
    assert code == 0, err
    content = json.loads(Path(out.strip().splitlines()[-1].removeprefix("results: ")).read_text())
    assert all(e["examples"]["points"] == 0 and e["examples"]["figure"] is None for e in content["evaluations"])
    assert any(e["examples"]["missing"] > 0 for e in content["evaluations"])
    assert re.search(r"^(soft|hard), eps (2|16)/255: \d+ broken points have no example: an earlier run broke them "
                     r"without --save-examples", err, re.M), err
    assert "add --fresh to attack them again" in err

    code, out, err = run(capsys, *args, "--save-examples", "--fresh")
    assert code == 0, err
    path = Path(out.strip().splitlines()[-1].removeprefix("results: "))
    content = json.loads(path.read_text())
    assert len(content["evaluations"]) == 4                 # soft and hard, two eps each
    for evaluation in content["evaluations"]:
        examples = evaluation["examples"]
        broken = [i for i, b in enumerate(evaluation["points"]["broken_by"]) if b not in (None, "clean")]
        assert examples["points"] == len(broken) and examples["missing"] == 0
        assert examples["file"] == (f"{path.stem}.{evaluation['variant']}."
                                    f"{evaluation['eps'].replace('/', '-')}.examples.npz")
        saved = np.load(path.parent / examples["file"], allow_pickle=False)
        assert saved["index"].tolist() == broken and saved["adversarial"].shape == (len(broken), 3, 16, 16)
        assert (saved["prediction"] != saved["label"]).all()
        assert saved["attack"].tolist() == [evaluation["points"]["broken_by"][i] for i in broken]
        distance = np.abs(saved["adversarial"] - saved["clean"]).reshape(len(broken), -1).max(axis=1)
        assert (distance <= evaluation["eps_value"] + 1e-6).all() and (distance > 0).all()
        if broken:
            figure = path.parent / examples["figure"]
            assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"examples [{evaluation['variant']}, eps {evaluation['eps']}]: {len(broken)} in" in out
    assert sum(e["examples"]["points"] for e in content["evaluations"]) > 0
    # the report shows the figures
    code, out, err = run(capsys, "report", str(path.parent.parent), "--out", str(path.parent.parent / "report"))
    assert code == 0, err
    page = (path.parent.parent / "report" / "report.html").read_text()
    assert "<h2" in page and "Adversarial examples" in page and "broken points (clean, adversarial" in page
    shown = sum(1 for e in content["evaluations"] if e["examples"]["figure"])
    assert len(list((path.parent.parent / "report" / "report_files").glob("examples_*.png"))) == shown


def test_a_file_system_without_locks_runs_unlocked(tmp_path, monkeypatch):
    import errno
    import fcntl

    from robust_kd.errors import UserError
    from robust_kd.fileio import one_at_a_time

    with one_at_a_time(tmp_path / "a.lock", "busy"):
        with pytest.raises(UserError, match="busy"):     # held: the second holder is told at once
            with one_at_a_time(tmp_path / "a.lock", "busy"):
                pass

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    entered = []
    with one_at_a_time(tmp_path / "b.lock", "busy"):     # not a reason to refuse the run
        entered.append(True)
    assert entered == [True]


def _small_suite(tmp_path: Path) -> Path:
    suite = tmp_path / "small.yaml"
    suite.write_text("name: small\nattacks:\n  - {attack: apgd, label: apgd-ce, steps: 10}\n"
                     "  - {attack: square, queries: 50}\n")
    return suite


def test_reference_engine_and_cross_check_through_the_cli_and_the_report(capsys, trained_runs, tmp_path):
    args = ["attack", "--model", "resnet8", "--suite", str(_small_suite(tmp_path)), "--n", "16", "--runs-dir",
            str(trained_runs), "--device", "cpu", "--eps", "0.05"]
    code, out, err = run(capsys, *args, "--engine", "reference", "--cross-check")
    assert code == 0, err
    results = Path(out.strip().splitlines()[-1].removeprefix("results: "))
    assert results.name.endswith("-reference.json")
    content = json.loads(results.read_text())
    evaluation = content["evaluations"][0]
    assert content["engine"] == evaluation["engine"] == "reference"
    assert evaluation["computed_by"]["apgd-ce"].startswith("pyautoattack")
    check = evaluation["cross_check"]
    assert check["points"] == 16 and check["reference"]["robust_accuracy"] == evaluation["robust_accuracy"]
    assert "computed by the reference packages" in out and "cross-check [model, eps 0.05]: ours " in out
    # our engine's own file is another one; the cross-check's state for ours went beside the reference's
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    assert json.loads(out)["engine"] == "ours" and "cross_check" not in json.loads(out)["evaluations"][0]
    # what the reference cannot compute, in one line: a JPEG-DL model's steps through BPDA views
    code, out, err = run(capsys, *[a if a != "resnet8" else "jpegdl_resnet8" for a in args], "--engine", "reference")
    last = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err, err
    assert last.startswith("robust-kd: error: the reference engine cannot"), err
    assert "'apgd-ce [bpda-identity]'" in last
    code, out, err = run(capsys, *args, "--engine", "reference", "--precision", "bf16")
    assert code == 2 and "fp32 only" in err


def test_a_verdict_the_engines_disagree_on_is_flagged_and_named_in_the_report(capsys, trained_runs, tmp_path,
                                                                           monkeypatch):
    """A reference that breaks nothing (its APGD returns the clean images): every point our APGD broke
    must be named, in the terminal and in the report."""
    from attacks import reference

    monkeypatch.setitem(reference.TRANSLATIONS, "apgd", lambda a: ("a reference that breaks nothing",
                                                                   lambda model, x, y: x.clone()))
    runs = tmp_path / "runs"
    runs.mkdir()
    for name in ("resnet8_synthetic_quick_seed0",):
        (runs / name).symlink_to(trained_runs / name, target_is_directory=True)
    suite = {"name": "apgd-only", "attacks": [{"attack": "apgd", "label": "apgd-ce", "steps": 10}]}
    (tmp_path / "apgd.yaml").write_text(yaml.safe_dump(suite))
    code, out, err = run(capsys, "attack", "--model", "resnet8", "--suite", str(tmp_path / "apgd.yaml"), "--n", "16",
                         "--runs-dir", str(runs), "--device", "cpu", "--eps", "0.1", "--cross-check", "--json")
    assert code == 0, err
    evaluation = json.loads(out)["evaluations"][0]
    broken = [i for i, b in enumerate(evaluation["points"]["broken_by"]) if b == "apgd-ce"]
    assert broken and [d["index"] for d in evaluation["cross_check"]["differ"]] == broken
    assert "engines_disagree" in [f["code"] for f in evaluation["flags"]]
    code, out, err = run(capsys, "report", str(runs), "--out", str(tmp_path / "report"))
    assert code == 0, err
    page = (tmp_path / "report" / "report.html").read_text()
    assert f"#{broken[0]} (ours: broken by apgd-ce; reference: robust)" in page
    assert "Cross-checks against the reference packages" in page


def test_l1_through_the_cli(capsys, trained_runs, tmp_path):
    args = ["attack", "--model", "resnet8", "--suite", str(_small_suite(tmp_path)), "--n", "8", "--runs-dir",
            str(trained_runs), "--device", "cpu", "--norm", "L1"]
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    content = json.loads(out)
    assert content["norm"] == content["threat_model"] == "L1" and content["eps"] == "12"
    code, out, err = run(capsys, *args, "--eps", "800")          # 3×16×16 pixels: at most 768
    assert code == 2 and "out of range for L1" in err and "(0, 768]" in err
    code, out, err = run(capsys, "attack", "--model", "resnet8", "--suite", "pgd", "--runs-dir", str(trained_runs),
                         "--norm", "L1", "--n", "4")
    assert code == 2 and "pgd supports Linf and L2, not 'L1'" in err
