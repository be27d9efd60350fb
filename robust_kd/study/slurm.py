"""The Slurm runner: a study's jobs as sbatch job arrays, one array per stage, each stage after the last.

A stage holds the jobs whose needs are all in earlier stages (training, then distillation, then attacks,
transfer and RSA, then the report). Each array task runs ``robust-kd study PLAN --slurm-task STAGE``: it
picks its job from ``<out>/slurm/stage<N>.txt`` by ``SLURM_ARRAY_TASK_ID`` and runs it through the local
runner's own :func:`~robust_kd.study.launch.run_job`, under torchrun when it has several GPUs. Stages
follow each other with ``--dependency=afterany``, so a failed job blocks only the jobs that need it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..fileio import write_text
from .folder import StudyFolder
from .grid import Job, Study
from .launch import Launcher, child, run_job


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    gpus_per_job: int = 0
    time: str | None = None
    cpus_per_job: int | None = None
    extra: tuple[str, ...] = ()          # more #SBATCH lines, e.g. --account=abc


def stages(jobs: list[Job], done: set[str]) -> list[list[Job]]:
    """The jobs not done, grouped so that every job comes after the jobs it needs."""
    depth: dict[str, int] = {}
    for job in jobs:                      # jobs come in dependency order
        if job.id in done:
            continue
        needs = [j.id for j in jobs if j.id != job.id and j.id not in done] if job.after_all else job.needs
        depth[job.id] = 1 + max((depth[n] for n in needs if n in depth), default=-1)
    grouped: list[list[Job]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for job in jobs:
        if job.id in depth:
            grouped[depth[job.id]].append(job)
    return grouped


def task_command(study: Study, stage: int, gpus: int = 0) -> list[str]:
    s = study.settings
    argv = [sys.executable, "-m", "robust_kd.cli", "study", str(Path(study.plan.path).resolve()), "--out",
            str(s.out.resolve()), "--device", s.device]
    argv += ["--data", s.data] if s.data else []
    argv += ["--data-root", str(Path(s.data_root).resolve())] if s.data_root else []
    argv += ["--gpus-per-job", str(gpus)] if gpus > 1 else []      # the task runs its job under torchrun
    return [*argv, "--slurm-task", str(stage)]


def script(study: Study, stage: int, count: int, options: SlurmOptions) -> str:
    out = study.settings.out.resolve()
    lines = ["#!/bin/bash", f"#SBATCH --job-name={study.plan.name}-stage{stage}", f"#SBATCH --array=0-{count - 1}",
             f"#SBATCH --output={out / 'logs' / 'slurm-%A_%a.out'}", f"#SBATCH --chdir={Path.cwd()}",
             "#SBATCH --ntasks=1"]
    lines += [f"#SBATCH --partition={options.partition}"] if options.partition else []
    lines += [f"#SBATCH --gres=gpu:{options.gpus_per_job}"] if options.gpus_per_job else []
    lines += [f"#SBATCH --time={options.time}"] if options.time else []
    lines += [f"#SBATCH --cpus-per-task={options.cpus_per_job}"] if options.cpus_per_job else []
    lines += [f"#SBATCH {arg}" for arg in options.extra]
    lines += ["# one job of the study per array task; see robust-kd study --help",
              "exec " + " ".join(shlex.quote(a) for a in task_command(study, stage, options.gpus_per_job))]
    return "\n".join(lines) + "\n"


def plan_scripts(study: Study, folder: StudyFolder, options: SlurmOptions) -> list[tuple[Path, list[Job], str]]:
    done = {j.id for j in study.jobs if folder.is_done(j)}
    if any(j.id not in done for j in study.jobs if not j.after_all):      # the report is written anew
        done -= {j.id for j in study.jobs if j.after_all}
    return [(folder.out / "slurm" / f"stage{k}.sbatch", group, script(study, k, len(group), options))
            for k, group in enumerate(stages(study.jobs, done))]


def submit(study: Study, folder: StudyFolder, options: SlurmOptions) -> list[tuple[str, list[Job]]]:
    """Write the stage scripts and job lists, submit them chained, and record every job as submitted."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise UserError("sbatch is not on PATH: run --slurm on a Slurm login node, or add --dry-run to see the "
                        "scripts it would submit")
    submitted: list[tuple[str, list[Job]]] = []
    previous = None
    (folder.out / "logs").mkdir(parents=True, exist_ok=True)     # Slurm fails a task whose --output it cannot open
    for k, (path, group, text) in enumerate(plan_scripts(study, folder, options)):
        write_text(path.with_suffix(".txt"), "".join(f"{job.id}\n" for job in group))
        write_text(path, text)
        argv = [sbatch, "--parsable"] + ([f"--dependency=afterany:{previous}"] if previous else []) + [str(path)]
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            raise UserError(f"sbatch refused stage {k} ({' '.join(result.stderr.split())[:300]}); stages submitted "
                            f"before it keep running: see robust-kd study --status")
        previous = result.stdout.strip().split(";")[0]
        for index, job in enumerate(group):
            folder.set_state(job, "submitted", slurm=f"{previous}_{index}")
        submitted.append((previous, group))
    return submitted


def queued_tasks() -> set[str] | None:
    """The array tasks Slurm still holds (pending or running) as 'ARRAY_TASK', or None without squeue."""
    squeue = shutil.which("squeue")
    if squeue is None:
        return None
    try:
        result = subprocess.run([squeue, "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return set(result.stdout.split()) if result.returncode == 0 else None


def refuse_if_queued(study: Study, folder: StudyFolder) -> None:
    """A study whose jobs Slurm still holds is not run or submitted again: the two would do the same work."""
    ours = [task for task in (folder.state(j.id).get("slurm") for j in study.jobs) if task]
    if not ours:
        return
    queued = queued_tasks() or set()
    held = [task for task in ours if task in queued]
    if held:
        raise UserError(f"{len(held)} jobs of the study in '{folder.out}' are still queued or running on Slurm "
                        f"({', '.join(held[:3])}{', ...' if len(held) > 3 else ''}); wait for them (--status) or "
                        "scancel them, then rerun")


def run_task(study: Study, folder: StudyFolder, stage: int, gpus: int, launcher: Launcher) -> int:
    """Inside an array task: run this task's job, or record it blocked when a job it needs did not finish."""
    listing = folder.out / "slurm" / f"stage{stage}.txt"
    try:
        ids = listing.read_text(encoding="utf-8").split()
        job = study.job(ids[int(os.environ["SLURM_ARRAY_TASK_ID"])])
    except (OSError, KeyError, IndexError, ValueError, StopIteration):
        raise UserError(f"--slurm-task {stage}: no job for this array task in '{listing}' (task "
                        f"{os.environ.get('SLURM_ARRAY_TASK_ID')}); resubmit with robust-kd study --slurm") from None
    if folder.is_done(job):
        return 0
    missing = [n for n in job.needs if not folder.is_done(study.job(n))]
    if missing and not job.after_all:
        folder.set_state(job, "blocked", needs=missing)
        print(f"robust-kd: {job.id} is blocked: it needs {', '.join(missing)}, which did not finish", file=sys.stderr)
        return 1
    if gpus > 1:                     # under torchrun, a process per GPU
        return run_job(folder, job, lambda argv, log: child(argv, log, gpus)).code
    return run_job(folder, job, launcher).code
