"""The hostile-input catalogue's harness (tests/test_hostile_*.py).

A case builds its files under a scratch folder and names one CLI call; :func:`check` runs it and
asserts the promise of the house: exit 2 and one line on stderr saying what to do (or, for a
``warning`` case, exit 0 and a one-line warning), no traceback, nothing hanging, and no file that
existed before the call changed by it (earlier results are never lost or damaged).

Cases run in this process (fast: torch is imported once); a case that could hang in C code (YAML
bombs, huge allocations) sets ``own_process`` and runs as ``python -m robust_kd.cli`` under a deadline.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from robust_kd.cli import main

Make = Callable[[Path], list[str]]


@dataclass(frozen=True)
class Case:
    name: str
    make: Make                  # builds the case's files under the scratch folder; returns the CLI's arguments
    message: str                # a regular expression the error (or warning) line must match
    warning: bool = False       # a one-line warning and exit 0 instead of an error
    own_process: bool = False   # run as a subprocess under the deadline (the call could hang in C code)
    lines_before: bool = False  # progress lines may come before the error (a failure found mid-run)
    seconds: float = 120.0      # the deadline: a call that takes longer hangs, as far as a user can tell

    def __str__(self) -> str:
        return self.name


class Hung(Exception):
    pass


def files_under(folder: Path) -> dict[str, str]:
    """Every file's path and content digest: what an earlier run left."""
    digests = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and os.access(path, os.R_OK):
            digests[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def _in_process(args: list[str], capsys, seconds: float) -> tuple[int, str]:
    def hung(signum, frame):
        raise Hung(f"no answer within {seconds:.0f} s")

    capsys.readouterr()
    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        code = main(args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return code, capsys.readouterr().err


def _own_process(args: list[str], cwd: Path, seconds: float) -> tuple[int, str]:
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    try:
        done = subprocess.run([sys.executable, "-m", "robust_kd.cli", *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=seconds)
    except subprocess.TimeoutExpired:
        raise Hung(f"no answer within {seconds:.0f} s") from None
    return done.returncode, done.stderr


def check(case: Case, scratch: Path, capsys) -> str:
    """Run ``case`` and assert its promise; returns the error or warning line."""
    args = case.make(scratch)
    before = files_under(scratch)
    if case.own_process:
        code, err = _own_process(args, scratch, case.seconds)
    else:
        code, err = _in_process(args, capsys, case.seconds)
    assert "Traceback" not in err, f"{case}: a traceback\n{err}"
    lines = [line for line in err.splitlines() if line.strip()]
    line = _the_line(case, code, lines, err)
    assert re.search(case.message, line), f"{case}: {line!r} does not say {case.message!r}"
    after = files_under(scratch)
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    assert not changed, f"{case}: the call changed or removed files that existed before it: {changed}"
    return line


def _the_line(case: Case, code: int, lines: list[str], err: str) -> str:
    if case.warning:
        assert code == 0, f"{case}: exit {code}, expected 0 with a warning\n{err}"
        said = [line for line in lines if re.search(case.message, line)]
        assert len(said) == 1, f"{case}: expected one warning line matching {case.message!r}\n{err}"
        return said[0]
    assert code == 2, f"{case}: exit {code}, expected 2\n{err}"
    errors = [line for line in lines if line.startswith("robust-kd: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], f"{case}: expected one error line, the last\n{err}"
    if not case.lines_before:
        assert len(lines) == 1, f"{case}: expected the error line alone\n{err}"
    return errors[0]
