"""A file system that refuses a write (full, read-only, a name too long, a file where a folder must be)
said in one line, with what to do: the last line of defence behind robust_kd.paths, for what can only
be known when it happens (a disk that fills up, a folder made read-only mid-run).

Only an OSError about a path of the user's (not one inside the installed code) is turned into a
line; any other stays a traceback, as a bug should."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

# errno: (what happened, what to do first)
_PROBLEMS = {
    errno.ENOSPC: ("the disk is full", "free some space there"),
    errno.EDQUOT: ("the disk quota is used up", "free some space there"),
    errno.EROFS: ("the file system is read-only", "give a folder on a writable disk"),
    errno.EACCES: ("permission denied", "make it writable"),
    errno.EPERM: ("operation not permitted", "make it writable"),
    errno.ENAMETOOLONG: ("the name is too long for the file system", "give a shorter name or path"),
    errno.ENOTDIR: ("a file stands where a folder is needed", "move that file away"),
    errno.EEXIST: ("a file stands where a folder is needed", "move that file away"),
    errno.EISDIR: ("it is a folder, not a file", "give the path of a file"),
    errno.ENOENT: ("no such file or folder", "check the path"),
}

# where each verb writes: how to send its output elsewhere
_ELSEWHERE = {
    "train": "give --runs-dir another folder",
    "distill": "give --runs-dir another folder",
    "attack": "give --model a copy of the run folder in a place you can write to",
    "transfer": "give --out and --runs-dir other folders",
    "rsa": "give --out another folder",
    "rsa-adversarial": "give --out another folder",
    "rsa-models": "give --out another folder",
    "quickstart": "give --out another folder",
    "models": "give --out another file",
    "report": "give --out another folder",
}

# conditions that can pass (space freed, a folder made writable again) with the same command
_PASSING = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
_RESUMES = ("train", "distill", "attack", "transfer", "quickstart")

_CODE = [Path(__file__).resolve().parents[2] / name for name in ("robust_kd", "attacks", "neuro")]


def _inside_the_code(path: Path) -> bool:
    roots = [*_CODE, Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()]
    return any(path == root or root in path.parents for root in roots)


def _path_of(err: OSError) -> Path | None:
    """The path the error is about: the destination of a rename, else the file named."""
    named = err.filename2 if err.filename2 is not None else err.filename
    if named is None or isinstance(named, int):
        return None
    return Path(os.path.abspath(os.fsdecode(named)))


def user_path_problem(err: OSError, verb: str) -> str | None:
    """One line saying what failed and what to do, or None if ``err`` is not about a path of the user's."""
    if err.errno not in _PROBLEMS:
        return None
    path = _path_of(err)
    full = err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
    if path is None and not full:
        return None
    if path is not None and _inside_the_code(path):
        return None
    if err.errno == errno.EEXIST and (path is None or os.path.isdir(path)):
        return None     # mkdir of a folder that is there already: a bug, not a file in the way
    what, todo = _PROBLEMS[err.errno]
    action = "cannot use" if err.errno in (errno.ENOENT, errno.ENOTDIR) else "cannot write"
    where = f"{action} '{path}'" if path is not None else action
    if err.errno not in _PASSING or verb not in _ELSEWHERE:
        return f"{where}: {what}; {todo}"
    if verb in _RESUMES:
        return (f"{where}: {what}; {todo} and rerun the same command: it resumes where it stopped "
                f"(or {_ELSEWHERE[verb]})")
    return f"{where}: {what}; {todo}, or {_ELSEWHERE[verb]}"
