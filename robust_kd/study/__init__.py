"""Studies: a grid of teachers, students, methods, JPEG-DL models and seeds as one resumable command.

    plan = load_plan("quick")                          # configs/studies/quick.yaml, or any plan file
    study = expand(plan, Settings(Path("runs/quick")))  # its models and jobs (robust-kd command lines)
    summary = run_local(study, print, main)            # main: robust_kd.cli.main; or slurm.submit(...)

``robust-kd study`` and ``robust-kd quickstart`` are this package on the command line; docs/studies.md
explains plans.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .check import check_study
from .folder import StudyFolder
from .grid import Job, ModelEntry, Settings, Study, expand
from .launch import Verb, in_process
from .local import LocalRunner, Summary, command_line
from .plan import StudyPlan
from .plan_file import load_plan, plan_path, shipped_plans
from .status import job_status, status_lines, study_status


def run_local(study: Study, say: Callable[[str], None], run_verb: Verb, *, jobs: int = 1,
              fresh: bool = False) -> Summary:
    """Check the study, prepare its folder and run every job not done, holding the runner's lock; one at a
    time, a job runs in this process through ``run_verb`` (robust-kd's ``main``)."""
    from ..paths import check_folder

    check_folder(study.settings.out, "--out")
    check_study(study)
    from .slurm import refuse_if_queued

    folder = StudyFolder(study.settings.out)
    with folder.runner_lock("robust-kd study"):
        refuse_if_queued(study, folder)
        folder.prepare(study, fresh)
        return LocalRunner(study, folder, say, in_process(run_verb), jobs).run()


def report_path(study: Study) -> Path:
    return study.settings.out / "report" / "report.html"


__all__ = ["Job", "LocalRunner", "ModelEntry", "Settings", "Study", "StudyFolder", "StudyPlan", "Summary",
           "Verb", "check_study", "command_line", "expand", "in_process", "job_status", "load_plan", "plan_path",
           "report_path", "run_local", "shipped_plans", "status_lines", "study_status"]
