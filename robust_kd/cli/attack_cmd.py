"""``robust-kd attack`` and ``robust-kd transfer``: robustness of trained or pretrained models."""

from __future__ import annotations

from typing import Any

import click

from .. import console
from .output import StepProgress, print_json, print_line, print_table
from .params import ATTACK_NORM, NORM, SEED


def _robust_words(robust: int, total: int) -> str:
    return f"{robust}/{total} ({100 * robust / max(total, 1):.1f}%)"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(round(seconds), 1)} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def time_left_words(share: float, seconds: float) -> str:
    """The batch's time left at its pace so far, once that pace means something (some seconds and a
    few percent in). The share counts the work as if no point broke early, so this is at most."""
    if share < 0.02 or seconds < 3 or share >= 1:
        return ""
    return f"at most ~{_duration(seconds * (1 - share) / share)} left"


class AttackProgress:
    """Per-attack progress. On a terminal: a rich bar that moves with the work done in the batch in
    flight and shows the batch's share done, time left (at most) and forward passes. Piped (a log
    file, a cluster job): a line per finished attack, and at most one line per ``PIPED_EVERY``
    seconds in between, so that a long batch shows it is alive."""

    PIPED_EVERY = 60.0

    def __init__(self, variant: str = "") -> None:
        import time

        self.variant = variant
        self.bar = None
        self.task = None
        self.points = 0
        self.status = ""
        self.clock = time.monotonic
        self.last_line = self.clock()
        if console.interactive():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console.stderr(),
                                transient=False)
            self.bar.start()

    def _name(self, label: str) -> str:
        return f"{self.variant} · {label}" if self.variant and self.variant != "model" else label

    def _piped(self, text: str) -> None:
        """A line in piped mode, unless one was printed less than PIPED_EVERY seconds ago."""
        if self.bar is None and self.clock() - self.last_line >= self.PIPED_EVERY:
            self.last_line = self.clock()
            console.stderr().print(text, markup=False)

    def attack_started(self, label: str, points: int) -> None:
        self.points = points
        if self.bar is not None:
            self.task = self.bar.add_task(self._name(label), total=max(points, 1), status="")

    def points_done(self, label: str, done: int, robust: int, total: int) -> None:
        self.status = f"robust so far {_robust_words(robust, total)}"
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=done, status=self.status)
        self._piped(f"{self._name(label)}: {done}/{self.points} points attacked, {self.status}")

    def working(self, label: str, done: int, in_flight: int, forwards: int, robust: int, total: int,
                share: float = 0.0, seconds: float = 0.0) -> None:
        left = time_left_words(share, seconds)
        # an attack of one's own that does not report its work (attacks.work) shows none
        done_words = f"{share:.0%} of its work done{', ' + left if left else ''}, " if share > 0 else ""
        busy = f"batch of {in_flight} in flight, {done_words}{forwards:,} forward passes so far"
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=done + share * in_flight,
                            status=f"{self.status}{'; ' if self.status else ''}{busy}")
        self._piped(f"{self._name(label)}: {done}/{self.points} points attacked, {busy}; "
                    f"robust so far {_robust_words(robust, total)}")

    def attack_finished(self, record: Any, robust: int, total: int) -> None:
        self.status = ""
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=max(record.points_attacked, 1),
                            status=f"broke {record.points_broken}; robust {_robust_words(robust, total)}")
        else:
            self.last_line = self.clock()
            console.stderr().print(
                f"{self._name(record.label)}: attacked {record.points_attacked}, broke {record.points_broken}, "
                f"robust {_robust_words(robust, total)} in {record.seconds:.1f}s", markup=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class _VariantProgress:
    """Routes the evaluation's callbacks to a progress display labelled with the current variant."""

    def __init__(self) -> None:
        self.current = AttackProgress()

    def on_variant(self, label: str, note: str) -> None:
        self.current.close()
        self.current = AttackProgress(label)
        if label != "model":
            console.stderr().print(f"{label}: {note}", markup=False)

    def notify(self, text: str) -> None:
        console.stderr().print(text, markup=False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.current, name)


@click.command()
@click.option("--model", "-m", "model_spec", metavar="NAME|CHECKPOINT|RUN",
              help="An architecture (its newest run under --runs-dir), a checkpoint, a run folder or the name of "
                   "one under --runs-dir, or a pretrained "
                   "model (autoattack_resnet18_cifar10).")
@click.option("--suite", "-s", default="fast", show_default=True, metavar="NAME|YAML",
              help="autoattack, autoattack_quick, pgd, fast, blackbox, adaptive, transfer (jpegdl_* models), "
                   "or a YAML suite file; --list shows them all.")
@click.option("--eps", metavar="EPS[,EPS...]", help="Radius in [0, 1] pixel units, e.g. 8/255; a list gives a curve. "
                                                     "Default: 8/255 (Linf) or 0.5 (L2).")
@click.option("--norm", type=ATTACK_NORM, default="Linf", show_default=True,
              help="Linf, L2, or L1 (the AutoAttack suites' attacks only: APGD, APGD-T, FAB, FAB-T, Square).")
@click.option("--n", "n", type=int, help="Number of test points (the first n). Default: all.")
@click.option("--data", "-d", metavar="NAME", help="Data set; default: the one the model was trained on.")
@click.option("--data-root", metavar="FOLDER", help="Folder of the data set (e.g. a CIFAR-10 folder).")
@click.option("--batch-size", type=int, help="Points attacked together. Default: 64 on CPU, 256 on CUDA. It never "
                                             "changes a verdict; a rerun resumes inside the batch in flight only "
                                             "with the same batch size.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--runs-dir", default="runs", show_default=True, help="Where model names are looked up.")
@click.option("--eot", type=int, default=0, show_default=True,
              help="Suite 'adaptive': also attack through the mean over N forward passes (for randomised models).")
@click.option("--fresh", is_flag=True,
              help="Start over instead of resuming an earlier evaluation of the same settings.")
@click.option("--convergence-check/--no-convergence-check", default=True, show_default=True,
              help="After the suite, run its first iterative attack with 5x the steps on up to 32 points it left "
                   "robust, and flag the result if that breaks more than 0.5% of all points.")
@click.option("--save-examples", is_flag=True,
              help="Also write the broken points' adversarial examples beside the results: "
                   "<results>.<variant>.<eps>.examples.npz and a figure of the first eight (.png).")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="What the attacks compute in. bf16 is 2-3x faster per pass on GPUs and on CPUs with AMX or "
                   "AVX512-BF16; verdicts are still decided in fp32, and the convergence check runs in fp32.")
@click.option("--engine", type=click.Choice(["ours", "reference"]), default="ours", show_default=True,
              help="Who computes the attacks: ours (faster), or the reference packages (pyautoattack for APGD, "
                   "APGD-T, FAB-T and Square; torchattacks for PGD, FGSM and CW) on the same batches, with our "
                   "verdicts, resume and results file (named ...-reference.json).")
@click.option("--cross-check", is_flag=True,
              help="Also run the other engine on the same points and report both robust accuracies, both times "
                   "and every point whose verdict differs (flag engines_disagree).")
@click.option("--list", "list_suites", is_flag=True, help="List the suites and attacks and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print the results JSON instead of tables.")
def attack(model_spec: str | None, suite: str, eps: str | None, norm: str, n: int | None, data: str | None,
           data_root: str | None, batch_size: int | None, seed: int, device: str, runs_dir: str, eot: int, fresh: bool,
           convergence_check: bool, save_examples: bool, precision: str, engine: str, cross_check: bool,
           list_suites: bool, as_json: bool) -> None:
    """Evaluate robustness with an attack suite, the AutoAttack way (per-point worst case).

    Results go to <run>/attacks/<suite>-<norm>-<eps>-n<N>-seed<S>.json as the evaluation goes;
    rerunning the same command resumes it. For jpegdl_* models both the soft and the hard (BPDA)
    JPEG layer are attacked, with transfer from the network without its JPEG layer.

    Example: robust-kd attack --model jpegdl_resnet8x4 --suite autoattack --n 200
    """
    import attacks

    from ..device import resolve_device
    from ..errors import UserError
    from ..robustness import AttackRun, parse_eps, suite_source
    from ..targets import resolve_model

    if list_suites:
        _print_catalogue()
        return
    if not model_spec:
        raise UserError("--model is required: an architecture name, a checkpoint, a run folder or "
                        "autoattack_resnet18_cifar10 (e.g. robust-kd attack --model autoattack_resnet18_cifar10)")
    if eot < 0:
        raise UserError(f"--eot must be 0 or a number of samples, got {eot}")
    if eot and suite != "adaptive":
        raise UserError(f"--eot applies to suite 'adaptive' only (suite '{suite}' would ignore it); "
                        "add --suite adaptive or drop --eot")
    source, eps_values = suite_source(suite), parse_eps(eps)
    if not isinstance(source, str):     # a suite file: its mistakes are said before the model loads
        try:
            attacks.suite_from_mapping(source, eps=(eps_values or [attacks.DEFAULT_EPS[norm]])[0],
                                              norm=norm, seed=seed)
        except attacks.AttackError as err:
            raise UserError(str(err)) from None
    resolve_device(device)                   # a device this machine lacks: said before any work
    target = resolve_model(model_spec, runs_dir)
    run = AttackRun(target, source, eps_values, norm, n, seed, batch_size, data, data_root, device,
                    fresh, eot, convergence_check, save_examples, precision, engine, cross_check)
    progress = _VariantProgress()
    console.stderr().print(f"{target.name}: {target.source}", markup=False)
    try:
        path, content = run.execute(progress=progress, on_variant=progress.on_variant, notify=progress.notify)
    finally:
        progress.current.close()
    if as_json:
        print_json(content)
        return
    _print_results(content)
    for evaluation in content["evaluations"]:
        examples = evaluation.get("examples")
        if examples:
            shown = f" (figure: {path.parent / examples['figure']})" if examples["figure"] else ""
            print_line(f"examples [{evaluation['variant']}, eps {evaluation['eps']}]: {examples['points']} in "
                       f"{path.parent / examples['file']}{shown}")
    print_line(f"results: {path}")


def _pct(value: float) -> str:
    return f"{value:.2f}"


def _precision_words(content: dict[str, Any]) -> str:
    precision = content.get("precision", "fp32")
    engine = ", computed by the reference packages" if content.get("engine", "ours") == "reference" else ""
    return engine + ("" if precision == "fp32" else f", attacks in {precision}, verdicts in fp32")


def _print_results(content: dict[str, Any]) -> None:
    import attacks

    rows = []
    for e in content["evaluations"]:
        acc = e.get("autoattack_acc", e.get("robust_acc"))
        rows.append((e["variant"], e["eps"], e["n_examples"], _pct(e["clean_acc"]), _pct(acc),
                     f"{e['seconds']:.1f}", len(e["flags"])))
    print_table(f"{content['name']} · suite {content['suite']} · {content['norm']} · {content['data']['name']} "
                f"(seed {content['seed']}, {content['device']}{_precision_words(content)})",
                ["variant", "eps", "points", "clean %", "robust %", "seconds", "flags"], rows,
                right=("points", "clean %", "robust %", "seconds", "flags"))
    attack_rows = []
    for e in content["evaluations"]:
        for a in e["attacks"]:
            attack_rows.append((e["variant"], e["eps"], a["label"], a["points_attacked"], a["points_broken"],
                                _pct(100 * a["robust_accuracy_after"]), a["forwards"], a["backwards"],
                                f"{a['seconds']:.1f}"))
    print_table("per attack (each on the points the earlier ones left robust)",
                ["variant", "eps", "attack", "attacked", "broken", "robust after %", "forwards", "backwards",
                 "seconds"],
                attack_rows, right=("attacked", "broken", "robust after %", "forwards", "backwards", "seconds"))
    for e in content["evaluations"]:
        line = attacks.convergence_words(e.get("convergence"))
        if line:
            print_line(f"convergence [{e['variant']}, eps {e['eps']}]: {line}")
        if e.get("cross_check"):
            print_line(f"cross-check [{e['variant']}, eps {e['eps']}]: {attacks.cross_check_words(e['cross_check'])}")
    for e in content["evaluations"]:
        for flag in e["flags"]:
            console.stdout().print(f"FLAG [{e['variant']}, eps {e['eps']}] {flag['code']}: {flag['message']}",
                                   markup=False, style="bold yellow")
    if content.get("suite_caveat"):
        console.stdout().print(f"NOTE suite {content['suite']}: {content['suite_caveat']}", markup=False,
                               style="bold yellow")


def _print_catalogue() -> None:
    import attacks

    from ..robustness import shipped_suites

    registered = [(name, " ".join((attacks.SUITES[name].__doc__ or "").replace("``", "").split()))
                  for name in attacks.list_suites()]
    files = [(name, " ".join(str(data.get("description") or data.get("caveat") or f"suite file {path}").split()))
             for name, (path, data) in shipped_suites().items() if name not in attacks.SUITES]
    print_table("suites", ["name", "what it runs"], registered + files)
    print_table("attacks (for YAML suites)", ["name", "norms", "settings"],
                [(name, "/".join(cls.norms), ", ".join(attacks.setting_names(cls)))
                 for name, cls in sorted(attacks.ATTACKS.items())])


@click.command()
@click.option("--source", "sources", required=True, metavar="A,B,...",
              help="Models the adversarial examples are made on (names, checkpoints or run folders).")
@click.option("--target", "targets", required=True, metavar="C,D,...", help="Models they are judged on.")
@click.option("--eps", default=None, metavar="EPS", help="Default: 8/255 (Linf) or 0.5 (L2).")
@click.option("--norm", type=NORM, default="Linf", show_default=True)
@click.option("--steps", type=int, default=20, show_default=True, help="MI-FGSM steps on each source.")
@click.option("--n", "n", type=int, default=500, show_default=True)
@click.option("--data", "-d", metavar="NAME", help="Data set; default: the first source's.")
@click.option("--data-root", metavar="FOLDER")
@click.option("--batch-size", type=int, help="Default: 64 on CPU, 256 on CUDA.")
@click.option("--device", default="auto", show_default=True)
@click.option("--runs-dir", default="runs", show_default=True)
@click.option("--out", metavar="JSON",
              help="Where to write the matrix; default: runs/transfer/<sources>-to-<targets>.json")
@click.option("--jpeg-gradient", type=click.Choice(["identity", "soft"]), default="identity", show_default=True,
              help="How a JPEG-DL source is differentiated: its JPEG layer as the identity (BPDA), or through the "
                   "soft quantizer, whose gradients mislead (2-3x lower success measured).")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="What the sources compute in while the examples are made (bf16: autocast, faster where the "
                   "hardware has bf16 units); the targets judge them in fp32.")
@click.option("--json", "as_json", is_flag=True)
def transfer(sources: str, targets: str, eps: str | None, norm: str, steps: int, n: int, data: str | None,
             data_root: str | None, batch_size: int | None, device: str, runs_dir: str, out: str | None,
             jpeg_gradient: str, precision: str, as_json: bool) -> None:
    """Transfer matrix: success rate of examples made on each source against each target.

    Example: robust-kd transfer --source resnet32x4,resnet8x4 --target resnet8x4,jpegdl_resnet8x4 --n 200
    """
    import attacks

    from ..transfer_run import TransferRun

    n_given = click.get_current_context().get_parameter_source("n") != click.core.ParameterSource.DEFAULT
    run = TransferRun(sources=[s for s in sources.split(",") if s], targets=[t for t in targets.split(",") if t],
                      eps=eps, norm=norm, steps=steps, n=n, n_given=n_given, data=data, data_root=data_root,
                      batch_size=batch_size, device=device, runs_dir=runs_dir, out=out, jpeg_gradient=jpeg_gradient,
                      precision=precision)
    bars = StepProgress()      # a bar per source on a terminal, a line per finished source when piped
    try:
        path, matrix = run.execute(progress=lambda source, done, total: bars(f"examples made on {source}", done, total),
                                   notify=lambda text: console.stderr().print(text, markup=False))
    finally:
        bars.close()
    if as_json:
        print_json(matrix)
        return
    norm, eps_text, target_names = matrix["norm"], attacks.eps_label(matrix["eps"], matrix["norm"]), matrix["targets"]
    print_table(f"transfer success rate % ({norm}, eps {eps_text}, {matrix['n_examples']} points of {matrix['data']}"
                f"{'' if precision == 'fp32' else f', made in {precision}'}; rows: source, columns: target; "
                "diagonal: white-box)",
                ["source \\ target", *target_names],
                [(s, *(f"{100 * matrix['cells'][s][t]['success_rate']:.1f}" for t in target_names))
                 for s in matrix["sources"]],
                right=tuple(target_names))
    print_line(f"matrix: {path}")
