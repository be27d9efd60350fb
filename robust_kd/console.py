"""Where output goes: rich on a terminal, plain lines when piped, nothing when quiet."""

from __future__ import annotations

import sys

from rich.console import Console

_stdout: Console | None = None
_stderr: Console | None = None


def stdout() -> Console:
    global _stdout
    if _stdout is None:
        _stdout = Console(highlight=False, soft_wrap=True)
    return _stdout


def stderr() -> Console:
    global _stderr
    if _stderr is None:
        _stderr = Console(stderr=True, highlight=False, soft_wrap=True)
    return _stderr


def interactive() -> bool:
    """True when progress bars make sense (stderr is a terminal)."""
    return sys.stderr.isatty() and stderr().is_terminal
