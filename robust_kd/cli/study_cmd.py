"""``robust-kd study PLAN``: a grid of teachers, students, methods and seeds, on this machine or on Slurm."""

from __future__ import annotations

import time
from pathlib import Path

import click

from .output import print_line


def _positive(ctx, param, value):
    if value is not None and value < 1:
        raise click.BadParameter("must be 1 or more")
    return value


@click.command(epilog="""\b
Examples:
  robust-kd study quick                                  # configs/studies/quick.yaml: a few CPU minutes
  robust-kd study configs/studies/quick.yaml --dry-run   # the jobs, their order and commands
  robust-kd study my_plan.yaml --jobs 4                  # 4 jobs side by side (one GPU each where there are 4)
  robust-kd study my_plan.yaml --status                  # done, running, failed, waiting
  robust-kd study ttm_wttm_cifar100 --data-root ~/data/cifar-100-python --slurm --partition gpu \\
      --gpus-per-job 1 --time 12:00:00                   # sbatch job arrays, one per stage
""")
@click.argument("plan_name", metavar="PLAN")
@click.option("--out", metavar="FOLDER", help="The study folder (default: runs/<the plan's study name>).")
@click.option("--dry-run", is_flag=True, help="Print the jobs (with --slurm: the sbatch scripts) and exit.")
@click.option("--status", is_flag=True, help="Say which jobs are done, running, failed or waiting, and exit.")
@click.option("--jobs", "-j", type=int, default=1, show_default=True, callback=_positive,
              help="Jobs side by side (each in its own process; one GPU each where there are several).")
@click.option("--fresh", is_flag=True, help="Delete what the study wrote and start over.")
@click.option("-d", "--data", metavar="NAME", help="Another data set than the plan's.")
@click.option("--data-root", metavar="FOLDER", help="Folder of the data set (CIFAR plans need it).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--slurm", is_flag=True, help="Submit the jobs to Slurm as sbatch job arrays instead of running them.")
@click.option("--partition", metavar="P", help="Slurm partition.")
@click.option("--gpus-per-job", type=click.IntRange(0), default=0, show_default=True,
              help="GPUs per Slurm job (torchrun if > 1).")
@click.option("--time", "time_limit", metavar="T", help="Slurm time limit per job, e.g. 12:00:00.")
@click.option("--cpus-per-job", type=int, callback=_positive, help="CPUs per Slurm job.")
@click.option("--sbatch-arg", multiple=True, metavar="ARG", help="Another #SBATCH line, e.g. --account=abc.")
@click.option("--slurm-task", type=int, hidden=True, help="Inside a Slurm array task: run this task's job.")
def study(plan_name: str, out: str | None, dry_run: bool, status: bool, jobs: int, fresh: bool, data: str | None,
          data_root: str | None, device: str, slurm: bool, partition: str | None, gpus_per_job: int,
          time_limit: str | None, cpus_per_job: int | None, sbatch_arg: tuple[str, ...],
          slurm_task: int | None) -> int:
    """Run the study PLAN (a YAML file, or a plan in configs/studies/): train its teachers and models,
    distil its students, attack, transfer and compare them, and write the study report.

    Every job is an ordinary robust-kd command, printed before it runs. Rerunning continues where the
    last run stopped: finished jobs are skipped, a job cut off resumes inside its verb. A failed job
    blocks only the jobs that need it; failures are listed at the end with their log files."""
    from .. import study as st
    from ..study import slurm as sl

    plan = st.load_plan(plan_name)
    settings = st.Settings(Path(out or Path("runs") / plan.name), device, data, data_root)
    the_study = st.expand(plan, settings)
    folder = st.StudyFolder(settings.out)
    options = sl.SlurmOptions(partition, gpus_per_job, time_limit, cpus_per_job, sbatch_arg)
    from . import main

    if slurm_task is not None:
        return sl.run_task(the_study, folder, slurm_task, gpus_per_job, st.in_process(main))
    if status:
        recorded = folder.recorded()
        if recorded is None:
            raise click.UsageError(f"'{settings.out}' holds no study yet (no study.json); run it first, or give --out")
        if recorded["settings"].get("study") != plan.name:
            raise click.UsageError(f"'{settings.out}' holds the study {recorded['settings'].get('study')}, not "
                                   f"{plan.name}; give that study's plan, or --out of this one")
        for line in st.status_lines(the_study, st.study_status(the_study, folder)):
            print_line(line)
        return 0
    if dry_run:
        _print_dry_run(the_study, folder, options if slurm else None)
        return 0
    if slurm:
        return _submit(the_study, folder, options, fresh)
    return finish_local(the_study, st.run_local(the_study, print_line, main, jobs=jobs, fresh=fresh), "study")


def _print_dry_run(the_study, folder, options) -> None:
    from .. import study as st
    from ..study import slurm as sl

    plan = the_study.plan
    numbers = sum(1 for m in the_study.models if m.published)
    print_line(f"study {plan.name} ({plan.path}): {len(the_study.models)} models, {len(the_study.jobs)} jobs, "
               f"{numbers} with published numbers" + (f"; needs {plan.needs}" if plan.needs else ""))
    if options is not None:
        for path, group, text in sl.plan_scripts(the_study, folder, options):
            print_line(f"\n# {path} ({len(group)} jobs: {', '.join(j.id for j in group[:4])}"
                       f"{', ...' if len(group) > 4 else ''})\n{text.rstrip()}")
        return
    number = {j.id: k for k, j in enumerate(the_study.jobs, 1)}
    for k, job in enumerate(the_study.jobs, 1):
        after = "every other job" if job.after_all else ", ".join(str(k) for k in sorted(number[n] for n in job.needs))
        print_line(f"[{k}/{len(the_study.jobs)}] {job.title}" + (f" (after {after})" if after else "")
                   + f"\n  {st.command_line(job.argv)}")


def _submit(the_study, folder, options, fresh: bool) -> int:
    from ..paths import check_folder
    from ..study import check_study
    from ..study import slurm as sl

    check_folder(the_study.settings.out, "--out")
    check_study(the_study)
    with folder.runner_lock("robust-kd study --slurm"):
        sl.refuse_if_queued(the_study, folder)
        folder.prepare(the_study, fresh)
        submitted = sl.submit(the_study, folder, options)
    if not submitted:
        print_line(f"every job of the study is done; report: {the_study.settings.out / 'report' / 'report.html'}")
    for array, group in submitted:
        print_line(f"submitted Slurm job array {array}: {len(group)} jobs ({group[0].id}, ...)")
    if submitted:
        print_line(f"follow it with: robust-kd study {the_study.plan.path} --out {the_study.settings.out} --status")
    return 0


def finish_local(the_study, summary, what: str, hints: tuple[str, ...] = ()) -> int:
    """The closing lines of a local run: failures with their logs, the time, the report; the exit code."""
    from ..study import StudyFolder, report_path

    if summary.interrupted:
        raise KeyboardInterrupt
    total = len(the_study.jobs)
    ran = len(summary.outcomes)
    print_line(f"\n{what} finished: {total} jobs ({len(summary.skipped)} already done, {ran} run, "
               f"{len(summary.failed)} failed, {len(summary.blocked)} blocked), {summary.seconds:.0f} s of work "
               f"in this call, at {time.strftime('%H:%M')}")
    folder = StudyFolder(the_study.settings.out)
    for outcome in summary.failed:
        print_line(f"  failed: {outcome.job.id} (exit {outcome.code}); log: {folder.log_path(outcome.job)}")
    for job in summary.blocked:
        print_line(f"  blocked: {job.id} (needs {', '.join(job.needs)})")
    if hints and not (summary.failed or summary.blocked):
        print_line("Next, for example:\n" + "\n".join(hints))
    if report_path(the_study).is_file():
        print_line(f"report: {report_path(the_study)}")
    return 1 if summary.failed or summary.blocked else 0
