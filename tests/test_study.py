"""robust-kd study: plans and their mistakes, the job graph, the local runner (resume, keep going, side by
side, the lock, interruption), --status, the Slurm scripts, and the study report's headline."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from robust_kd import study as st
from robust_kd.cli import main
from robust_kd.errors import UserError
from robust_kd.study import launch
from robust_kd.study import slurm as sl
from robust_kd.study.folder import STATE_DIR, StudyFolder

SMOKE = ["--device", "cpu"]


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def verdicts(out: Path) -> dict[str, object]:
    """Every number a study's results hold that must not depend on how it was run: each model's clean
    accuracy, and each evaluation's robust accuracy and per-point verdicts."""
    found: dict[str, object] = {}
    for summary in sorted(out.glob("*/summary.json")):
        found[summary.parent.name] = json.loads(summary.read_text())["final_test_accuracy"]
    for file in sorted(out.glob("*/attacks/*.json")):
        for ev in json.loads(file.read_text())["evaluations"]:
            key = f"{file.parent.parent.name}/{file.name}/{ev.get('variant')}/{ev['eps']}"
            found[key] = (ev["robust_acc"], ev["points"]["robust"], ev["points"]["broken_by"])
    return found


TINY = """study: tiny
data: synthetic
overrides: [epochs=1, batch_size=32, data.options.size=16, data.options.train=96, data.options.test=48,
            data.options.classes=4]
pairs:
  - {teacher: resnet8, student: resnet8}
methods: [kd, wttm]
attacks:
  - {suite: fast, n: 16, eps: [2/255, 8/255]}
"""


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory) -> tuple[Path, Path]:
    """The issue's tiny study (synthetic data, two students, one suite: 7 jobs) run once by the local runner,
    one job at a time in this process; returns (plan file, study folder)."""
    folder = tmp_path_factory.mktemp("tiny")
    plan = folder / "tiny.yaml"
    plan.write_text(TINY)
    assert main(["study", str(plan), "--out", str(folder / "local"), *SMOKE]) == 0
    return plan, folder / "local"


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory) -> Path:
    """The smoke plan run once by the local runner, in this process (about 20 s)."""
    out = tmp_path_factory.mktemp("study") / "smoke"
    assert main(["study", "smoke", "--out", str(out), *SMOKE]) == 0
    return out


# ----------------------------------------------------------------------------------------------- plans
@pytest.mark.parametrize("name", st.shipped_plans())
def test_every_shipped_plan_expands_in_order_with_published_numbers_and_their_sources(name, capsys):
    plan = st.load_plan(name)
    the_study = st.expand(plan, st.Settings(Path("runs") / name))
    seen: set[str] = set()
    for job in the_study.jobs:               # every job comes after the jobs it needs
        assert set(job.needs) <= seen, job.id
        seen.add(job.id)
    assert the_study.jobs[-1].id == "report" and the_study.jobs[-1].after_all
    for model in the_study.models:
        number = model.published
        if number:
            assert 0 < number["top1"] < 100 and len(number["source"]) > 20, (model.run, number)
            assert number["source"] not in ("repdistiller", "ttm", "mdistiller", "ls"), "a source key left unresolved"
    published = [m for m in the_study.models if m.published]
    if name.endswith("cifar100"):          # the reproduction plans carry the papers' numbers
        assert plan.needs and published
        assert all(m.published for m in the_study.models if m.role == "student"
                   and m.method in ("kd", "ttm", "wttm", "dkd", "dkd_ls"))
    code, out, err = _run(capsys, "study", name, "--dry-run")
    assert code == 0, err
    assert out.count("\n  robust-kd ") == len(the_study.jobs)
    code, out, err = _run(capsys, "study", name, "--dry-run", "--slurm", "--partition", "gpu", "--gpus-per-job", "2")
    assert code == 0, err
    assert "#SBATCH --array=0-" in out and "#SBATCH --partition=gpu" in out and "#SBATCH --gres=gpu:2" in out


def test_the_ttm_plan_carries_the_papers_table():
    models = {m.run: m for m in st.expand(st.load_plan("ttm_wttm_cifar100"), st.Settings(Path("x"))).models}
    wttm = models["resnet8x4_wttm_from_resnet32x4_seed1"].published
    assert (wttm["top1"], wttm["std"]) == (76.06, 0.27) and "ICLR 2024" in wttm["source"]
    assert models["resnet32x4_seed0"].published["top1"] == 79.42 and models["resnet32x4_seed0"].role == "teacher"
    assert models["resnet8x4_seed2"].role == "baseline" and models["resnet8x4_seed2"].published["top1"] == 72.50
    assert "resnet32x4_seed1" not in models      # one teacher: the students of every seed learn from seed 0's


PLAN = """study: mine
data: synthetic
overrides: [epochs=1, data.options.size=16, data.options.train=32, data.options.test=16, data.options.classes=4]
pairs:
  - {teacher: resnet8, student: resnet8}
methods: [kd]
attacks:
  - {suite: fast, n: 8, eps: 8/255}
"""

BAD_PLANS = [
    ("an unknown key", PLAN.replace("methods:", "method:"), 6, r"unknown key 'method'.*did you mean 'methods'"),
    ("an unknown method", PLAN.replace("[kd]", "[kd, wtm]"), 6, r"unknown method 'wtm'; did you mean 'wttm'"),
    ("an unknown model", PLAN.replace("student: resnet8}", "student: resnet9}"), 5, r"unknown model 'resnet9'"),
    ("an unknown suite", PLAN.replace("suite: fast", "suite: fastt"), 8, r"suite 'fastt'"),
    ("a bad eps", PLAN.replace("eps: 8/255", "eps: 8/0"), 8, r"divides by zero"),
    ("an unknown data set", PLAN.replace("data: synthetic", "data: imagenet"), 2, r"unknown data set 'imagenet'"),
    ("a number without its source", PLAN.replace("student: resnet8}", "student: resnet8, published: {kd: {top1: 7}}}"),
     5, r"needs top1 .* and source"),
    ("a published label no method has", PLAN.replace(
        "student: resnet8}", "student: resnet8, published: {dkd: {top1: 7, source: x}}}"), 5, r"unknown key 'dkd'"),
    ("two methods with one label", PLAN.replace("[kd]", "[kd, {method: dkd, label: kd}]"), 6, r"labelled 'kd'"),
    ("a seed that is no number", PLAN + "seeds: [0, one]\n", 9, r"a seed must be a whole number"),
    ("no study name", PLAN.replace("study: mine\n", ""), 1, r"starts with 'study: <name>'"),
    ("RSA stimuli that are nowhere", PLAN + "rsa: {stimuli: rsa93}\n", 9, r"stimuli 'rsa93' is neither rsa92 nor"),
    ("a suite twice", PLAN + "  - {suite: fast, n: 8, eps: 2/255}\n", 9, r"appears twice"),
    ("an override the recipe has not", PLAN.replace("[epochs=1,", "[epoch=1,"), 3, r"unknown config key 'epoch'"),
    ("a method option out of range", PLAN.replace("[kd]", "[kd, {method: kd, label: hot, options: {temperature: -3}}]"),
     6, r"distill.options.temperature must lie in"),
]


@pytest.mark.parametrize("case", BAD_PLANS, ids=[c[0] for c in BAD_PLANS])
def test_a_mistake_in_a_plan_is_one_line_naming_the_plan_line_before_any_job(case, tmp_path, capsys):
    _, text, line, message = case
    plan = tmp_path / "plan.yaml"
    plan.write_text(text)
    code, out, err = _run(capsys, "study", str(plan), "--out", str(tmp_path / "out"), *SMOKE)
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"study plan '{plan}', line {line}: " in lines[0], lines
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "out").exists()


def test_a_plan_that_is_not_yaml_or_not_there_is_one_line(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text("study: [unclosed\n")
    code, _, err = _run(capsys, "study", str(plan), "--dry-run")
    assert code == 2 and "not valid YAML at line" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(capsys, "study", "quik", "--dry-run")
    assert code == 2 and "did you mean 'quick'" in err


# ------------------------------------------------------------------------------------------ the runner
def test_the_smoke_study_runs_every_job_and_a_rerun_skips_them(smoke_study, capsys):
    states = {f.stem: json.loads(f.read_text())["state"] for f in (smoke_study / STATE_DIR / "jobs").glob("*.json")}
    assert len(states) == 19 and set(states.values()) == {"done"}
    assert all((smoke_study / "logs" / f"{name}.log").stat().st_size > 0 for name in states)
    code, out, err = _run(capsys, "study", "smoke", "--out", str(smoke_study), *SMOKE)
    assert code == 0, err
    assert out.count("done earlier") == 19 and out.strip().endswith(f"report: {smoke_study / 'report/report.html'}")
    code, out, _ = _run(capsys, "study", "smoke", "--out", str(smoke_study), "--status")
    assert code == 0 and "19 jobs: 19 done" in out


def _fake_verbs(out: Path, fail: str = "", interrupt: str = ""):
    """Stands in for robust-kd's verbs: writes the file each job leaves behind, fails or is cut off where told."""
    calls: list[list[str]] = []

    def verb(argv):
        calls.append(list(argv))
        job = next(j for j in the_study.jobs if j.argv == list(argv))
        if fail and fail in job.id:
            return 2
        if interrupt and interrupt in job.id:
            raise KeyboardInterrupt
        target = out / job.output.replace("*", "x")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("{}")
        return 0

    the_study = st.expand(st.load_plan("smoke"), st.Settings(out, "cpu"))
    return the_study, verb, calls


def test_a_failed_job_blocks_only_what_needs_it_and_a_rerun_runs_what_is_left(tmp_path):
    out = tmp_path / "s"
    the_study, verb, calls = _fake_verbs(out, fail="distill/resnet8_wttm")
    lines: list[str] = []
    summary = st.run_local(the_study, lines.append, verb)
    assert [o.job.id for o in summary.failed] == ["distill/resnet8_wttm_from_resnet8_seed0"]
    blocked = sorted(j.id for j in summary.blocked)
    assert blocked == ["attack/autoattack_quick/resnet8_wttm_from_resnet8_seed0",
                       "attack/fast/resnet8_wttm_from_resnet8_seed0", "rsa/resnet8_wttm_from_resnet8_seed0",
                       "transfer/matrix"]
    ran = {o.job.id for o in summary.outcomes}
    assert "report" in ran and "attack/fast/resnet8_kd_from_resnet8_seed0" in ran   # the rest went on
    assert any("FAILED (exit 2)" in line and "logs/distill__resnet8_wttm" in line for line in lines)
    status = "\n".join(st.status_lines(the_study, st.study_status(the_study, StudyFolder(out))))
    assert "1 failed, 4 blocked" in status and re.search(r"failed\s+distill/resnet8_wttm\S* +exit 2; log ", status)

    the_study, verb, calls = _fake_verbs(out)              # fixed: the same command runs what is left
    summary = st.run_local(the_study, lines.append, verb)
    assert sorted(o.job.id for o in summary.outcomes) == sorted(
        ["distill/resnet8_wttm_from_resnet8_seed0", *blocked, "report"])
    assert not summary.failed and not summary.blocked and len(summary.skipped) == 13


def test_an_interrupted_study_keeps_its_finished_jobs_and_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "s"
    the_study, verb, _ = _fake_verbs(out, interrupt="train/jpegdl")
    monkeypatch.setattr(st, "in_process", lambda run_verb: launch.in_process(verb))    # instead of the real verbs
    code, _, err = _run(capsys, "study", "smoke", "--out", str(out), *SMOKE)
    assert code == 130 and "finished jobs are saved, rerun the same command to resume" in err
    folder = StudyFolder(out)
    assert [folder.state(j.id).get("state") for j in the_study.jobs[:4]] == ["done", "done", "done", "interrupted"]
    the_study, verb, calls = _fake_verbs(out)
    monkeypatch.setattr(st, "in_process", lambda run_verb: launch.in_process(verb))
    code, _, err = _run(capsys, "study", "smoke", "--out", str(out), *SMOKE)
    assert code == 0, err
    assert calls[0][:3] == ["train", "--model", "jpegdl_resnet8"] and len(calls) == 16


def test_a_second_runner_on_the_same_study_refuses_in_one_line(tmp_path, capsys):
    out = tmp_path / "s"
    folder = StudyFolder(out)
    with folder.runner_lock("robust-kd study (the first)"):
        code, _, err = _run(capsys, "study", "smoke", "--out", str(out), *SMOKE)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "another runner is running the study" in err and "robust-kd study (the first), pid" in err
    assert not (out / "study.json").exists()


def test_another_study_in_the_same_folder_is_refused(smoke_study, tmp_path, capsys):
    code, _, err = _run(capsys, "study", "quick", "--out", str(smoke_study), "--dry-run")
    assert code == 0                       # a dry run writes nothing
    code, _, err = _run(capsys, "study", "quick", "--out", str(smoke_study), *SMOKE)
    assert code == 2 and "holds another study (study smoke" in err and "--fresh" in err


def test_jobs_side_by_side_give_the_same_results_as_one_at_a_time(tiny_study, tmp_path, capsys):
    plan, local_out = tiny_study
    out = tmp_path / "parallel"
    code, stdout, err = _run(capsys, "study", str(plan), "--out", str(out), "--jobs", "2", *SMOKE)
    assert code == 0, err
    assert stdout.count("started on cpu") == 7
    assert verdicts(out) == verdicts(local_out)


# ------------------------------------------------------------------------------------------------ Slurm
def test_slurm_stages_put_every_job_after_what_it_needs_and_tasks_run_the_local_runners_path(tmp_path, monkeypatch):
    the_study, verb, calls = _fake_verbs(tmp_path / "s")
    groups = sl.stages(the_study.jobs, done=set())
    assert [len(g) for g in groups] == [2, 8, 8, 1]      # trainings; distillations and first attacks; ...
    place = {job.id: k for k, group in enumerate(groups) for job in group}
    assert all(place[n] < place[j.id] for j in the_study.jobs for n in j.needs)
    folder = StudyFolder(the_study.settings.out)
    folder.prepare(the_study, fresh=False)
    text = sl.script(the_study, 1, 5, sl.SlurmOptions("gpu", 2, "01:00:00", 8, ("--account=abc",)))
    for line in ("#SBATCH --array=0-4", "#SBATCH --gres=gpu:2", "#SBATCH --time=01:00:00",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --account=abc", "--gpus-per-job 2 --slurm-task 1"):
        assert line in text
    assert sl.stages(the_study.jobs, done={j.id for j in groups[0]})[0] == groups[1]
    # a task: its job by SLURM_ARRAY_TASK_ID, through run_job; blocked when what it needs did not finish
    (folder.out / "slurm").mkdir()
    (folder.out / "slurm" / "stage1.txt").write_text("".join(f"{j.id}\n" for j in groups[1]))
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    assert sl.run_task(the_study, folder, 1, 1, launch.in_process(verb)) == 1
    assert folder.state(groups[1][0].id)["state"] == "blocked" and not calls
    (folder.out / "slurm" / "stage0.txt").write_text("".join(f"{j.id}\n" for j in groups[0]))
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    assert sl.run_task(the_study, folder, 0, 1, launch.in_process(verb)) == 0
    assert folder.state(groups[0][0].id)["state"] == "done"
    # while Slurm still holds a job of the study, neither runner starts it again
    folder.set_state(groups[1][1], "submitted", slurm="5_1")
    monkeypatch.setattr(sl, "queued_tasks", lambda: {"5_1"})
    with pytest.raises(UserError, match=r"1 jobs of the study .* still queued or running on Slurm \(5_1\)"):
        st.run_local(the_study, print, verb)
    assert launch.command(["train", "--model", "x"], gpus=2)[1:5] == ["-m", "torch.distributed.run", "--standalone",
                                                                       "--nproc-per-node=2"]


def test_slurm_without_sbatch_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    code, _, err = _run(capsys, "study", "smoke", "--out", str(tmp_path / "s"), "--slurm", *SMOKE)
    assert code == 2 and "sbatch is not on PATH" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------- report
def test_the_study_report_shows_every_model_failed_jobs_and_published_numbers(smoke_study, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(smoke_study, copy, ignore=shutil.ignore_patterns("*.lock"))
    study = json.loads((copy / "study.json").read_text())
    kd = next(m for m in study["models"] if m["method"] == "kd")
    kd["published"] = {"top1": 99.0, "std": 0.1, "source": "a <b>table</b>"}
    (copy / "study.json").write_text(json.dumps(study))
    for file in (copy / "resnet8_wttm_from_resnet8_seed0" / "attacks").glob("fast-*"):
        file.unlink()
    state = copy / STATE_DIR / "jobs" / "attack__fast__resnet8_wttm_from_resnet8_seed0.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "state": "failed", "code": 1}))
    assert main(["report", "--out", str(copy / "r"), "--", str(copy)]) == 0
    html = (copy / "r" / "report.html").read_text()
    headline = html.split("<h2>Study headline</h2>")[1].split("<h2>")[0]
    assert "class='sortable'" in headline and "<script>" in html and "data:image/png;base64," in headline
    rows = re.findall(r"<tr>(.*?)</tr>", headline)[1:]
    assert len(rows) == 4                                     # teacher, two students, JPEG-DL
    wttm = next(r for r in rows if "(wttm)" in r)
    assert wttm.count(">failed<") == 2                       # both fast columns
    kd_row = next(r for r in rows if "(kd)" in r)
    assert ">99.00 ± 0.10 [1]<" in kd_row and "⚠ outside" in kd_row
    assert "RSA to brain (best layer)" in headline and all(r.count("<td") == 12 for r in rows)
    assert "Published numbers: [1] a &lt;b&gt;table&lt;/b&gt;." in headline     # the source, escaped
    assert "attack/fast/resnet8_wttm_from_resnet8_seed0 (failed" in headline


# ---------------------------------------------------------------------------------- a real Slurm cluster
SLURM_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "slurm_local.sh"


def _sinfo_answers() -> bool:
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def slurm_cluster():
    """A one-node Slurm cluster on localhost: the one bash .ci/run started (SLURM_CONF), or one started here
    with scripts/slurm_local.sh where Debian's slurm-wlm and munge are installed; skipped only without them."""
    if os.environ.get("SLURM_CONF") and _sinfo_answers():
        yield os.environ["SLURM_CONF"]
        return
    if shutil.which("slurmctld") is None or shutil.which("munged") is None:
        pytest.skip("Debian packages slurm-wlm and munge are not installed (bash .ci/run installs them; by hand: "
                    "apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip("starting a Slurm cluster on localhost needs root (the daemons run as SlurmUser=root)")
    folder = tempfile.mkdtemp(prefix="rkd-slurm-")     # the system's temporary folder: munge's socket path is limited
    os.chmod(folder, 0o755)                                          # munged wants its socket's folders open
    result = subprocess.run(["bash", str(SLURM_SCRIPT), "up", folder], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "SLURM_LOCAL_PORT": "6917"})
    assert result.returncode == 0, f"the one-node Slurm cluster did not start: {result.stderr[-2000:]}"
    conf = result.stdout.strip().splitlines()[-1].split("=", 1)[1]
    try:
        yield conf
    finally:
        subprocess.run(["bash", str(SLURM_SCRIPT), "down", folder], capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_study_on_a_one_node_slurm_cluster_equals_the_local_runners(slurm_cluster, tiny_study, tmp_path,
                                                                    monkeypatch, capsys):
    plan, local_out = tiny_study
    monkeypatch.setenv("SLURM_CONF", slurm_cluster)
    out = tmp_path / "on-slurm"
    code, stdout, err = _run(capsys, "study", str(plan), "--out", str(out), "--slurm", "--time", "00:20:00", *SMOKE)
    assert code == 0, err
    assert stdout.count("submitted Slurm job array") == 4     # train; distil, attack the teacher; attack; report
    code, _, err = _run(capsys, "study", str(plan), "--out", str(out), *SMOKE)     # not twice at once
    assert code == 2 and "still queued or running on Slurm" in err
    the_study = st.expand(st.load_plan(str(plan)), st.Settings(out, "cpu"))
    folder = StudyFolder(out)
    deadline = time.time() + 900
    while time.time() < deadline:
        states = [s.state for s in st.study_status(the_study, folder)]
        if all(s in ("done", "failed", "blocked") for s in states):
            break
        time.sleep(2)
    logs = "\n".join(p.read_text()[-1500:] for p in (out / "logs").glob("slurm-*.out"))
    assert states == ["done"] * 7, f"{states}\n{logs}"
    assert verdicts(out) == verdicts(local_out)            # point for point, the same as the local runner's
    code, stdout, _ = _run(capsys, "study", str(plan), "--out", str(out), "--status")
    assert code == 0 and "7 jobs: 7 done" in stdout
    assert (out / "report" / "report.html").is_file()
