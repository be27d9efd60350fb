"""``robust-kd quickstart``: the whole chain once, on the embedded data, ending with a report."""

from __future__ import annotations

import time
from pathlib import Path

import click

from .output import print_line


@click.command(epilog="""\b
Examples:
  robust-kd quickstart                                   # about 4 minutes on a 2-core CPU
  robust-kd quickstart --full --data-root ~/data/cifar-100-python --device cuda
  robust-kd quickstart --plan smoke --out runs/smoke    # seconds: checks the chain
  robust-kd quickstart --dry-run                         # print the commands only
""")
@click.option("--full", is_flag=True, help="The published setting on a GPU (same as --plan full).")
@click.option("--plan", "plan_name", type=click.Choice(["quick", "full", "smoke"]), default="quick",
              show_default=True, help="quick: a few CPU minutes; full: CIFAR-100, standard recipes; smoke: seconds.")
@click.option("--out", default="runs/quickstart", show_default=True, metavar="FOLDER",
              help="Folder for every run, result and the report.")
@click.option("-d", "--data", metavar="NAME", help="Another data set than the plan's (see 'robust-kd data').")
@click.option("--data-root", metavar="FOLDER", help="Folder of the data set (needed by --full).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--fresh", is_flag=True, help="Delete the quickstart folder and start over.")
@click.option("--dry-run", is_flag=True, help="Print the steps' commands and exit.")
def quickstart(full: bool, plan_name: str, out: str, data: str | None, data_root: str | None, device: str,
               fresh: bool, dry_run: bool) -> None:
    """Train a teacher, distil two students (KD, WTTM), train a JPEG-DL student, attack all four (fast and
    AutoAttack-style suites), build their transfer matrix, run the RSA of clean vs white-box vs black-box
    examples, and write the report; its path is the last line.

    Every step prints the command it runs, so each can be rerun or varied by hand. Rerunning resumes
    where the last run stopped; --fresh starts over."""
    from .. import quickstart as qs
    from ..paths import check_folder
    from . import main

    if full and plan_name not in ("quick", "full"):
        raise click.UsageError("--full and --plan disagree; give one of them")
    plan = qs.PLANS["full" if full else plan_name]
    folder = Path(out)
    chain = qs.build_chain(plan, folder, data=data, data_root=data_root, device=device)
    if dry_run:
        for k, step in enumerate(chain.steps, 1):
            print_line(f"[{k}/{len(chain.steps)}] {step.title}\n  {qs.command_line(step)}")
        return
    check_folder(folder, "--out")
    qs.check_plan(plan, data=data, data_root=data_root, device=device)
    settings = {"plan": plan.name, "data": data or plan.data, "data_root": data_root}
    state = qs.prepare_folder(folder, settings, fresh, chain.owned)
    print_line(f"quickstart ({plan.name}: {plan.description}) into {folder}")
    start = time.perf_counter()
    try:
        spent = qs.run_chain(chain, state, main, print_line)
    except qs.StepFailed as failed:
        raise click.exceptions.Exit(failed.code) from None
    total = state.get("seconds", spent)
    jpegdl_run = folder / f"student_{plan.jpegdl}"
    print_line(f"\nquickstart finished: {len(chain.steps)} steps, {total:.0f} s of work in all "
               f"({time.perf_counter() - start:.0f} s in this call). Next, for example:\n"
               f"  robust-kd attack --model {jpegdl_run} --suite autoattack --n 100\n"
               f"  robust-kd rsa --model {folder / f'teacher_{plan.teacher}'} --stimuli rsa92 --brain-rdm rsa92")
    print_line(f"report: {chain.report}")
