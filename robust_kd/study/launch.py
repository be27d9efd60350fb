"""Running one job: the same path for the local runner and for a Slurm array task.

A job is its ``robust-kd`` command line. It runs in this process (what the local runner does one job at a
time: no second start of Python and torch), or as a child process (side by side, or under torchrun when it
asks for several GPUs). Its output goes to the terminal and to its log file. Its state is written only once
the command has ended: done (exit 0), interrupted (Ctrl-C, SIGTERM: the verb saved its work), or failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator, Sequence

from .folder import StudyFolder
from .grid import Job

INTERRUPTED = (130, 143)           # the CLI's codes for Ctrl-C and SIGTERM
TORCHRUN_VERBS = ("attack", "train", "distill")


@dataclass(frozen=True)
class Outcome:
    job: Job
    code: int
    seconds: float

    @property
    def state(self) -> str:
        if self.code == 0:
            return "done"
        return "interrupted" if self.code in INTERRUPTED else "failed"


class Tee:
    """A text stream that writes to the terminal's stream and to a log file."""

    def __init__(self, stream: IO[str], log: IO[str]) -> None:
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.log.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.log.flush()
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def __getattr__(self, name: str):       # encoding, errors, fileno, ...: the terminal's
        return getattr(self.stream, name)


@contextmanager
def teed(log_path: Path) -> Iterator[None]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        old_out, old_err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = Tee(old_out, log), Tee(old_err, log)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = old_out, old_err


Verb = Callable[[list[str]], int]          # robust-kd's entry point: a command line in, its exit code out
Launcher = Callable[[Sequence[str], Path], int]


def in_process(run_verb: Verb) -> Launcher:
    """Jobs in this process through ``run_verb`` (the CLI's ``main``, handed in: the study package does not
    import the CLI). A bug in a verb (a traceback, not a one-line error) fails that job alone: the traceback
    goes to the terminal and the log, and the study goes on."""
    import traceback

    def launch(argv: Sequence[str], log_path: Path) -> int:
        with teed(log_path):
            try:
                return run_verb(list(argv))
            except Exception:       # noqa: BLE001 - a bug in one job must not take the other jobs down
                traceback.print_exc()
                return 1

    return launch


def command(argv: Sequence[str], gpus: int = 1) -> list[str]:
    """The child process's command line: robust-kd through this Python, under torchrun for several GPUs."""
    if gpus > 1 and argv[0] in TORCHRUN_VERBS:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}", "-m",
                "robust_kd.cli", *argv]
    return [sys.executable, "-m", "robust_kd.cli", *argv]


def start_child(argv: Sequence[str], log_path: Path, gpus: int = 1, env: dict | None = None) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "a", encoding="utf-8")
    try:
        return subprocess.Popen(command(argv, gpus), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    finally:
        log.close()       # the child holds its own copy


LIVE: set[subprocess.Popen] = set()     # children running now, to stop when the runner is stopped


def child(argv: Sequence[str], log_path: Path, gpus: int = 1) -> int:
    process = start_child(argv, log_path, gpus)
    LIVE.add(process)
    try:
        return process.wait()
    except KeyboardInterrupt:
        stop_children()
        raise
    finally:
        LIVE.discard(process)


def stop_children() -> None:
    """SIGTERM to every running child (each verb saves what it finished), then wait for them."""
    for process in list(LIVE):
        process.terminate()
    for process in list(LIVE):
        process.wait()


def slurm_task_id() -> str | None:
    """This process's Slurm job as squeue -r names it (ARRAY_TASK for an array task), or None outside Slurm."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def run_job(folder: StudyFolder, job: Job, launcher: Launcher, argv: Sequence[str] | None = None) -> Outcome:
    """Run ``job`` (``argv``: its command line with this slot's device) holding its lock, and record how
    it ended."""
    argv = list(argv or job.argv)
    log = folder.log_path(job)
    with folder.job_lock(job):
        folder.set_state(job, "running", log=str(log), slurm=slurm_task_id())
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"\n$ robust-kd {' '.join(argv)}\n")
        start = time.perf_counter()
        try:
            code = launcher(argv, log)
        except KeyboardInterrupt:
            code = INTERRUPTED[0]
        outcome = Outcome(job, code, time.perf_counter() - start)
        folder.set_state(job, outcome.state, code=code, seconds=round(outcome.seconds, 2), log=str(log))
    return outcome
