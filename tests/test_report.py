"""robust-kd report from real (tiny) runs: the HTML parses, every image is embedded, and every number in
the tables equals the one in the results JSON."""

from __future__ import annotations

import base64
import html
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import attacks
from robust_kd.cli import main

TINY = ["--data", "synthetic", "--device", "cpu", "epochs=2", "batch_size=32", "data.options.size=16",
        "data.options.train=96", "data.options.test=48", "data.options.classes=4"]


class Page(HTMLParser):
    """Tables as lists of rows of cell texts, headings, and image sources."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.headings: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self._cell: list[str] | None = None
        self._heading = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "h2":
            self._heading = True
        elif tag == "img":
            self.images.append(attrs.get("src", ""))
        for key in ("href", "src"):
            if key in attrs and tag != "img":
                self.links.append(attrs[key])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "h2":
            self._heading = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._heading:
            self.headings.append(data.strip())


def run(capsys, *args: str) -> str:
    code = main(list(args))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    r = ["--runs-dir", str(runs)]
    assert main(["train", "--model", "resnet8", *r, *TINY]) == 0
    assert main(["train", "--model", "jpegdl_resnet8", *r, *TINY]) == 0
    teacher = runs / "resnet8_synthetic_quick_seed0"
    assert main(["distill", "--teacher", str(teacher / "checkpoints" / "last.pt"), "--student", "resnet8",
                 "--method", "kd", *r, *TINY]) == 0
    for run_dir in sorted(p for p in runs.iterdir() if p.is_dir()):
        assert main(["attack", "--model", str(run_dir), "--suite", "fast", "--n", "24", "--eps", "2/255,8/255",
                     "--device", "cpu"]) == 0
    jpeg = runs / "jpegdl_resnet8_synthetic_quick_seed0"
    assert main(["transfer", "--source", f"{teacher},{jpeg}", "--target", f"{teacher},{jpeg}", "--n", "24",
                 "--device", "cpu", "--runs-dir", str(runs), "--out", str(runs / "transfer" / "m.json")]) == 0
    assert main(["rsa", "--model", str(teacher), "--stimuli", "rsa92", "--brain-rdm", "rsa92", "--layers", "logits",
                 "--n-bootstrap", "30", "--n-permutations", "30", "--device", "cpu"]) == 0
    # the autoattack suite names its robust accuracy autoattack_acc (RobustBench's field)
    assert main(["attack", "--model", str(teacher), "--suite", "autoattack", "--n", "8", "--device", "cpu"]) == 0
    assert main(["rsa-adversarial", "--model", str(teacher), "--stimuli", "test", "--n", "12", "--queries", "50",
                 "--n-bootstrap", "20", "--n-permutations", "20", "--device", "cpu"]) == 0
    assert main(["rsa-models", "--models", f"{teacher},{jpeg}", "--n", "12", "--n-bootstrap", "20",
                 "--device", "cpu", "--runs-dir", str(runs)]) == 0
    return runs


def test_report_embeds_everything_and_its_numbers_equal_the_json(capsys, runs, tmp_path):
    out = run(capsys, "report", str(runs), "--out", str(tmp_path / "rep"))
    html_path = tmp_path / "rep" / "report.html"
    assert str(html_path) in out.strip().splitlines()[-1]
    assert "crafted on jpegdl_resnet8_synthetic_quick_seed0 with its JPEG layer as the identity (BPDA)" in \
        html_path.read_text()
    page = Page()
    page.feed(html_path.read_text())
    for heading in ("Runs", "Teacher vs students", "Training curves", "Robustness", "Accuracy vs eps", "Transfer",
                    "JPEG-DL quantization tables", "Representational similarity (RSA)"):
        assert heading in page.headings
    # every image embedded as a real PNG, nothing fetched from anywhere
    assert len(page.images) >= 8
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [link for link in page.links if "://" in link]

    def rows_of(first_header: str, *needed: str) -> list[dict[str, str]]:
        """Rows of every table whose first column is ``first_header`` and that has the ``needed`` columns."""
        rows = []
        for t in page.tables:
            if t and t[0] and t[0][0] == first_header and all(c in t[0] for c in needed):
                rows += [dict(zip(t[0], row)) for row in t[1:]]
        assert rows, f"no table starting with {first_header!r} with columns {needed}"
        return rows

    # runs table = summary.json
    runs_rows = {r["run"]: r for r in rows_of("run", "final test acc")}
    for run_dir in (p for p in runs.iterdir() if (p / "summary.json").is_file()):
        summary = json.loads((run_dir / "summary.json").read_text())
        assert runs_rows[run_dir.name]["final test acc"] == f"{100 * summary['final_test_accuracy']:.2f}"
    # robustness table = attack results JSON, every evaluation
    robust_rows = rows_of("run", "variant", "robust acc", "clean acc")
    breakdown = rows_of("run", "attacked", "robust acc")
    seen = checked = 0
    page_text = html_path.read_text()
    for result_file in runs.glob("*/attacks/*.json"):
        result = json.loads(result_file.read_text())
        run_name = result_file.parent.parent.name
        for ev in result["evaluations"]:
            match = [r for r in robust_rows if r["run"] == run_name and r["variant"] == ev.get("variant", "model")
                     and r["eps"] == ev["eps"]]
            match = [r for r in match if r["suite"] == result["suite"]]
            assert len(match) == 1
            robust = ev["autoattack_acc"] if result["suite"] == "autoattack" else ev["robust_acc"]
            assert match[0]["clean acc"] == f"{ev['clean_acc']:.2f}"
            assert match[0]["robust acc"] == f"{robust:.2f}"
            assert match[0]["points"] == str(ev["n_examples"])
            steps = [r for r in breakdown if r["run"] == run_name and r["variant"] == ev.get("variant", "model")
                     and r["eps"] == ev["eps"] and r["suite"] == result["suite"]]
            assert len(steps) == 1                      # one row per evaluation, one column per attack
            assert steps[0]["attacked"] == str(ev["attacks"][0]["points_attacked"])
            for a in ev["attacks"]:
                assert steps[0][a["label"]] == str(a["points_broken"])
            assert steps[0]["robust acc"] == f"{robust:.2f}"
            assert f"{100 * ev['attacks'][-1]['robust_accuracy_after']:.2f}" == f"{robust:.2f}"
            if ev.get("convergence"):                   # the sanity checks ran (the first eps of a list)
                assert html.escape(attacks.convergence_words(ev["convergence"])) in page_text
                checked += 1
            seen += 1
    assert seen == 2 * 2 + 2 + 2 + 1               # jpegdl: 2 variants × 2 eps; plain runs: 2 eps each; autoattack
    assert checked == 2 + 1 + 1 + 1                # the first eps of each curve, and the autoattack run
    # transfer table = the matrix JSON
    matrix = json.loads((runs / "transfer" / "m.json").read_text())
    transfer_rows = rows_of("source \\ target")
    for row in transfer_rows:
        source = next(s for s in matrix["sources"] if Path(s).name == row["source \\ target"])
        for target in matrix["targets"]:
            assert row[Path(target).name] == f"{100 * matrix['cells'][source][target]['success_rate']:.2f}"
    # RSA table = rsa.json
    rsa = json.loads(next(runs.glob("*/rsa/*/rsa.json")).read_text())
    rsa_rows = rows_of("layer", "ROI", "noise lower")
    assert rsa_rows[0]["similarity"] == f"{rsa['rows'][0]['similarity']:.3f}"
    assert rsa_rows[0]["noise lower"] == f"{rsa['rows'][0]['noise_lower']:.3f}"
    # adversarial RSA and model-vs-model tables = their JSON
    adversarial = json.loads(next(runs.glob("*/rsa/*/rsa_adversarial.json")).read_text())
    adv_rows = rows_of("layer", "difference")
    assert [r["layer"] for r in adv_rows] == [r["layer"] for r in adversarial["white_vs_black"]]
    for row, ref in zip(adv_rows, adversarial["white_vs_black"]):
        assert row["difference"] == f"{ref['difference']:.3f}"
        assert row["sim. to clean, white"] == f"{ref['similarity_a']:.3f}"
    models = json.loads(next(runs.glob("rsa-models/*/rsa_models.json")).read_text())
    pair_rows = rows_of("model A", "similarity")
    assert len(pair_rows) == len(models["results"])               # two models: one pair per layer
    for row, (layer, ref) in zip(pair_rows, models["results"].items()):
        assert row["similarity"] == f"{ref['similarity'][0][1]:.3f}"
    # every figure the analyses wrote is in the page: training curves (3), eps curves, transfer, JPEG tables,
    # RSA bars + network + brain RDMs, adversarial RDMs, one model × model heatmap per layer
    assert len(page.images) == 3 + 1 + 1 + 1 + 3 + 1 + len(models["results"])
    # the Markdown twin has the same tables and links its figures
    md = (tmp_path / "rep" / "report.md").read_text()
    assert f"{rsa['rows'][0]['similarity']:.3f}" in md
    for line in md.splitlines():
        if line.startswith("!["):
            assert (tmp_path / "rep" / line.split("](")[1].rstrip(")")).is_file()


def test_report_bad_input_is_one_line(capsys, tmp_path):
    code = main(["report", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    code = main(["report", str(tmp_path / "empty")])
    err = capsys.readouterr().err
    assert code == 2 and "nothing to report" in err


def test_broken_attack_results_are_left_out_with_their_reason_and_one_file_can_be_named(capsys, runs, tmp_path):
    import shutil

    run_dir = tmp_path / "resnet8_synthetic_quick_seed0"
    shutil.copytree(runs / "resnet8_synthetic_quick_seed0", run_dir)
    files = sorted((run_dir / "attacks").glob("*.json"))
    good = json.loads(files[0].read_text())
    evaluation = good["evaluations"][0]
    edits = {"robust_acc_text": {**good, "evaluations": [{**evaluation, "robust_acc": "abc", "autoattack_acc": "abc"}]},
             "attacks_null": {**good, "evaluations": [{**evaluation, "attacks": None}]},
             "flag_text": {**good, "evaluations": [{**evaluation, "flags": ["bogus_flag"]}]},
             "convergence_text": {**good, "evaluations": [{**evaluation, "convergence": "x"}]},
             "convergence_empty": {**good, "evaluations": [{**evaluation,
                                                            "convergence": {"attack": "pgd", "points": 3}}]},
             "norm_list": {**good, "evaluations": [{**evaluation, "norm": ["Linf"]}]},
             "flag_code_number": {**good, "evaluations": [{**evaluation, "flags": [{"code": 3}]}]},
             "no_evaluations": {**good, "evaluations": {}}}
    for name, content in edits.items():
        (run_dir / "attacks" / f"{name}.json").write_text(json.dumps(content))
    (run_dir / "attacks" / "truncated.json").write_text(files[0].read_text()[:100])
    code = main(["report", str(run_dir), "--out", str(tmp_path / "report")])
    captured = capsys.readouterr()
    assert code == 0 and "Traceback" not in captured.err, captured.err
    left_out = [line for line in captured.out.splitlines() if line.startswith("left out ")]
    assert len(left_out) == len(edits) + 1, captured.out
    for reason in ("'robust_acc' is not a number", "'attacks' is not a list of objects", "'flags' is not a list",
                   "'convergence' is not an object", "'evaluations' is not a list", "not a readable JSON object",
                   "'convergence' lacks the fields", "'norm' is not a number or a text",
                   "a flag's 'code' or 'message'"):
        assert any(reason in line for line in left_out), (reason, left_out)

    # two files whose rows would look the same (e.g. last.pt and best.pt): each row names its file
    from robust_kd.report.build import robustness_section
    from robust_kd.report.collect import collect

    (run_dir / "attacks" / f"{files[0].stem}-best.json").write_text(files[0].read_text())
    table = robustness_section(collect([run_dir])).blocks[0]
    names = {row[0] for row in table.rows}
    assert {f"{run_dir.name} ({files[0].stem})", f"{run_dir.name} ({files[0].stem}-best)"} <= names, names
    (run_dir / "attacks" / f"{files[0].stem}-best.json").unlink()

    # one attack results file named on its own: shown as its run's; a broken one is a one-line error
    code = main(["report", str(files[0]), "--out", str(tmp_path / "one")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    page = (tmp_path / "one" / "report.md").read_text()
    assert "resnet8_synthetic_quick_seed0" in page and "Robustness" in page
    code = main(["report", str(run_dir / "attacks" / "flag_text.json")])
    err = capsys.readouterr().err
    assert code == 2 and "'flags' is not a list of objects" in err and len(err.strip().splitlines()) == 1, err
    # the same file named and inside its named run folder: reported once
    from robust_kd.report.collect import collect as gather
    both = gather([files[0], run_dir])
    assert sum(len(r.attacks) for r in both.runs) == len(files)
    # a folder that cannot be written
    code = main(["report", str(files[0]), "--out", "/proc/robust-kd-report"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write in '/proc'" in err and "--out '/proc/robust-kd-report'" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_runs_are_found_in_subfolders_such_as_runs_quickstart(runs, tmp_path):
    from robust_kd.errors import UserError
    from robust_kd.report.collect import collect

    outer = tmp_path / "outer"
    outer.mkdir()
    # runs/quickstart/<run>, as the quickstart writes
    (outer / "quickstart").symlink_to(runs, target_is_directory=True)
    flat, nested = collect([runs]), collect([outer])
    assert len(flat.runs) >= 3 and [r.name for r in nested.runs] == [r.name for r in flat.runs]
    assert len(nested.transfers) == len(flat.transfers) == 1 and len(nested.rsa_models) == len(flat.rsa_models) == 1
    deep = tmp_path / "a" / "b" / "c"                 # four levels down: not searched
    deep.mkdir(parents=True)
    (deep / "runs").symlink_to(runs, target_is_directory=True)
    with pytest.raises(UserError, match="nothing to report"):
        collect([tmp_path / "a"])


def _chromium() -> str | None:
    import shutil
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None,
                    reason="needs Debian's chromium (apt-get install chromium); .ci/run installs it")
def test_report_renders_in_a_real_headless_browser(runs, tmp_path):
    """The page opens from disk in Chromium with no network, and its embedded plots are drawn: the
    screenshot holds coloured pixels (plots) besides the black and grey of text and tables."""
    import subprocess

    import numpy as np
    from PIL import Image

    from robust_kd.report import write_report

    html_path, _ = write_report([runs], tmp_path / "rep")
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,6000", f"--screenshot={shot}",
                    html_path.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (6000, 1200)
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    coloured_rows = np.where((saturation > 60).sum(axis=1) > 20)[0]
    # plots from the training curves down to the RSA section: coloured rows spread over the page
    assert len(coloured_rows) > 400 and coloured_rows.max() - coloured_rows.min() > 3000


def test_example_captions_are_wrapped_to_their_column():
    from robust_kd.report.figures import CAPTION_CHARS, wrapped_caption

    caption = wrapped_caption("#1234: automobile → truck\ntransfer [twin-without-jpeg]")
    assert all(len(line) <= CAPTION_CHARS for line in caption.split("\n")) and len(caption.split("\n")) >= 3
    assert wrapped_caption("#0: a → b\npgd-20 [bpda-identity]") == "#0: a → b\npgd-20 [bpda-identity]"   # fits: kept

@pytest.mark.parametrize("channels", [1, 3])
def test_the_adversarial_examples_figure_draws_grey_and_colour_images(channels):
    import io

    from PIL import Image

    from robust_kd.report.figures import adversarial_examples

    clean = np.random.default_rng(0).random((3, channels, 12, 12))
    adversarial = (clean + 0.01 * np.sign(np.random.default_rng(1).standard_normal(clean.shape))).clip(0, 1)
    png = adversarial_examples(clean, adversarial, ["#0: a → b\npgd", "#1: a → c\npgd", "#2: b → a\nfgsm"], "title")
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert image.shape[0] > 100 and image.shape[1] > 150 and image.std() > 10      # drawn, not blank
