"""robust-kd quickstart: the reduced chain (plan 'smoke') end to end, resume, --fresh, and its bad input.
The real 'quick' plan is the README's main command; it runs in about 4 minutes and is marked slow."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from robust_kd import quickstart as qs
from robust_kd.cli import main
from robust_kd.errors import UserError

SECTIONS = ("Runs", "Teacher vs students", "Training curves", "Robustness", "Accuracy vs eps", "Transfer",
            "JPEG-DL quantization tables", "Representational similarity (RSA)")


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _check_chain_output(out_dir: Path, stdout: str, plan: qs.Plan) -> None:
    last = stdout.strip().splitlines()[-1]
    report = out_dir / "report" / "report.html"
    assert last == f"report: {report}"
    html = report.read_text()
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in html, title
    assert "data:image/png;base64," in html and "://" not in html.replace("data:image", "")
    assert "⚠ autoattack_quick: " in html and "upper bound" in html     # the reduced suite is marked as such
    runs = [f"teacher_{plan.teacher}", *(f"student_{plan.student}_{m}" for m in plan.methods), f"student_{plan.jpegdl}"]
    figures = 0
    for run in runs:                                      # every model trained and attacked with every suite
        summary = json.loads((out_dir / run / "summary.json").read_text())
        assert 0.0 <= summary["final_test_accuracy"] <= 1.0
        results = [json.loads(f.read_text()) for f in (out_dir / run / "attacks").glob("*.json")]
        assert {r["suite"] for r in results} == {s for s, _, _ in plan.suites}
        for r in results:                                # the reduced suite says so in its own results
            assert ("upper bound" in r.get("suite_caveat", "")) == (r["suite"] == "autoattack_quick")
            # the last suite saves its adversarial examples for the report
            assert all(("examples" in e) == (r["suite"] == plan.suites[-1][0]) for e in r["evaluations"])
            figures += sum(1 for e in r["evaluations"] if (e.get("examples") or {}).get("figure"))
        assert f">{run}<" in html
    assert ("<h2>Adversarial examples</h2>" in html) == (figures > 0)
    matrix = json.loads((out_dir / "transfer" / "matrix.json").read_text())
    assert [Path(s).name for s in matrix["sources"]] == runs
    assert next((out_dir / f"student_{plan.student}_{plan.methods[0]}" / "rsa").glob("*/rsa_adversarial.json"))
    state = json.loads((out_dir / qs.STATE_FILE).read_text())
    assert len(state["done"]) == 15 and all(seconds >= 0 for seconds in state["done"].values())


def test_smoke_quickstart_runs_the_whole_chain_and_resumes(capsys, tmp_path):
    out_dir = tmp_path / "qs"
    code, out, err = _run(capsys, "quickstart", "--plan", "smoke", "--out", str(out_dir), "--device", "cpu")
    assert code == 0, err
    plan = qs.PLANS["smoke"]
    _check_chain_output(out_dir, out, plan)
    for k in range(1, 16):                                # every step shows progress and its command
        assert f"[{k}/15]" in out
    assert "$ robust-kd train --model resnet8 --name teacher_resnet8" in out

    # a rerun skips every step, rewrites nothing and prints the report path again
    report_mtime = (out_dir / "report" / "report.html").stat().st_mtime_ns
    code, out, err = _run(capsys, "quickstart", "--plan", "smoke", "--out", str(out_dir), "--device", "cpu")
    assert code == 0, err
    assert out.count("done earlier") == 15
    assert (out_dir / "report" / "report.html").stat().st_mtime_ns == report_mtime
    assert out.strip().splitlines()[-1] == f"report: {out_dir / 'report' / 'report.html'}"

    # a half-finished chain resumes at the first step not done
    state_file = out_dir / qs.STATE_FILE
    state = json.loads(state_file.read_text())
    del state["done"]["report"], state["done"]["rsa-adversarial"]
    state_file.write_text(json.dumps(state))
    code, out, err = _run(capsys, "quickstart", "--plan", "smoke", "--out", str(out_dir), "--device", "cpu")
    assert code == 0, err
    assert out.count("done earlier") == 13 and "$ robust-kd rsa-adversarial" in out and "$ robust-kd report" in out

    # other settings in the same folder: a clear error, nothing lost
    code, out, err = _run(capsys, "quickstart", "--plan", "quick", "--out", str(out_dir))
    assert code == 2 and "--fresh" in err and len(err.strip().splitlines()) == 1
    assert state_file.is_file()


def test_fresh_starts_over_only_in_a_quickstart_folder(capsys, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    code, _, err = _run(capsys, "quickstart", "--plan", "smoke", "--out", str(foreign), "--fresh")
    assert code == 2 and "not a quickstart folder" in err and len(err.strip().splitlines()) == 1
    assert (foreign / "precious.txt").read_text() == "keep me"

    ours = tmp_path / "qs"
    chain = qs.build_chain(qs.PLANS["smoke"], ours)
    qs.prepare_folder(ours, {"plan": "smoke"}, fresh=False, owned=chain.owned)
    (ours / "teacher_resnet8").mkdir()
    (ours / "report").mkdir()
    (ours / "my_own_run").mkdir()           # e.g. a later 'robust-kd train --runs-dir <the same folder>'
    state = qs.prepare_folder(ours, {"plan": "smoke"}, fresh=True, owned=chain.owned)
    assert state["done"] == {} and not (ours / "teacher_resnet8").exists() and not (ours / "report").exists()
    assert (ours / "my_own_run").is_dir()

    (ours / qs.STATE_FILE).write_text("{not json")
    with pytest.raises(UserError, match="--fresh"):
        qs.prepare_folder(ours, {"plan": "smoke"}, fresh=False)
    assert qs.prepare_folder(ours, {"plan": "smoke"}, fresh=True, owned=chain.owned)["done"] == {}


def test_a_failing_step_stops_the_chain_and_keeps_finished_steps(tmp_path):
    chain = qs.build_chain(qs.PLANS["smoke"], tmp_path / "qs")
    state = qs.prepare_folder(chain.out, {"plan": "smoke"}, fresh=False)
    calls: list[list[str]] = []

    def runner(argv):
        calls.append(list(argv))
        return 2 if len(calls) == 3 else 0

    lines: list[str] = []
    with pytest.raises(qs.StepFailed) as failed:
        qs.run_chain(chain, state, runner, lines.append)
    assert failed.value.code == 2
    saved = json.loads((chain.out / qs.STATE_FILE).read_text())
    assert list(saved["done"]) == [s.key for s in chain.steps[:2]]
    calls.clear()

    def leave_outputs(steps):                # what the real commands would have written
        for step in steps:
            target = chain.out / step.output.replace("*", "x")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("{}")

    leave_outputs(chain.steps[:2])           # the two finished steps left their outputs: they are skipped
    qs.run_chain(chain, saved, lambda argv: calls.append(list(argv)) or 0, lines.append)
    assert calls == [s.argv for s in chain.steps[2:]]
    leave_outputs(chain.steps[2:])
    # a step marked done whose results were deleted since runs again, alone
    (chain.out / chain.steps[0].output).unlink()
    calls.clear()
    qs.run_chain(chain, saved, lambda argv: calls.append(list(argv)) or 0, lines.append)
    assert calls == [chain.steps[0].argv] and any("results are gone" in line for line in lines)


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
    _check_chain_output(out_dir, out, qs.PLANS["quick"])
