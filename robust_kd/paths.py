"""Checks of the paths a verb will write to, made before any work starts.

A run folder under a file, a name longer than the file system allows or a folder nobody may write
in would otherwise end the verb with an OSError after minutes of work. Each check raises
:class:`UserError` naming the path, the option that chose it and what to do. Nothing is created:
the nearest folder that exists is probed with a temporary file that is removed at once.

A full disk cannot be foreseen; it is said in one line when it happens (robust_kd.cli.fs_errors).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from .errors import UserError

NAME_MAX = 255      # bytes in one file or folder name (ext4, xfs, btrfs, tmpfs, APFS, NTFS in UTF-16 units)
PATH_MAX = 4096     # bytes in a whole path (Linux)
# a name the suite makes from settings (a results file, a transfer matrix) is kept this short, leaving room
# for the suffixes added to it ('.<variant>.<eps>.examples.npz', a temporary file's '.XXXXXXXX.tmp')
DERIVED_NAME_MAX = 180
# room left in a path for what a verb puts below the folder it is given
# (e.g. <run>/attacks/.state/.<results>.<variant>.json.XXXXXXXX.tmp)
ROOM_BELOW = 600


def nearest_existing(path: Path) -> Path:
    """``path`` or the nearest folder above it that exists (what a new folder would be made in)."""
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def _limit(folder: Path, name: str, fallback: int) -> int:
    try:
        return int(os.pathconf(folder, name))
    except (OSError, ValueError, AttributeError):
        return fallback


def name_max(folder: str | Path) -> int:
    """The longest file name, in bytes, the file system of ``folder`` (or of its nearest existing parent) takes."""
    existing = nearest_existing(Path(folder))
    return _limit(existing if existing.is_dir() else existing.parent, "PC_NAME_MAX", NAME_MAX)


def fit_name(name: str) -> str:
    """``name``, or where it is longer than DERIVED_NAME_MAX bytes, its start and a digest of the whole:
    the same settings always give the same name (a rerun finds its results), on any file system."""
    encoded = name.encode("utf-8")
    if len(encoded) <= DERIVED_NAME_MAX:
        return name
    digest = hashlib.sha256(encoded).hexdigest()[:16]
    start = encoded[:DERIVED_NAME_MAX - len(digest) - 1].decode("utf-8", errors="ignore")
    return f"{start}-{digest}"


def check_name(name: str, folder: str | Path, what: str, *, room: int = 0) -> None:
    """Refuse ``name`` (a file or folder name to be made in ``folder``) if the file system cannot hold
    it, with ``room`` bytes kept for suffixes the verb adds; ``what`` says which option to change."""
    size, limit = len(os.fsencode(name)), name_max(folder) - room
    if size > limit:
        shown = name if len(name) <= 40 else f"{name[:37]}..."
        kept = f" (the file system's {limit + room}, less {room} for what is added to it)" if room else ""
        raise UserError(f"the name '{shown}' is {size} bytes long; names here may have at most {limit} bytes"
                        f"{kept}: {what}")


def check_folder(path: str | Path, option: str, *, advice: str = "") -> Path:
    """Refuse ``path`` as a folder to write in if it cannot become one: a file stands in it or above it,
    a name in it is too long, or its nearest existing folder cannot be written in."""
    path = Path(path)
    advice = advice or f"give {option} another folder"
    for part in Path(os.path.abspath(path)).parts:
        check_name(part, nearest_existing(path), f"give {option} a shorter path")
    whole = len(os.fsencode(os.path.abspath(path)))
    if whole + ROOM_BELOW > PATH_MAX:
        raise UserError(f"{option} '{_short(path)}' is {whole} bytes long; with what goes below it, paths would "
                        f"pass the system's limit of {PATH_MAX} bytes: give {option} a shorter path")
    existing = nearest_existing(path)
    if not existing.is_dir():
        where = "is a file" if existing == Path(os.path.abspath(path)) else f"is under the file '{existing}'"
        raise UserError(f"{option} '{path}' {where}, not a folder: {advice}")
    _probe(existing, path, option, advice)
    return path


def check_file(path: str | Path, option: str, *, suffix: str = "") -> Path:
    """Refuse ``path`` as a file to write if it is a folder, its name is too long or its folder cannot
    be written in; ``suffix`` names the kind of file, for the advice (e.g. '.png')."""
    path = Path(path)
    example = f" (e.g. {path / ('out' + suffix)})" if suffix else ""
    if os.path.isdir(path):
        raise UserError(f"{option} '{path}' is a folder; give the path of a file to write{example}")
    check_name(path.name, path.parent, f"give {option} a shorter file name", room=len(".XXXXXXXX.tmp") + 1)
    check_folder(path.parent, option)
    return path


def _probe(folder: Path, path: Path, option: str, advice: str) -> None:
    """Create and remove a temporary file in ``folder``: what the verb will do there, without leaving anything."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".robust-kd-probe.", suffix=".tmp")
    except OSError as err:
        reason = (err.strerror or type(err).__name__).lower()
        shown = f"'{folder}'" + ("" if folder == Path(os.path.abspath(path)) else f" (to make {option} '{path}')")
        raise UserError(f"cannot write in {shown}: {reason}; make it writable or {advice}") from None
    os.close(fd)
    try:
        os.unlink(tmp)
    except OSError:
        pass


def _short(path: Path) -> str:
    text = str(path)
    return text if len(text) <= 60 else f"{text[:28]}...{text[-28:]}"
