"""The local runner: every job of a study in dependency order, on this machine.

Finished jobs are skipped (recorded done, same command, results still there); a job cut off half-way
resumes inside its own verb. A failed job does not stop the study: the jobs that need it are blocked,
the others run, and the failures are listed at the end with their log files. Ctrl-C or SIGTERM stops
the runner after the job in flight has saved its work. ``jobs`` > 1 runs independent jobs side by side,
each in its own process and, where there are several GPUs, on its own GPU.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable

from .folder import StudyFolder
from .grid import Job, Study
from .launch import Launcher, Outcome, child, run_job, stop_children

Say = Callable[[str], None]


@dataclass
class Summary:
    skipped: list[Job] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    blocked: list[Job] = field(default_factory=list)
    interrupted: bool = False

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.state == "failed"]

    @property
    def seconds(self) -> float:
        return sum(o.seconds for o in self.outcomes)


def command_line(argv: list[str]) -> str:
    import shlex

    return "robust-kd " + " ".join(shlex.quote(a) for a in argv)


def slot_devices(device: str, slots: int) -> list[str]:
    """The device of each side-by-side slot: one GPU each where there are several, else the device given."""
    if slots > 1 and device in ("auto", "cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count > 1:
            return [f"cuda:{k % count}" for k in range(slots)]
    return [device] * slots


def with_device(argv: list[str], device: str) -> list[str]:
    out = list(argv)
    if "--device" in out:
        out[out.index("--device") + 1] = device
    return out


class LocalRunner:
    def __init__(self, study: Study, folder: StudyFolder, say: Say, launcher: Launcher, jobs: int = 1) -> None:
        """``launcher`` runs one job at a time (in this process); side by side, each job is a child process."""
        self.study, self.folder, self.say, self.slots = study, folder, say, max(1, jobs)
        self.launcher = launcher
        self.summary = Summary()
        self.bad: set[str] = set()          # failed or blocked
        self.total = len(study.jobs)
        self.number = {job.id: k for k, job in enumerate(study.jobs, 1)}

    def head(self, job: Job) -> str:
        return f"[{self.number[job.id]}/{self.total}] {job.title}"

    def settled_before(self, job: Job) -> bool:
        """Skipped (done earlier) or blocked: returns True when ``job`` needs no run."""
        record = self.folder.state(job.id)
        if self.folder.is_done(job, record) and not (job.after_all and self.summary.outcomes):   # report anew
            self.say(f"{self.head(job)}: done earlier ({record.get('seconds', 0):.0f} s), skipped")
            self.summary.skipped.append(job)
            return True
        if record.get("state") == "done":
            self.say(f"{self.head(job)}: done earlier, but its results are gone: running it again")
        failed = [n for n in job.needs if n in self.bad]
        if failed and not job.after_all:
            self.say(f"{self.head(job)}: blocked, it needs {', '.join(failed)}, which did not finish")
            self.folder.set_state(job, "blocked", needs=failed)
            self.summary.blocked.append(job)
            self.bad.add(job.id)
            return True
        return False

    def record(self, outcome: Outcome) -> None:
        self.summary.outcomes.append(outcome)
        job = outcome.job
        if outcome.state == "done":
            done = sum(o.seconds for o in self.summary.outcomes)
            self.say(f"[{self.number[job.id]}/{self.total}] done in {outcome.seconds:.1f} s "
                     f"(study so far {done:.0f} s)")
        elif outcome.state == "failed":
            self.bad.add(job.id)
            self.say(f"[{self.number[job.id]}/{self.total}] FAILED (exit {outcome.code}) after "
                     f"{outcome.seconds:.1f} s; log: {self.folder.log_path(job)}; the study goes on without it")

    def run(self) -> Summary:
        try:
            if self.slots == 1:
                self._one_at_a_time()
            else:
                self._side_by_side()
        except KeyboardInterrupt:
            self.summary.interrupted = True
        return self.summary

    def _one_at_a_time(self) -> None:
        for job in self.study.jobs:
            if self.settled_before(job):
                continue
            self.say(f"\n{self.head(job)}\n$ {command_line(job.argv)}")
            outcome = run_job(self.folder, job, self.launcher)
            if outcome.state == "interrupted":
                raise KeyboardInterrupt
            self.record(outcome)

    def _side_by_side(self) -> None:
        pool = ThreadPoolExecutor(self.slots)
        try:
            self._schedule(pool)
        except BaseException:
            stop_children()         # before the pool waits for its threads, which wait for the children
            raise
        finally:
            pool.shutdown(wait=True)

    def _ready(self, job: Job, finished: set[str]) -> bool:
        settled = finished | self.bad
        if job.after_all:
            return all(j.id in settled for j in self.study.jobs if j is not job)
        return all(n in settled for n in job.needs)

    def _schedule(self, pool: ThreadPoolExecutor) -> None:
        devices = slot_devices(self.study.settings.device, self.slots)
        free = list(range(self.slots))
        waiting = list(self.study.jobs)
        running: dict[Future, tuple[Job, int]] = {}
        finished: set[str] = set()
        while waiting or running:
            for job in [j for j in waiting if self._ready(j, finished)]:
                if not free:
                    break
                waiting.remove(job)
                if self.settled_before(job):
                    if job.id not in self.bad:
                        finished.add(job.id)
                    continue
                slot = free.pop(0)
                self.say(f"{self.head(job)}: started on {devices[slot]} (log {self.folder.log_path(job)})")
                argv = with_device(job.argv, devices[slot])
                running[pool.submit(run_job, self.folder, job, child, argv)] = (job, slot)
            if not running:          # jobs settled without running (skipped, blocked) may have readied others
                if waiting and not any(self._ready(j, finished) for j in waiting):
                    raise RuntimeError(f"study jobs wait for jobs that never run: {[j.id for j in waiting]}")
                continue
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                job, slot = running.pop(future)
                free.append(slot)
                outcome = future.result()
                self.record(outcome)
                if outcome.state == "done":
                    finished.add(job.id)
                if outcome.state == "interrupted":
                    raise KeyboardInterrupt
