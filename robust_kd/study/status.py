"""What a study folder says about each job, whichever runner ran it: done, running, failed, blocked,
interrupted or waiting."""

from __future__ import annotations

import os
import socket
from collections import Counter
from dataclasses import dataclass

from .folder import StudyFolder
from .grid import Job, Study

ORDER = ("done", "running", "failed", "blocked", "interrupted", "waiting")


@dataclass(frozen=True)
class JobStatus:
    job: Job
    state: str
    note: str = ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def job_status(folder: StudyFolder, job: Job, queued: set[str] | None = None,
               record: dict | None = None) -> JobStatus:
    """``queued``: the Slurm tasks still in the queue (None: unknown), to tell a job Slurm dropped; ``record``:
    the job's state when the caller has read it."""
    record = folder.state(job.id) if record is None else record
    state = record.get("state", "")
    if folder.is_done(job, record):
        return JobStatus(job, "done", f"{record.get('seconds', 0):.0f} s")
    if state == "done":
        return JobStatus(job, "waiting", "done earlier, but its results are gone or its command changed")
    gone = queued is not None and record.get("slurm") and record["slurm"] not in queued
    if state == "submitted" and gone:
        return JobStatus(job, "failed", f"Slurm job {record['slurm']} left the queue without starting it; see "
                         f"{folder.out / 'logs'}/slurm-*.out, then rerun")
    if state == "running" and gone:
        return JobStatus(job, "interrupted", f"Slurm job {record['slurm']} ended (cancelled or out of time); rerun "
                         "to resume it")
    if state == "running":
        here = record.get("host") == socket.gethostname()
        if here and not record.get("slurm") and not _alive(int(record.get("pid", 0) or 0)):
            return JobStatus(job, "interrupted", "its process is gone; rerun to resume it")
        where = (f"Slurm job {record['slurm']}" if record.get("slurm")
                 else f"pid {record.get('pid')} on {record.get('host')}")
        return JobStatus(job, "running", f"{where} since {record.get('time', '?')}")
    if state == "submitted":
        return JobStatus(job, "waiting", f"queued as Slurm job {record.get('slurm', '?')}")
    if state == "failed":
        return JobStatus(job, "failed", f"exit {record.get('code')}; log {record.get('log', '')}")
    if state == "blocked":
        return JobStatus(job, "blocked", f"needs {', '.join(record.get('needs') or [])}")
    if state == "interrupted":
        return JobStatus(job, "interrupted", "rerun to resume it")
    return JobStatus(job, "waiting")


def study_status(study: Study, folder: StudyFolder) -> list[JobStatus]:
    from .slurm import queued_tasks

    records = {job.id: folder.state(job.id) for job in study.jobs}
    queued = queued_tasks() if any(r.get("slurm") for r in records.values()) else None
    return [job_status(folder, job, queued, records[job.id]) for job in study.jobs]


def status_lines(study: Study, statuses: list[JobStatus]) -> list[str]:
    counts = Counter(s.state for s in statuses)
    head = ", ".join(f"{counts[s]} {s}" for s in ORDER if counts[s])
    width = max((len(s.job.id) for s in statuses), default=10)
    lines = [f"study {study.plan.name} in {study.settings.out}: {len(statuses)} jobs: {head}"]
    lines += [f"  {s.state:<11} {s.job.id:<{width}}  {s.note}".rstrip() for s in statuses]
    return lines
