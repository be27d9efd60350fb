"""The study folder: what it holds, the state of every job, and the lock a runner holds.

    <out>/study.json             the plan expanded: its jobs and models (the report and --status read it)
    <out>/.study/jobs/<job>.json each job's state: done, failed, running, submitted, interrupted
    <out>/.study.lock            held by the runner for as long as it runs (a second one refuses)
    <out>/logs/<job>.log         each job's output
    <out>/<run>/, transfer/, report/   what the jobs write

One file per job keeps array tasks on a cluster from writing over each other's states.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import UserError
from ..fileio import one_at_a_time, write_json
from .grid import Job, Study

STUDY_FILE = "study.json"
STATE_DIR = ".study"
LOGS = "logs"
LOCK = ".study.lock"          # beside the state, so that --fresh never deletes a lock that is held


def job_file_name(job_id: str) -> str:
    return job_id.replace("/", "__")


def settings_record(study: Study) -> dict[str, Any]:
    """What must match for a rerun to continue a study: which plan, on which data."""
    plan = study.plan
    return {"study": plan.name, "data": study.settings.data or plan.data,
            "data_root": study.settings.data_root or plan.data_root}


class StudyFolder:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.jobs_dir = out / STATE_DIR / "jobs"

    # --------------------------------------------------------------------------------------------- setup
    def is_study(self) -> bool:
        return (self.out / STUDY_FILE).is_file()

    def recorded(self) -> dict[str, Any] | None:
        path = self.out / STUDY_FILE
        if not path.is_file():
            return None
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise UserError(f"'{path}' is damaged; rerun with --fresh to start the study over") from None
        if not isinstance(value, dict) or not isinstance(value.get("settings"), dict):
            raise UserError(f"'{path}' is not a study file; rerun with --fresh or choose another --out")
        return value

    def check_usable(self) -> None:
        """Only a study folder (one holding study.json) or an empty one is written to."""
        out = self.out
        if out.exists() and not out.is_dir():
            raise UserError(f"'{out}' is a file; give --out a folder")
        if (out / "quickstart.json").is_file() and not self.is_study():
            raise UserError(f"'{out}' holds a quickstart of an earlier robust-kd (quickstart.json; its runs have other "
                            "names); delete that folder to run the quickstart anew there, or give another --out")
        if out.is_dir() and any(p.name != LOCK for p in out.iterdir()) and not self.is_study():
            raise UserError(f"'{out}' exists and is not a study folder (no {STUDY_FILE}); choose another --out")

    def prepare(self, study: Study, fresh: bool) -> None:
        """Start over if ``fresh``, check that ``out`` holds this study (or nothing), and record the plan."""
        out = self.out
        self.check_usable()
        if fresh and self.is_study():
            self.clear(study)
        recorded = self.recorded()
        wanted = settings_record(study)
        if recorded is not None and recorded["settings"] != wanted:
            raise UserError(f"'{out}' holds another study ({_words(recorded['settings'])}); rerun with --fresh to "
                            f"start over, or give another --out")
        out.mkdir(parents=True, exist_ok=True)
        self.write_plan(study, recorded)

    def write_plan(self, study: Study, recorded: dict[str, Any] | None = None) -> None:
        plan = study.plan
        write_json(self.out / STUDY_FILE, {
            "settings": settings_record(study),
            "plan": str(plan.path), "description": plan.description, "tolerance": plan.tolerance,
            "started": (recorded or {}).get("started", time.strftime("%Y-%m-%d %H:%M:%S")),
            "jobs": [{"id": j.id, "title": j.title, "argv": j.argv, "needs": list(j.needs), "output": j.output}
                     for j in study.jobs],
            "models": [m.to_json() for m in study.models],
        })

    def clear(self, study: Study) -> None:
        """Delete what the study writes (its runs, transfer/, report/, logs/, state) and nothing else."""
        owned = {m.run for m in study.models} | {"transfer", "report", LOGS, STATE_DIR, STUDY_FILE}
        for name in owned:
            path = self.out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()

    # ------------------------------------------------------------------------------------------ job state
    def log_path(self, job: Job) -> Path:
        return self.out / LOGS / f"{job_file_name(job.id)}.log"

    def state(self, job_id: str) -> dict[str, Any]:
        path = self.jobs_dir / f"{job_file_name(job_id)}.json"
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def set_state(self, job: Job, state: str, **fields: Any) -> dict[str, Any]:
        record = {"job": job.id, "state": state, "argv": job.argv, "host": socket.gethostname(), "pid": os.getpid(),
                  "time": time.strftime("%Y-%m-%d %H:%M:%S"), **fields}
        write_json(self.jobs_dir / f"{job_file_name(job.id)}.json", record)
        return record

    def is_done(self, job: Job, state: dict[str, Any] | None = None) -> bool:
        """Done: recorded as done with the same command line (on any device), and its results still there.
        ``state``: the job's state when the caller has read it already."""
        state = self.state(job.id) if state is None else state
        return state.get("state") == "done" and _but_device(state.get("argv")) == _but_device(job.argv) \
            and job.finished(self.out)

    @contextmanager
    def job_lock(self, job: Job) -> Iterator[None]:
        path = self.jobs_dir / f"{job_file_name(job.id)}.lock"
        with one_at_a_time(path, lambda who: f"job {job.id} is running elsewhere ({who or 'another process'}); "
                           "wait for it", holder=_holder()):
            yield

    @contextmanager
    def runner_lock(self, what: str) -> Iterator[None]:
        """Held by a local runner (or a Slurm submission) for as long as it runs; a second one refuses."""
        self.check_usable()
        path = self.out / LOCK
        with one_at_a_time(path, lambda who: f"another runner is running the study in '{self.out}' "
                           f"({who or 'another process'}); wait for it to end, or stop it, and rerun",
                           holder=f"{what}, {_holder()}"):
            yield


def _but_device(argv: Any) -> Any:
    """A command line without its --device value: a job done on the GPU is done for a rerun on the CPU too."""
    if not isinstance(argv, list) or "--device" not in argv:
        return argv
    k = argv.index("--device")
    return argv[:k] + argv[k + 2:]


def _holder() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}"


def _words(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in settings.items() if v is not None)
