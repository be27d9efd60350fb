"""``robust-kd quickstart``: the study ``quick`` (configs/studies/quick.yaml) into runs/quickstart, ending
with its report: the same as ``robust-kd study quick --out runs/quickstart``."""

from __future__ import annotations

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
@click.option("--fresh", is_flag=True, help="Delete what the quickstart wrote and start over.")
@click.option("--dry-run", is_flag=True, help="Print the steps' commands and exit.")
def quickstart(full: bool, plan_name: str, out: str, data: str | None, data_root: str | None, device: str,
               fresh: bool, dry_run: bool) -> int:
    """Train a teacher, distil two students (KD, WTTM), train a JPEG-DL student, attack all four (fast and
    AutoAttack-style suites), build their transfer matrix, compare each model's layers with human IT (RSA),
    run the RSA of clean vs white-box vs black-box examples, and write the report; its path is the last line.

    The quickstart is the study 'quick' (configs/studies/quick.yaml; see robust-kd study). Every step prints
    the command it runs, so each can be rerun or varied by hand. Rerunning resumes where the last run
    stopped; --fresh starts over."""
    from .. import study as st
    from . import main
    from .study_cmd import finish_local

    if full and plan_name not in ("quick", "full"):
        raise click.UsageError("--full and --plan disagree; give one of them")
    plan = st.load_plan("full" if full else plan_name)
    the_study = st.expand(plan, st.Settings(Path(out), device, data, data_root))
    if dry_run:
        for k, job in enumerate(the_study.jobs, 1):
            print_line(f"[{k}/{len(the_study.jobs)}] {job.title}\n  {st.command_line(job.argv)}")
        return 0
    print_line(f"quickstart ({plan.name}: {plan.description}) into {out}")
    summary = st.run_local(the_study, print_line, main, fresh=fresh)
    jpegdl = next((m.run for m in the_study.models if m.role == "jpegdl"), None)
    teacher = next(m.run for m in the_study.models if m.role in ("teacher", "baseline"))
    hints = [f"  robust-kd attack --model {Path(out) / jpegdl} --suite autoattack --n 100"] if jpegdl else []
    hints.append(f"  robust-kd rsa --model {Path(out) / teacher} --stimuli rsa92 --brain-rdm rsa92")
    return finish_local(the_study, summary, "quickstart", tuple(hints))
