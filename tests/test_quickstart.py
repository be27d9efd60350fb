"""robust-kd quickstart: the reduced chain (plan 'smoke') end to end, resume, --fresh, and its bad input.
The quickstart is the study of configs/studies/<plan>.yaml (tests/test_study.py has the runner's own tests);
the real 'quick' plan is the README's main command, about 4 minutes, and is marked slow."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from robust_kd import study as st
from robust_kd.cli import main
from robust_kd.errors import UserError
from robust_kd.study.folder import STATE_DIR, STUDY_FILE

SECTIONS = ("Runs", "Teacher vs students", "Training curves", "Robustness", "Accuracy vs eps", "Transfer",
            "JPEG-DL quantization tables", "Representational similarity (RSA)")


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _check_chain_output(out_dir: Path, stdout: str, plan_name: str) -> None:
    last = stdout.strip().splitlines()[-1]
    report = out_dir / "report" / "report.html"
    assert last == f"report: {report}"
    html = report.read_text()
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in html, title
    assert "data:image/png;base64," in html and "://" not in html.replace("data:image", "")
    assert "⚠ autoattack_quick: " in html and "upper bound" in html     # the reduced suite is marked as such
    plan = st.load_plan(plan_name)
    the_study = st.expand(plan, st.Settings(out_dir))
    runs = [m.run for m in the_study.models]
    suites = [a.suite for a in plan.attacks]
    assert [m.role for m in the_study.models] == ["teacher", "student", "student", "jpegdl"]
    assert "<h2>Study headline</h2>" in html and "class='sortable'" in html
    figures = 0
    for run in runs:                                      # every model trained and attacked with every suite
        summary = json.loads((out_dir / run / "summary.json").read_text())
        assert 0.0 <= summary["final_test_accuracy"] <= 1.0
        results = [json.loads(f.read_text()) for f in (out_dir / run / "attacks").glob("*.json")]
        assert {r["suite"] for r in results} == set(suites)
        for r in results:                                # the reduced suite says so in its own results
            assert ("upper bound" in r.get("suite_caveat", "")) == (r["suite"] == "autoattack_quick")
            # the last suite saves its adversarial examples for the report
            assert all(("examples" in e) == (r["suite"] == suites[-1]) for e in r["evaluations"])
            figures += sum(1 for e in r["evaluations"] if (e.get("examples") or {}).get("figure"))
        assert f">{run}<" in html
    assert ("<h2>Adversarial examples</h2>" in html) == (figures > 0)
    matrix = json.loads((out_dir / "transfer" / "matrix.json").read_text())
    assert [Path(s).name for s in matrix["sources"]] == runs
    assert next((out_dir / runs[1] / "rsa").glob("*/rsa_adversarial.json"))
    states = [json.loads(f.read_text()) for f in (out_dir / STATE_DIR / "jobs").glob("*.json")]
    assert len(states) == 19 and all(s["state"] == "done" and s["seconds"] >= 0 for s in states)


def test_smoke_quickstart_runs_the_whole_chain_and_resumes(capsys, tmp_path):
    out_dir = tmp_path / "qs"
    code, out, err = _run(capsys, "quickstart", "--plan", "smoke", "--out", str(out_dir), "--device", "cpu")
    assert code == 0, err
    _check_chain_output(out_dir, out, "smoke")
    for k in range(1, 20):                                # every step shows progress and its command
        assert f"[{k}/19]" in out
    assert "$ robust-kd train --model resnet8 --name resnet8_seed0" in out

    # a rerun skips every step, rewrites nothing and prints the report path again
    report_mtime = (out_dir / "report" / "report.html").stat().st_mtime_ns
    code, out, err = _run(capsys, "quickstart", "--plan", "smoke", "--out", str(out_dir), "--device", "cpu")
    assert code == 0, err
    assert out.count("done earlier") == 19
    assert (out_dir / "report" / "report.html").stat().st_mtime_ns == report_mtime
    assert out.strip().splitlines()[-1] == f"report: {out_dir / 'report' / 'report.html'}"

    # a half-finished chain resumes at the first step not done
    jobs = out_dir / STATE_DIR / "jobs"
    for name in ("report.json", "rsa-adversarial__resnet8_kd_from_resnet8_seed0.json"):
        (jobs / name).unlink()
    code, out, err = _run(capsys, "quickstart", "--plan", "smoke", "--out", str(out_dir), "--device", "cpu")
    assert code == 0, err
    assert out.count("done earlier") == 17 and "$ robust-kd rsa-adversarial" in out and "$ robust-kd report" in out
    state_file = out_dir / STUDY_FILE

    # other settings in the same folder: a clear error, nothing lost
    code, out, err = _run(capsys, "quickstart", "--plan", "quick", "--out", str(out_dir))
    assert code == 2 and "--fresh" in err and len(err.strip().splitlines()) == 1
    assert state_file.is_file()


def test_fresh_starts_over_only_in_a_quickstart_folder(capsys, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    code, _, err = _run(capsys, "quickstart", "--plan", "smoke", "--out", str(foreign), "--fresh")
    assert code == 2 and "not a study folder" in err and len(err.strip().splitlines()) == 1
    assert (foreign / "precious.txt").read_text() == "keep me"
    (foreign / "quickstart.json").write_text("{}")           # a quickstart of robust-kd before studies
    code, _, err = _run(capsys, "quickstart", "--plan", "smoke", "--out", str(foreign))
    assert code == 2 and "quickstart of an earlier robust-kd" in err and len(err.strip().splitlines()) == 1

    ours = tmp_path / "qs"
    the_study = st.expand(st.load_plan("smoke"), st.Settings(ours))
    folder = st.StudyFolder(ours)
    folder.prepare(the_study, fresh=False)
    (ours / "resnet8_seed0").mkdir()
    (ours / "report").mkdir()
    (ours / "my_own_run").mkdir()           # e.g. a later 'robust-kd train --runs-dir <the same folder>'
    folder.prepare(the_study, fresh=True)
    assert not (ours / "resnet8_seed0").exists() and not (ours / "report").exists()
    assert (ours / "my_own_run").is_dir() and (ours / STUDY_FILE).is_file()

    (ours / STUDY_FILE).write_text("{not json")
    with pytest.raises(UserError, match="--fresh"):
        folder.prepare(the_study, fresh=False)
    folder.prepare(the_study, fresh=True)
    assert json.loads((ours / STUDY_FILE).read_text())["settings"]["study"] == "smoke"


def test_full_plan_needs_the_data_and_dry_run_prints_the_commands(capsys, tmp_path):
    code, _, err = _run(capsys, "quickstart", "--full", "--out", str(tmp_path / "qs"))
    assert code == 2 and "--data-root" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "qs").exists()
    code, out, _ = _run(capsys, "quickstart", "--full", "--data-root", str(tmp_path), "--dry-run")
    assert code == 0
    assert "--recipe standard" in out and "--suite autoattack " in out and "resnet32x4" in out
    assert "--save-examples" not in out             # not a file of every broken point of the full test set
    commands = re.findall(r"^  robust-kd (\S+)", out, flags=re.M)
    assert commands[:4] == ["train", "distill", "distill", "train"] and commands[-1] == "report"
    code, _, err = _run(capsys, "quickstart", "--full", "--plan", "smoke")
    assert code == 2 and "--full" in err


@pytest.mark.slow
def test_readme_quickstart_on_the_embedded_data(capsys, tmp_path):
    """The README's main command as it is (plan 'quick'); about 4 minutes on 2 CPU cores."""
    out_dir = tmp_path / "qs"
    code, out, err = _run(capsys, "quickstart", "--out", str(out_dir), "--device", "cpu")
    assert code == 0, err
    _check_chain_output(out_dir, out, "quick")
