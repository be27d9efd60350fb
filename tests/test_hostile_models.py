"""The hostile-input catalogue, models, devices and runs (tests/hostile.py has the harness): checkpoints
with NaN/inf weights or damaged metadata for every verb that loads one, models that do not fit each
other (transfer, rsa-adversarial's surrogate, a JPEG-DL initialisation), devices this machine lacks,
run names that are empty or paths, a training run's folder held by another process, a quickstart
whose late steps cannot run, and report.md fed HTML and Markdown through run names and results fields."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import pytest
import torch

from hostile import Case, check
from robust_kd.checkpoint import save_checkpoint
from robust_kd.cli import main
from robust_kd.models import create_model

TINY_DATA = ["--data", "synthetic", "data.options.size=16", "data.options.train=64", "data.options.test=32",
             "data.options.classes=4"]
TINY = [*TINY_DATA, "--device", "cpu", "epochs=1", "batch_size=32"]
CLASS_NAMES = [f"class{k}" for k in range(4)]       # the synthetic data set's names


# ------------------------------------------------------------------------------------------------ earlier files
def _edited(base: Path, out: Path, edit) -> Path:
    """A copy of the checkpoint ``base`` with ``edit(payload)`` applied (weights or metadata)."""
    payload = torch.load(base, map_location="cpu", weights_only=True)
    edit(payload)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, out)
    return out


def _fill(value: float):
    def edit(payload):
        payload["model"]["net.conv1.weight"].fill_(value)
    return edit


def _metadata(**changes):
    def edit(payload):
        for key, value in changes.items():
            target = payload["metadata"]
            *parents, last = key.split(".")
            for parent in parents:
                target = target[parent]
            target[last] = value
    return edit


def _as_run(runs: Path, name: str, checkpoint: Path, base_run: Path) -> None:
    """A run folder holding ``checkpoint`` with the base run's config (so its data set is known)."""
    (runs / name / "checkpoints").mkdir(parents=True)
    shutil.copy(base_run / "config.yaml", runs / name / "config.yaml")
    shutil.copy(checkpoint, runs / name / "checkpoints" / "last.pt")


def _untrained(path: Path, classes: int = 4, channels: int = 3, size: int = 16, names=None) -> Path:
    torch.manual_seed(0)
    model = create_model("resnet8", classes, in_channels=channels, image_size=size)
    names = names or [f"class{k}" for k in range(classes)]
    save_checkpoint(path, model, {"dataset": {"name": "synthetic", "class_names": names}})
    return path


@pytest.fixture(scope="module")
def earlier(tmp_path_factory) -> Path:
    """What a user had before the hostile call: a trained run (runs/base), and beside it checkpoints and run
    folders that are broken or do not fit it. Copied into every case's scratch folder."""
    root = tmp_path_factory.mktemp("earlier")
    runs = root / "runs"
    assert main(["train", "--model", "resnet8", "--name", "base", "--runs-dir", str(runs), *TINY]) == 0
    base_run = runs / "base"
    base = base_run / "checkpoints" / "last.pt"
    ckpt = root / "ckpt"
    broken = {
        "nan": _fill(float("nan")), "inf": _fill(float("inf")),
        "many": _metadata(num_classes="many"), "channels7": _metadata(in_channels=7),
        "pixels255": _metadata(**{"normalization.mean": [125.0, 122.0, 113.0]}),
        "huge": _metadata(image_size=10**9), "names": _metadata(**{"dataset.class_names": ["a", "b"]}),
        "arch": _metadata(arch=["resnet8"]), "std0": _metadata(**{"normalization.std": [0.0, 0.25, 0.25]}),
        "tables": _metadata(jpeg_tables={"luma": [[float("nan")] * 8] * 8}),
    }
    for name, edit in broken.items():
        _edited(base, ckpt / f"{name}.pt", edit)
    for name in ("nan", "inf"):
        _as_run(runs, f"{name}run", ckpt / f"{name}.pt", base_run)
    shutil.copytree(base_run, runs / "resume_nan")
    shutil.copy(ckpt / "nan.pt", runs / "resume_nan" / "checkpoints" / "last.pt")
    fits_not = {"other3": {"classes": 3}, "gray": {"channels": 1}, "renamed": {"names": ["a", "b", "c", "d"]},
                "big": {"size": 32}}
    for name, settings in fits_not.items():
        _as_run(runs, name, _untrained(ckpt / f"{name}.pt", **settings), base_run)
    shutil.copytree(base_run, runs / "badconfig")
    (runs / "badconfig" / "config.yaml").write_text("data: {name: synthetic\n")      # damaged: an unclosed mapping
    shutil.copy(base, root / "bare.pt")                                                 # a checkpoint outside its run
    jpeg = create_model("jpegdl_resnet8", 4, image_size=16)
    save_checkpoint(ckpt / "jpeg_options.pt", jpeg, {})
    _edited(ckpt / "jpeg_options.pt", ckpt / "jpeg_options.pt", _metadata(input_layer_options={"bogus": 1}))
    return root


def _args(*parts: str):
    """A case's arguments, with {s} standing for its scratch folder (runs/ and ckpt/ are under it)."""
    return lambda scratch: [p.format(s=scratch) for p in parts]


RUNS = ("--runs-dir", "{s}/runs")
RSA_FAST = ("--n-bootstrap", "10", "--n-permutations", "10")
NAN = r"weights hold NaN \(first in 'net\.conv1\.weight'\)"
DAMAGED = r"damaged robust-kd checkpoint: its metadata field"


# ---------------------------------------------------------------------------------- 2: one loader for every verb
LOADING = [
    Case("attack: NaN weights", _args("attack", "--model", "{s}/runs/nanrun", "--n", "4", "--device", "cpu", *RUNS),
         NAN),
    Case("attack: inf weights", _args("attack", "--model", "{s}/ckpt/inf.pt", "--n", "4", *RUNS), r"weights hold inf"),
    Case("transfer: a NaN source", _args("transfer", "--source", "{s}/runs/nanrun", "--target", "{s}/runs/base",
                                         "--n", "4", "--device", "cpu", *RUNS), NAN),
    Case("transfer: a NaN target", _args("transfer", "--source", "{s}/runs/base", "--target", "{s}/runs/nanrun",
                                         "--n", "4", "--device", "cpu", *RUNS), NAN),
    Case("rsa: NaN weights", _args("rsa", "--model", "{s}/ckpt/nan.pt", "--stimuli", "rsa92", "--brain-rdm", "rsa92",
                                   *RSA_FAST, *RUNS), NAN),
    Case("rsa-models: one model with NaN weights", _args("rsa-models", "--models", "{s}/runs/base,{s}/ckpt/nan.pt",
                                                         "--n", "8", *RUNS), NAN),
    Case("rsa-adversarial: NaN weights", _args("rsa-adversarial", "--model", "{s}/runs/nanrun", "--stimuli", "test",
                                               "--n", "8", *RSA_FAST, *RUNS), NAN),
    Case("rsa-adversarial: a NaN surrogate", _args("rsa-adversarial", "--model", "{s}/runs/base", "--stimuli", "test",
                                                   "--n", "8", "--black", "transfer", "--surrogate",
                                                   "{s}/ckpt/nan.pt", *RSA_FAST, *RUNS), NAN),
    Case("distill: a NaN teacher", _args("distill", "--teacher", "{s}/ckpt/nan.pt", "--student", "resnet8", *TINY,
                                         *RUNS), NAN),
    Case("train: a NaN JPEG-DL init checkpoint",
         _args("train", "--model", "jpegdl_resnet8", "jpeg.init=sensitivity", "jpeg.init_checkpoint={s}/ckpt/nan.pt",
               *TINY, *RUNS), NAN),
    Case("train: resuming from NaN weights", _args("train", "--model", "resnet8", "--name", "resume_nan", *TINY, *RUNS),
         NAN),
    Case("models --show: NaN weights", _args("models", "--show", "{s}/ckpt/nan.pt", *RUNS), NAN),
    Case("metadata: num_classes 'many'", _args("attack", "--model", "{s}/ckpt/many.pt", *RUNS),
         DAMAGED + r" 'num_classes' must be an integer"),
    Case("metadata: 7 input channels", _args("transfer", "--source", "{s}/ckpt/channels7.pt", "--target",
                                             "{s}/runs/base", *RUNS),
         DAMAGED + r" 'in_channels' must be 1 \(grey\) or 3"),
    Case("metadata: a model for 0-255 pixels", _args("rsa", "--model", "{s}/ckpt/pixels255.pt", "--stimuli", "rsa92",
                                                     "--brain-rdm", "rsa92", *RUNS),
         DAMAGED + r" 'normalization' has a mean outside \[0, 1\]"),
    Case("metadata: a 10^9-pixel image size", _args("distill", "--teacher", "{s}/ckpt/huge.pt", *TINY, *RUNS),
         DAMAGED + r" 'image_size' must be an integer from"),
    Case("metadata: two class names for four classes", _args("attack", "--model", "{s}/ckpt/names.pt", *RUNS),
         DAMAGED + r" 'dataset' must hold class_names as a list of 4 names"),
    Case("metadata: an arch that is a list", _args("models", "--show", "{s}/ckpt/arch.pt", *RUNS),
         DAMAGED + r" 'arch' must name an architecture"),
    Case("metadata: a std of 0", _args("rsa-models", "--models", "{s}/runs/base,{s}/ckpt/std0.pt", *RUNS),
         DAMAGED + r" 'normalization' must be .* std positive"),
    Case("metadata: NaN JPEG tables", _args("attack", "--model", "{s}/ckpt/tables.pt", *RUNS),
         DAMAGED + r" 'jpeg_tables' must map luma .* 8×8 tables of positive finite"),
    Case("metadata: options the JPEG layer does not take", _args("attack", "--model", "{s}/ckpt/jpeg_options.pt",
                                                                 *RUNS), DAMAGED + r" 'input_layer_options' must map"),
]

# ------------------------------------------------------------------------ 1: sources, surrogates and targets fit
FITTING = [
    Case("rsa-adversarial: a surrogate of other classes",
         _args("rsa-adversarial", "--model", "{s}/runs/base", "--stimuli", "test", "--n", "8", "--black", "transfer",
               "--surrogate", "{s}/runs/other3", *RSA_FAST, *RUNS),
         r"--model 'base' has 4 classes but --surrogate '.*other3' has 3; use a --surrogate trained on"),
    Case("rsa-adversarial: a grey surrogate for a colour model",
         _args("rsa-adversarial", "--model", "{s}/runs/base", "--stimuli", "test", "--black", "transfer",
               "--surrogate", "{s}/runs/gray", *RUNS), r"takes 3-channel images but --surrogate '.*gray' takes 1"),
    Case("rsa-adversarial: --black transfer without a surrogate",
         _args("rsa-adversarial", "--model", "{s}/runs/base", "--stimuli", "test", "--black", "transfer", *RUNS),
         r"--black transfer needs --surrogate"),
    Case("rsa-adversarial: a surrogate the square attack would ignore",
         _args("rsa-adversarial", "--model", "{s}/runs/base", "--stimuli", "test", "--surrogate", "{s}/runs/base",
               *RUNS), r"--surrogate applies to --black transfer only"),
    Case("transfer: a source of other classes", _args("transfer", "--source", "{s}/runs/other3", "--target",
                                                      "{s}/runs/base", "--n", "4", *RUNS),
         r"source '.*other3' has 3 classes but target '.*base' has 4; give sources and targets trained on"),
    Case("transfer: a grey target", _args("transfer", "--source", "{s}/runs/base", "--target", "{s}/runs/base,"
                                          "{s}/runs/gray", "--n", "4", *RUNS),
         r"source '.*base' takes 3-channel images but target '.*gray' takes 1-channel images"),
    Case("transfer: the same number of classes, other names",
         _args("transfer", "--source", "{s}/runs/base", "--target", "{s}/runs/renamed", "--n", "4", *RUNS),
         r"source '.*base' names class 0 'class0' but target '.*renamed' names it 'a'"),
    Case("transfer: another image size", _args("transfer", "--source", "{s}/runs/big", "--target", "{s}/runs/base",
                                               "--n", "4", *RUNS),
         r"takes 32×32 images but target '.*base' takes 16×16"),
    Case("attack: a model of other classes than its data", _args("attack", "--model", "{s}/runs/other3", "--n", "4",
                                                                 *RUNS), r"has 3 classes but synthetic has 4",
         lines_before=True),     # after the line naming the model's checkpoint
    Case("train: a JPEG-DL init checkpoint of other classes",
         _args("train", "--model", "jpegdl_resnet8", "jpeg.init=sensitivity", "jpeg.init_checkpoint={s}/ckpt/other3.pt",
               *TINY, *RUNS), r"init_checkpoint '.*other3\.pt' has 3 classes but synthetic has 4"),
]

# ----------------------------------------------------------------------------------- 3: devices and run names
NO_DEVICE = r"this machine has: cpu"
DEVICES = [
    Case("train --device cpu:7", _args("train", "--model", "resnet8", *TINY, "--device", "cpu:7", *RUNS),
         r"--device 'cpu:7': there is no cpu device number 7; " + NO_DEVICE),
    Case("train device=cpu:7 in the config", _args("train", "--model", "resnet8", *TINY, "device=cpu:7", *RUNS),
         r"'cpu:7': there is no cpu device number 7"),
    Case("train --device tpu", _args("train", "--model", "resnet8", *TINY, "--device", "tpu", *RUNS),
         r"device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    Case("distill --device cpu:7", _args("distill", "--teacher", "{s}/runs/base", "--student", "resnet8", *TINY,
                                         "--device", "cpu:7", *RUNS), r"no cpu device number 7"),
    Case("attack --device cpu:7", _args("attack", "--model", "{s}/runs/base", "--n", "4", "--device", "cpu:7", *RUNS),
         r"no cpu device number 7; " + NO_DEVICE),
    Case("transfer --device tpu", _args("transfer", "--source", "{s}/runs/base", "--target", "{s}/runs/base",
                                        "--n", "4", "--device", "tpu", *RUNS), r"'tpu': unknown device name"),
    Case("rsa --device meta", _args("rsa", "--model", "{s}/runs/base", "--stimuli", "rsa92", "--brain-rdm", "rsa92",
                                    "--device", "meta", *RUNS), r"runs on cpu, cuda, mps, not 'meta'"),
    Case("rsa-adversarial --device cpu:1", _args("rsa-adversarial", "--model", "{s}/runs/base", "--stimuli", "test",
                                                 "--device", "cpu:1", *RUNS), r"no cpu device number 1"),
    Case("rsa-models --device ''", _args("rsa-models", "--models", "{s}/runs/base,{s}/runs/base", "--device", "",
                                         *RUNS), r"--device '': unknown device name"),
]
if not torch.cuda.is_available():
    DEVICES.append(Case("attack --device cuda without a GPU", _args("attack", "--model", "{s}/runs/base", "--device",
                                                                    "cuda", *RUNS), r"no CUDA GPU is visible"))

NAMES = [
    Case("train --name ''", _args("train", "--model", "resnet8", *TINY, "--name", "", *RUNS),
         r"--name is empty; .*leave --name out for the default \(resnet8_synthetic_quick_seed0\)"),
    Case("train --name of blanks", _args("train", "--model", "resnet8", *TINY, "--name", "   ", *RUNS),
         r"--name is empty"),
    Case("train --name with a slash", _args("train", "--model", "resnet8", *TINY, "--name", "a/b", *RUNS),
         r"--name 'a/b' holds a path separator \(/\)"),
    Case("train --name with a backslash", _args("train", "--model", "resnet8", *TINY, "--name", "a\\b", *RUNS),
         r"holds a path separator"),
    Case("train --name ..", _args("train", "--model", "resnet8", *TINY, "--name", "..", *RUNS),
         r"--name '\.\.' has no letter or digit"),
    Case("distill --name ''", _args("distill", "--teacher", "{s}/runs/base", "--student", "resnet8", *TINY,
                                    "--name", "", *RUNS), r"--name is empty"),
    Case("distill --name ../escape", _args("distill", "--teacher", "{s}/runs/base", "--student", "resnet8", *TINY,
                                           "--name", "../escape", *RUNS), r"holds a path separator"),
]

RUN_CONFIG = [
    Case("attack: a run whose config.yaml is damaged", _args("attack", "--model", "{s}/runs/badconfig", *RUNS),
         r"run config '.*badconfig/config\.yaml' is not valid YAML"),
    Case("transfer: a target whose config.yaml is damaged",
         _args("transfer", "--source", "{s}/runs/base", "--target", "{s}/runs/badconfig", *RUNS),
         r"run config '.*badconfig/config\.yaml' is not valid YAML"),
]

CASES = [*LOADING, *FITTING, *DEVICES, *NAMES, *RUN_CONFIG]


def test_a_checkpoint_outside_its_run_is_attacked_on_the_data_set_it_records(earlier):
    from robust_kd.targets import resolve_model

    target = resolve_model(str(earlier / "bare.pt"), earlier / "runs")
    assert target.data == "synthetic"       # its metadata's data set; it was 'embedded' whatever the model


@pytest.mark.parametrize("case", CASES, ids=str)
def test_models_devices_and_names_are_checked_in_one_line(case, earlier, tmp_path, capsys):
    shutil.copytree(earlier, tmp_path, dirs_exist_ok=True)
    check(case, tmp_path, capsys)


# ---------------------------------------------------------------------------------- 5: quickstart checks its plan
QUICKSTART = [
    Case("quickstart --data nosuch", _args("quickstart", "--out", "{s}/qs", "--data", "nosuch"),
         r"unknown data set 'nosuch'"),
    Case("quickstart --device tpu", _args("quickstart", "--out", "{s}/qs", "--device", "tpu"),
         r"'tpu': unknown device name"),
    Case("quickstart --device cpu:7", _args("quickstart", "--plan", "smoke", "--out", "{s}/qs", "--device", "cpu:7"),
         r"no cpu device number 7"),
    Case("quickstart: the smoke plan's data options on the embedded set",
         _args("quickstart", "--plan", "smoke", "--data", "embedded", "--out", "{s}/qs"),
         r"data set 'embedded' has no option"),
]


@pytest.mark.parametrize("case", QUICKSTART, ids=str)
def test_quickstart_checks_every_step_before_the_first(case, tmp_path, capsys):
    check(case, tmp_path, capsys)
    assert not (tmp_path / "qs").exists(), "refused, yet it made its folder (a rerun would need --fresh)"


# ------------------------------------------------------------------------------- 4: a training run's folder lock
def test_a_training_run_held_by_another_process_is_refused_and_then_resumes(earlier, tmp_path, capsys):
    from robust_kd.fileio import one_at_a_time
    from robust_kd.train.run import lock_path

    shutil.copytree(earlier, tmp_path, dirs_exist_ok=True)
    run = tmp_path / "runs" / "base"
    train = ["train", "--model", "resnet8", "--name", "base", *TINY, "--runs-dir", str(tmp_path / "runs")]
    before = sorted(p.name for p in run.rglob("*"))
    with one_at_a_time(lock_path(run), "held by the test", "pid 4242 on the-test-host, since now"):
        for extra in ([], ["--fresh"]):         # --fresh would delete the folder under the holder's feet
            case = Case(f"train {extra}", lambda scratch, extra=extra: [*train, *extra],
                        r"run folder '.*base' is in use by another robust-kd training \(pid 4242 on the-test-host, "
                        r"since now\); wait for it to finish")
            check(case, tmp_path, capsys)
            assert sorted(p.name for p in run.rglob("*")) == before
    assert main(train) == 0         # the hold ends with its holder: the same command resumes (nothing left to do)
    assert "resuming after epoch 1" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- 6: report.md escaping
HOSTILE = {"model": "<script>alert(1)</script>", "data": "<img src=x onerror=alert(2)>",
           "recipe": "[click me](javascript:alert(3))", "method": "a|b|c", "device": "**bold** _it_ `code` ![i](x.png)",
           "seed": "# heading"}


def _rendered(markdown: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table").enable("strikethrough").render(markdown)


def test_report_md_shows_html_and_markdown_from_results_as_typed(tmp_path, capsys):
    run = tmp_path / "runs" / "x<img src=y onerror=alert(4)>|z"
    run.mkdir(parents=True)
    summary = {**HOSTILE, "epochs": 1, "final_test_accuracy": 0.5, "best_test_accuracy": 0.5}
    (run / "summary.json").write_text(json.dumps(summary))
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep"), "--title", "1. <b>t</b>"]) == 0
    capsys.readouterr()
    markdown = (tmp_path / "rep" / "report.md").read_text()
    page = _rendered(markdown)
    for tag in ("<script", "<img", "<a ", "<strong>bold", "<em>it", "<code>code", "<h1>heading", "<b>", "<ol"):
        assert tag not in page, (tag, page)
    row = next(line for line in page.split("<tr>") if "alert(1)" in line)
    assert row.count("<td") == 11, row          # the run table's 11 columns: no | split a cell
    shown = html.unescape(page)
    for value in [*HOSTILE.values(), run.name]:
        assert value in shown, value            # every text still reads as typed
    assert "<h1>1. &lt;b&gt;t&lt;/b&gt;</h1>" in page


def test_markdown_escaping_keeps_plain_names_readable():
    from robust_kd.md_escape import inline, paragraph

    assert inline("resnet8_synthetic_quick_seed0") == "resnet8_synthetic_quick_seed0"
    assert inline("8/255 · 0.123") == "8/255 · 0.123"
    assert inline("_a_ *b* a|b") == r"\_a\_ \*b\* a\|b"
    assert paragraph("- item") == r"\- item" and paragraph("12. x") == r"12\. x" and paragraph("x - y") == "x - y"


# ------------------------------------------------------------------------------------ the report's own checkpoint
def test_the_report_names_a_jpegdl_checkpoint_with_nan_weights_it_leaves_out(tmp_path, capsys):
    run = tmp_path / "jpegdl_resnet8_run"
    model = create_model("jpegdl_resnet8", 4, image_size=16)
    with torch.no_grad():
        model.net.conv1.weight.fill_(float("nan"))
    save_checkpoint(run / "checkpoints" / "last.pt", model, {})
    (run / "summary.json").write_text(json.dumps({"model": "jpegdl_resnet8", "final_test_accuracy": 0.5}))
    assert main(["report", str(run), "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "left out" in out and "(its JPEG tables): the weights hold NaN" in out, out
    assert "JPEG-DL quantization tables" not in (tmp_path / "rep" / "report.md").read_text()
