"""The quickstart: the whole chain (train, distil, JPEG-DL, attack, transfer, adversarial RSA, report)
once, into one folder.

Every step is a ``robust-kd`` command that a user could type; it is printed before it runs and runs in
this process through the same entry point. A step is marked done in ``<out>/quickstart.json`` only once
its command succeeded, so a rerun skips finished steps; a step cut off half-way resumes inside its own
verb (training from its last epoch, an attack from its last finished batch).
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .errors import UserError
from .fileio import write_json

STATE_FILE = "quickstart.json"


@dataclass(frozen=True)
class Plan:
    """What the chain trains and how hard it attacks. Sizes are numbers of test points."""

    name: str
    description: str
    data: str
    recipe: str
    teacher: str
    student: str
    jpegdl: str
    methods: tuple[str, ...] = ("kd", "wttm")
    train_overrides: tuple[str, ...] = ()
    suites: tuple[tuple[str, int | None, str], ...] = (("fast", 200, "2/255,4/255,8/255"), ("autoattack", 100, "8/255"))
    eps: str = "8/255"                     # transfer and RSA
    transfer_n: int = 200
    rsa_n: int = 40
    rsa_resamples: int = 200
    rsa_queries: int = 1000
    needs_data_root: bool = False


PLANS: dict[str, Plan] = {}


def register_plan(plan: Plan) -> Plan:
    PLANS[plan.name] = plan
    return plan


register_plan(Plan(
    name="quick",
    description="a few minutes on a 2-core CPU: the embedded Fashion-MNIST subset, 2-epoch runs, small attacks "
                "(autoattack_quick: AutoAttack's attacks with smaller budgets)",
    data="embedded", recipe="quick", teacher="resnet20", student="resnet8", jpegdl="jpegdl_resnet8",
    train_overrides=("epochs=2",), suites=(("fast", 100, "2/255,4/255,8/255"), ("autoattack_quick", 25, "8/255")),
    transfer_n=100, rsa_n=40, rsa_resamples=200, rsa_queries=500,
))
register_plan(Plan(
    name="full",
    description="the published setting on a GPU: CIFAR-100 (--data-root), the standard 240-epoch recipe, "
                "resnet32x4 -> resnet8x4, AutoAttack standard on the whole test set",
    data="cifar100", recipe="standard", teacher="resnet32x4", student="resnet8x4", jpegdl="jpegdl_resnet8x4",
    suites=(("fast", None, "2/255,4/255,8/255"), ("autoattack", None, "8/255")), transfer_n=1000, rsa_n=200,
    rsa_resamples=1000, rsa_queries=1000, needs_data_root=True,
))
register_plan(Plan(
    name="smoke",
    description="seconds: tiny synthetic data and 1-epoch runs, to check the chain end to end (CI runs it)",
    data="synthetic", recipe="quick", teacher="resnet8", student="resnet8", jpegdl="jpegdl_resnet8",
    train_overrides=("epochs=1", "batch_size=32", "data.options.size=16", "data.options.train=96",
                     "data.options.test=48", "data.options.classes=4"),
    suites=(("fast", 16, "2/255,8/255"), ("autoattack_quick", 8, "8/255")), transfer_n=16, rsa_n=12, rsa_resamples=20,
    rsa_queries=50,
))


@dataclass
class Step:
    key: str
    title: str
    argv: list[str]
    output: str = ""          # a glob under the quickstart folder that the finished step leaves behind

    def finished(self, out: Path) -> bool:
        return not self.output or any(out.glob(self.output))


@dataclass
class Chain:
    plan: Plan
    out: Path
    steps: list[Step] = field(default_factory=list)
    report: Path = Path()
    owned: list[str] = field(default_factory=list)     # what the chain writes directly under ``out``


def build_chain(plan: Plan, out: Path, *, data: str | None = None, data_root: str | None = None,
                device: str = "auto") -> Chain:
    """The steps of ``plan`` with their exact command lines, writing everything under ``out``."""
    data = data or plan.data
    if plan.needs_data_root and data_root is None and data in ("cifar10", "cifar100", "mnist", "imagefolder"):
        raise UserError(f"the {plan.name} quickstart trains on {data}, which is read from a folder: give "
                        f"--data-root <folder with the {data} files> (or --data embedded for the built-in set)")
    where = ["--data", data] + (["--data-root", data_root] if data_root else [])
    common = ["--runs-dir", str(out), "--device", device]
    train_args = ["--recipe", plan.recipe, *where, *common]
    chain = Chain(plan, out, report=out / "report" / "report.html")
    teacher = f"teacher_{plan.teacher}"
    students = [f"student_{plan.student}_{m}" for m in plan.methods]
    jpegdl = f"student_{plan.jpegdl}"
    runs = [teacher, *students, jpegdl]

    chain.owned = [*runs, "transfer", "report", STATE_FILE]

    chain.steps.append(Step("train-teacher", f"train the teacher ({plan.teacher})",
                            ["train", "--model", plan.teacher, "--name", teacher, *train_args,
                             *plan.train_overrides], f"{teacher}/summary.json"))
    for method, name in zip(plan.methods, students):
        chain.steps.append(Step(f"distill-{method}", f"distil {plan.student} from the teacher with {method.upper()}",
                                ["distill", "--teacher", str(out / teacher), "--student", plan.student,
                                 "--method", method, "--name", name, *train_args, *plan.train_overrides],
                                f"{name}/summary.json"))
    chain.steps.append(Step("train-jpegdl", f"train the JPEG-DL student ({plan.jpegdl})",
                            ["train", "--model", plan.jpegdl, "--name", jpegdl, *train_args, *plan.train_overrides],
                            f"{jpegdl}/summary.json"))
    attack_where = ["--data-root", data_root] if data_root else []
    for number, (suite, n, eps) in enumerate(plan.suites):
        # the last suite's examples go into the report (not on the full test set: a file of every broken point)
        examples = ["--save-examples"] if number == len(plan.suites) - 1 and n else []
        for run in runs:
            size = ["--n", str(n)] if n else []
            chain.steps.append(Step(f"attack-{suite}-{run}", f"attack {run} with the {suite} suite (eps {eps})",
                                    ["attack", "--model", str(out / run), "--suite", suite, "--eps", eps, *size,
                                     *examples, *attack_where, *common], f"{run}/attacks/{suite}-*.json"))
    models = ",".join(str(out / r) for r in runs)
    chain.steps.append(Step("transfer", "transfer matrix among the four models",
                            ["transfer", "--source", models, "--target", models, "--eps", plan.eps,
                             "--n", str(plan.transfer_n), "--out", str(out / "transfer" / "matrix.json"),
                             *attack_where, *common], "transfer/matrix.json"))
    chain.steps.append(Step("rsa-adversarial", f"RSA of clean vs white-box vs black-box examples ({students[0]})",
                            ["rsa-adversarial", "--model", str(out / students[0]), "--stimuli", "test",
                             "--n", str(plan.rsa_n), "--eps", plan.eps, "--queries", str(plan.rsa_queries),
                             "--n-bootstrap", str(plan.rsa_resamples), "--n-permutations", str(plan.rsa_resamples),
                             *common], f"{students[0]}/rsa/*/rsa_adversarial.json"))
    chain.steps.append(Step("report", "write the report",
                            ["report", "--out", str(out / "report"), "--title", f"robust-kd quickstart ({plan.name})",
                             "--", str(out)], "report/report.html"))     # '--': a folder named '-x' is no option
    return chain


def check_plan(plan: Plan, *, data: str | None = None, data_root: str | None = None, device: str = "auto") -> None:
    """Everything the chain's steps will need, checked before the first starts (a mistake in a late step's
    settings used to surface only after the earlier steps had run, and left a quickstart folder that a
    rerun with the mistake fixed would not accept): the device, every training's recipe, model and options,
    the data (loaded once), every distillation method, every suite and eps."""
    from .device import resolve_device
    from .distill.setup import resolve_distill_config
    from .robustness import parse_eps, suite_source
    from .train import load_data_once, resolve_train_config

    resolve_device(device)
    settings = {"data": {"name": data or plan.data, "root": data_root}, "device": device}
    overrides = list(plan.train_overrides)
    configs = [resolve_train_config(plan.recipe, {**settings, "model": model}, overrides)
               for model in (plan.teacher, plan.jpegdl)]
    for method in plan.methods:
        resolve_distill_config(plan.recipe, method, plan.teacher, {**settings, "model": plan.student}, overrides)
    for suite, _, eps in plan.suites:
        suite_source(suite)
        parse_eps(eps)
    parse_eps(plan.eps)
    load_data_once(configs[0])


def command_line(step: Step) -> str:
    return "robust-kd " + " ".join(shlex.quote(a) for a in step.argv)


# ------------------------------------------------------------------------------------------------ state
def _read_state(out: Path) -> dict | None:
    path = out / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UserError(f"'{path}' is damaged; rerun with --fresh to start the quickstart over") from None
    if not isinstance(state, dict) or not isinstance(state.get("done"), dict):
        raise UserError(f"'{path}' is not a quickstart state file; rerun with --fresh or choose another --out")
    return state


def prepare_folder(out: Path, settings: dict, fresh: bool, owned: Sequence[str] = ()) -> dict:
    """The state of an earlier quickstart in ``out`` to resume, or a new one. ``fresh`` first deletes what
    the chain writes there (``owned``: its run folders, transfer/, report/, the state file) and nothing
    else; only a quickstart folder (one holding quickstart.json) or an empty one is written to."""
    if out.exists() and not out.is_dir():
        raise UserError(f"'{out}' is a file; give --out a folder")
    ours = (out / STATE_FILE).is_file()
    if out.is_dir() and any(out.iterdir()) and not ours:
        raise UserError(f"'{out}' exists and is not a quickstart folder (no {STATE_FILE}); choose another --out")
    if fresh and ours:
        for name in {*owned, STATE_FILE}:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    state = _read_state(out)
    if state is not None and state.get("settings") != settings:
        raise UserError(f"'{out}' holds a quickstart with other settings ({state.get('settings')}); rerun with "
                        "--fresh to start over, or give another --out")
    if state is None:
        state = {"settings": settings, "done": {}, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / STATE_FILE, state)
    return state


Runner = Callable[[Sequence[str]], int]
Say = Callable[[str], None]


def run_chain(chain: Chain, state: dict, runner: Runner, say: Say) -> float:
    """Run the steps not yet done, in order; returns the seconds spent in this call. A failed step
    stops the chain with exit code of its command (its own message has been printed)."""
    total = len(chain.steps)
    spent = 0.0
    for k, step in enumerate(chain.steps, 1):
        head = f"[{k}/{total}] {step.title}"
        if step.key in state["done"]:
            if step.finished(chain.out):
                say(f"{head}: done earlier ({state['done'][step.key]:.0f} s), skipped")
                continue
            say(f"{head}: done earlier, but its results are gone: running it again")
        say(f"\n{head}\n$ {command_line(step)}")
        start = time.perf_counter()
        code = runner(step.argv)
        seconds = time.perf_counter() - start
        spent += seconds
        if code != 0:
            print(f"robust-kd: quickstart stopped at step {k}/{total} ({step.title}); finished steps are kept: "
                  "fix the cause above and rerun the same command to resume", file=sys.stderr)
            raise StepFailed(code)
        state["done"][step.key] = round(seconds, 2)
        state["seconds"] = round(sum(state["done"].values()), 2)
        write_json(chain.out / STATE_FILE, state)
        say(f"[{k}/{total}] done in {seconds:.1f} s (quickstart so far {spent:.0f} s)")
    return spent


class StepFailed(Exception):
    """A step's command failed; ``code`` is its exit code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code
