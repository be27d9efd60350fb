"""The hostile-input catalogue, paths and the file system: a runs folder or --out that is a file or
under one, names longer than the file system takes, read-only folders and a full disk, for every verb
that writes (tests/hostile.py has the harness). Paths with spaces, unicode and leading dashes work.

Read-only folders are made with chmod where that stops writes; as root (where it does not) and for a
read-only file system (EROFS), the writes into the folder are refused by the test, at the calls the
code makes (os.open, os.mkdir, os.replace, open, ...). A full disk is simulated the same way: every
file opened for writing through os.fdopen (which the atomic writers of robust_kd.fileio,
attacks.store and neuro.files all use) takes bytes from a budget, and a write beyond it fails with
ENOSPC after writing what fitted, as a real one does. The faults are armed by a case's ``make`` once
its own files are in place.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from hostile import Case, check
from robust_kd.cli import main

TINY = ["--data", "synthetic", "--device", "cpu", "epochs=1", "batch_size=32", "data.options.size=16",
        "data.options.train=64", "data.options.test=32", "data.options.classes=4"]
RUN = "resnet8_synthetic_quick_seed0"
LONG = "a" * 300


def _chmod_stops_writes() -> bool:
    """Whether a folder without write permission refuses a new file here (not as root, nor with
    CAP_DAC_OVERRIDE)."""
    import tempfile

    with tempfile.TemporaryDirectory() as top:
        folder = Path(top) / "ro"
        folder.mkdir(mode=0o500)
        try:
            (folder / "x").touch()
        except PermissionError:
            return True
        finally:
            folder.chmod(0o700)
    return False


CHMOD_STOPS_WRITES = _chmod_stops_writes()


# ------------------------------------------------------------------------------- simulated faults
class Faults:
    """What the file system refuses while a case runs: writes under ``read_only`` folders (with their
    errno), and bytes beyond ``free`` (None: no limit)."""

    def __init__(self) -> None:
        self.read_only: list[tuple[str, int]] = []
        self.chmodded: list[Path] = []
        self.free: int | None = None

    def refused(self, path: Any, dir_fd: int | None = None) -> int | None:
        if not self.read_only or isinstance(path, int):
            return None
        text = os.fsdecode(path)
        if dir_fd is not None:
            text = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), text)
        full = os.path.abspath(text)
        for folder, code in self.read_only:
            if full == folder or full.startswith(folder + os.sep):
                return code
        return None


FAULTS = Faults()


def read_only(folder: Path, code: int = errno.EACCES) -> None:
    """Make ``folder`` and everything in it read-only: by chmod where that works, else simulated."""
    if code == errno.EACCES and CHMOD_STOPS_WRITES:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        FAULTS.chmodded.append(folder)
    else:
        FAULTS.read_only.append((os.path.abspath(folder), code))


def disk_full(free: int = 0) -> None:
    """From now on, only ``free`` more bytes fit on the disk."""
    FAULTS.free = free


def _fail(code: int, path: Any) -> OSError:
    return OSError(code, os.strerror(code), os.fsdecode(path) if not isinstance(path, int) else None)


class _Budgeted:
    """A file opened for writing on the simulated full disk."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def write(self, data: Any) -> int:
        if FAULTS.free is not None and len(data) > FAULTS.free:
            fits = FAULTS.free
            FAULTS.free = 0
            self._file.write(data[:fits])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if FAULTS.free is not None:
            FAULTS.free -= len(data)
        return self._file.write(data)

    def __enter__(self) -> "_Budgeted":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._file.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def _install(monkeypatch) -> None:
    real_open, real_mkdir, real_fdopen = os.open, os.mkdir, os.fdopen
    real_replace, real_rename, real_unlink, real_rmdir = os.replace, os.rename, os.unlink, os.rmdir
    real_builtin_open = builtins.open
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def os_open(path, flags, mode=0o777, *, dir_fd=None):
        code = FAULTS.refused(path, dir_fd) if flags & writing else None
        if code:
            raise _fail(code, path)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    def mkdir(path, mode=0o777, *, dir_fd=None):
        code = FAULTS.refused(path, dir_fd)
        if code and not os.path.lexists(path):
            raise _fail(code, path)
        return real_mkdir(path, mode, dir_fd=dir_fd)

    def moving(real: Callable) -> Callable:
        def move(src, dst, *, src_dir_fd=None, dst_dir_fd=None):
            code = FAULTS.refused(src, src_dir_fd) or FAULTS.refused(dst, dst_dir_fd)
            if code:
                raise OSError(code, os.strerror(code), os.fsdecode(src), None, os.fsdecode(dst))
            return real(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
        return move

    def removing(real: Callable) -> Callable:
        def remove(path, *, dir_fd=None):
            code = FAULTS.refused(path, dir_fd)
            if code:
                raise _fail(code, path)
            return real(path, dir_fd=dir_fd)
        return remove

    def fdopen(fd, mode="r", *args, **kwargs):
        file = real_fdopen(fd, mode, *args, **kwargs)
        return _Budgeted(file) if FAULTS.free is not None and set(mode) & set("wax+") else file

    def opening(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and set(mode) & set("wax+"):
            code = FAULTS.refused(file)
            if code:
                raise _fail(code, file)
        return real_builtin_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "replace", moving(real_replace))
    monkeypatch.setattr(os, "rename", moving(real_rename))
    monkeypatch.setattr(os, "unlink", removing(real_unlink))
    monkeypatch.setattr(os, "remove", removing(real_unlink))
    monkeypatch.setattr(os, "rmdir", removing(real_rmdir))
    monkeypatch.setattr(os, "fdopen", fdopen)
    monkeypatch.setattr(builtins, "open", opening)
    monkeypatch.setattr(io, "open", opening)


@pytest.fixture(autouse=True)
def faults(monkeypatch):
    """The simulated faults, disarmed after each test (chmodded folders made writable again)."""
    _install(monkeypatch)
    yield FAULTS
    FAULTS.read_only.clear()
    FAULTS.free = None
    for folder in FAULTS.chmodded:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    FAULTS.chmodded.clear()


# ------------------------------------------------------------------------------- earlier work
EARLIER: dict[str, Path] = {}


@pytest.fixture(scope="module", autouse=True)
def earlier_runs(tmp_path_factory) -> Path:
    """A runs folder with a 1-epoch resnet8 on tiny synthetic data and a 'fast' attack's results on it:
    every case works on a copy, so that 'no earlier file changed' means something."""
    runs = tmp_path_factory.mktemp("earlier") / "runs"
    assert main(["train", "--model", "resnet8", "--runs-dir", str(runs), *TINY]) == 0
    assert main(["attack", "--model", str(runs / RUN), "--suite", "fast", "--n", "4", "--device", "cpu",
                 "--no-convergence-check"]) == 0
    EARLIER["runs"] = runs
    return runs


def runs_in(scratch: Path) -> Path:
    """A copy of the earlier runs folder in the scratch folder."""
    runs = scratch / "runs"
    if not runs.exists():
        shutil.copytree(EARLIER["runs"], runs)
    return runs


def a_file(scratch: Path) -> Path:
    path = scratch / "a_file"
    path.write_text("not a folder\n")
    return path


def _epochs_to_two(run: Path) -> None:
    """The run's settings now ask for 2 epochs: a resume trains epoch 2 and writes its checkpoint."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["epochs"] = 2
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


# ------------------------------------------------------------------------------- the calls
def train(runs: Path | str, *extra: str) -> list[str]:
    return ["train", "--model", "resnet8", "--runs-dir", str(runs), *TINY, *extra]


def distill(scratch: Path, runs: Path | str, *extra: str) -> list[str]:
    return ["distill", "--teacher", str(runs_in(scratch) / RUN), "--student", "resnet8", "--runs-dir", str(runs),
            *TINY, *extra]


def attack(scratch: Path, *extra: str) -> list[str]:
    return ["attack", "--model", str(runs_in(scratch) / RUN), "--suite", "fast", "--n", "4", "--device", "cpu",
            "--no-convergence-check", *extra]


def transfer(scratch: Path, *extra: str) -> list[str]:
    run = str(runs_in(scratch) / RUN)
    return ["transfer", "--source", run, "--target", run, "--n", "4", "--steps", "2", "--device", "cpu",
            "--runs-dir", str(scratch / "runs"), *extra]


def rsa(scratch: Path, *extra: str) -> list[str]:
    return ["rsa", "--model", str(runs_in(scratch) / RUN), "--stimuli", "rsa92", "--brain-rdm", "rsa92",
            "--n-bootstrap", "0", "--n-permutations", "0", "--device", "cpu", *extra]


def rsa_adversarial(scratch: Path, *extra: str) -> list[str]:
    return ["rsa-adversarial", "--model", str(runs_in(scratch) / RUN), "--stimuli", "test", "--n", "8",
            "--white-steps", "2", "--queries", "10", "--n-bootstrap", "0", "--n-permutations", "0",
            "--device", "cpu", *extra]


def rsa_models(scratch: Path, *extra: str) -> list[str]:
    run = str(runs_in(scratch) / RUN)
    return ["rsa-models", "--models", f"{run},{run}", "--n", "8", "--n-bootstrap", "0", "--device", "cpu",
            "--runs-dir", str(scratch / "runs"), *extra]


def models_show(*extra: str) -> list[str]:
    return ["models", "--show", "jpegdl_resnet8", "--num-classes", "4", *extra]


def quickstart(out: Path | str) -> list[str]:
    return ["quickstart", "--plan", "smoke", "--device", "cpu", "--out", str(out)]


def report(scratch: Path, *extra: str) -> list[str]:
    return ["report", str(runs_in(scratch) / RUN), *extra]


def then(args: list[str], arm: Callable[[], None]) -> list[str]:
    """``args``, with the fault armed now that the case's own files are in place."""
    arm()
    return args


def read_only_runs(scratch: Path, args: list[str], code: int = errno.EACCES) -> list[str]:
    args = list(args)       # built first: it copies the earlier runs into the scratch folder
    read_only(runs_in(scratch), code)
    return args


def under_ro(scratch: Path) -> Path:
    """A read-only folder (empty) in the scratch folder."""
    folder = scratch / "ro"
    folder.mkdir(exist_ok=True)
    read_only(folder)
    return folder


def _train_a_run_with_checkpoints_read_only(s: Path) -> list[str]:
    run = runs_in(s) / RUN
    _epochs_to_two(run)
    read_only(run / "checkpoints")
    return train(s / "runs", "epochs=2")


def _train_on_a_full_disk(s: Path, free: int) -> list[str]:
    _epochs_to_two(runs_in(s) / RUN)
    return then(train(s / "runs", "epochs=2"), lambda: disk_full(free))


RO = r"cannot write.*(permission denied|[Pp]ermission denied)"
ROFS = r"read-only"
FULL = r"cannot write '.*': the disk is full; free some space there and rerun the same command: it resumes"
UNDER_FILE = r"is under the file .*a_file', not a folder"
IS_FILE = r"is a file, not a folder"
TOO_LONG = r"is 3\d\d bytes long; names here may have at most \d+ bytes"

CASES = [
    # a runs folder or --out that is a file, or under one
    Case("train --runs-dir a file", lambda s: train(a_file(s)), r"--runs-dir .*a_file' " + IS_FILE),
    Case("train --runs-dir under a file", lambda s: train(a_file(s) / "runs"), "--runs-dir .*" + UNDER_FILE),
    Case("distill --runs-dir a file", lambda s: distill(s, a_file(s)), "--runs-dir .*" + IS_FILE),
    Case("distill --runs-dir under a file", lambda s: distill(s, a_file(s) / "r"), "--runs-dir .*" + UNDER_FILE),
    Case("attack: the run's attacks folder is a file",
         lambda s: (shutil.rmtree(runs_in(s) / RUN / "attacks"), (runs_in(s) / RUN / "attacks").write_text("x"),
                    attack(s))[-1], "the results folder .*attacks' " + IS_FILE, lines_before=True),
    Case("transfer --out under a file", lambda s: transfer(s, "--out", str(a_file(s) / "m.json")),
         "--out .*" + IS_FILE),
    Case("transfer --out deeper under a file", lambda s: transfer(s, "--out", str(a_file(s) / "x" / "m.json")),
         "--out .*" + UNDER_FILE),
    Case("transfer --runs-dir a file",
         lambda s: [*transfer(s)[:-2], "--runs-dir", str(a_file(s))], "--runs-dir .*" + UNDER_FILE),
    Case("transfer --out an existing folder", lambda s: transfer(s, "--out", str(s)), "is a folder"),
    Case("models --show --out an existing folder", lambda s: models_show("--out", str(s)),
         r"--out .* is a folder; give the path of a file"),
    Case("models --show --out under a file", lambda s: models_show("--out", str(a_file(s) / "t.png")),
         "--out .*" + IS_FILE),
    Case("rsa --out under a file", lambda s: rsa(s, "--out", str(a_file(s) / "o")), "--out .*" + UNDER_FILE),
    Case("rsa-adversarial --out under a file", lambda s: rsa_adversarial(s, "--out", str(a_file(s) / "o")),
         "--out .*" + UNDER_FILE),
    Case("rsa-models --out under a file", lambda s: rsa_models(s, "--out", str(a_file(s) / "o")),
         "--out .*" + UNDER_FILE),
    Case("rsa-models --runs-dir a file (its default --out)",
         lambda s: [*rsa_models(s)[:-2], "--runs-dir", str(a_file(s))], "--out .*" + UNDER_FILE),
    Case("quickstart --out under a file", lambda s: quickstart(a_file(s) / "q"), "--out .*" + UNDER_FILE),
    Case("quickstart --out a file", lambda s: quickstart(a_file(s)), "--out .*" + IS_FILE),
    Case("report --out under a file", lambda s: report(s, "--out", str(a_file(s) / "r")), "--out .*" + UNDER_FILE),
    # names longer than the file system takes
    Case("train --name of 300 characters", lambda s: train(s / "runs", "--name", LONG), TOO_LONG + ".*--name"),
    Case("distill --name of 300 characters", lambda s: distill(s, s / "runs", "--name", LONG), TOO_LONG + ".*--name"),
    Case("train --runs-dir with a name of 300 characters", lambda s: train(s / LONG), TOO_LONG + ".*--runs-dir"),
    Case("transfer --out of 300 characters", lambda s: transfer(s, "--out", str(s / f"{LONG}.json")), TOO_LONG),
    Case("models --show --out of 300 characters", lambda s: models_show("--out", str(s / f"{LONG}.png")), TOO_LONG),
    Case("rsa --out of 300 characters", lambda s: rsa(s, "--out", str(s / LONG)), TOO_LONG + ".*--out"),
    Case("rsa-models --out of 300 characters", lambda s: rsa_models(s, "--out", str(s / LONG)), TOO_LONG),
    Case("quickstart --out of 300 characters", lambda s: quickstart(s / LONG), TOO_LONG + ".*--out"),
    Case("report --out of 300 characters", lambda s: report(s, "--out", str(s / LONG)), TOO_LONG),
    Case("rsa --out of 5000 bytes in names of 200", lambda s: rsa(s, "--out", str(s.joinpath(*["b" * 200] * 25))),
         r"is \d{4,} bytes long; .*limit of 4096 bytes: give --out a shorter path"),
    # read-only folders (chmod, or simulated as root)
    Case("train into a read-only runs folder", lambda s: read_only_runs(s, train(s / "runs", "--name", "new")),
         RO + ".*--runs-dir"),
    Case("train: resuming a run whose checkpoints folder is read-only", _train_a_run_with_checkpoints_read_only,
         r"cannot write '.*checkpoints.*': permission denied; make it writable and rerun the same command: it resumes",
         lines_before=True),
    Case("distill into a read-only runs folder", lambda s: read_only_runs(s, distill(s, s / "runs")), RO),
    Case("attack a run in a read-only folder", lambda s: read_only_runs(s, attack(s, "--eps", "4/255")),
         RO + ".*copy of the run folder", lines_before=True),
    Case("attack on a read-only file system",
         lambda s: read_only_runs(s, attack(s, "--eps", "4/255"), errno.EROFS), ROFS, lines_before=True),
    Case("train on a read-only file system", lambda s: read_only_runs(s, train(s / "runs"), errno.EROFS), ROFS),
    Case("transfer with a read-only runs folder", lambda s: read_only_runs(s, transfer(s)), RO + ".*--runs-dir"),
    Case("transfer --out in a read-only folder", lambda s: transfer(s, "--out", str(under_ro(s) / "m.json")),
         RO + ".*--out"),
    Case("rsa into a read-only run folder", lambda s: read_only_runs(s, rsa(s)), RO + ".*--out"),
    Case("rsa-adversarial into a read-only run folder", lambda s: read_only_runs(s, rsa_adversarial(s)),
         RO + ".*--out"),
    Case("rsa-models with a read-only runs folder", lambda s: read_only_runs(s, rsa_models(s)), RO + ".*--out"),
    Case("quickstart --out in a read-only folder", lambda s: quickstart(under_ro(s) / "q"), RO + ".*--out"),
    Case("models --show --out in a read-only folder", lambda s: models_show("--out", str(under_ro(s) / "t.png")),
         RO + ".*--out"),
    Case("report into a read-only run folder", lambda s: read_only_runs(s, report(s)), RO + ".*--out"),
    # a full disk: the earlier checkpoint and results unchanged, no temporary file left (see the test)
    Case("train on a full disk", lambda s: _train_on_a_full_disk(s, 0), FULL, lines_before=True),
    Case("train on a disk that fills up mid-checkpoint", lambda s: _train_on_a_full_disk(s, 20_000),
         FULL, lines_before=True),
    Case("attack on a full disk", lambda s: then(attack(s, "--eps", "4/255"), disk_full), FULL, lines_before=True),
    Case("attack on a disk that fills up at its results file",    # its state files take about 3.9 kB
         lambda s: then(attack(s, "--eps", "4/255"), lambda: disk_full(5000)),
         r"cannot write '.*attacks/fast[^/]*\.json': the disk is full",
         lines_before=True),
    Case("transfer on a full disk", lambda s: then(transfer(s), disk_full), FULL, lines_before=True),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_hostile_path_is_refused_in_one_line(case, tmp_path, capsys):
    check(case, tmp_path, capsys)
    left = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.tmp")]
    assert not left, f"{case}: temporary files left behind: {left}"


# ------------------------------------------------------------------------------- what works
ODD = "-odd folder ü ∂"


def test_paths_with_spaces_unicode_and_leading_dashes_work(tmp_path, capsys, monkeypatch):
    """A runs folder named '-odd folder ü ∂' (relative, so it starts with a dash) trains, is attacked
    and reported on, the report with the quickstart's own command line (whose positional folder
    could be taken for an option); an --out in folders that do not exist yet is made."""
    from robust_kd.study import Settings, expand, load_plan

    monkeypatch.chdir(tmp_path)
    assert main(train(ODD, "--name", "run ü -x")) == 0
    run = Path(ODD) / "run_-x"
    assert (run / "checkpoints" / "last.pt").is_file(), sorted(Path(ODD).rglob("*"))
    assert main(["attack", "--model", str(run), "--suite", "fast", "--n", "4", "--device", "cpu",
                 "--no-convergence-check"]) == 0
    assert len(list((run / "attacks").glob("fast-*.json"))) == 1
    report_job = expand(load_plan("smoke"), Settings(Path(ODD))).jobs[-1]
    capsys.readouterr()
    assert main(report_job.argv) == 0, capsys.readouterr().err
    assert (Path(ODD) / "report" / "report.html").is_file()
    assert main(models_show("--out", f"{ODD}/new/deeper ü/-t.png")) == 0     # missing folders are made
    assert (Path(ODD) / "new" / "deeper ü" / "-t.png").stat().st_size > 0


def test_a_suite_named_with_300_characters_gets_a_results_file_of_a_shortened_name(tmp_path, capsys):
    runs = runs_in(tmp_path)
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "s" * 300, "attacks": [{"attack": "fgsm"}]}))
    args = attack(tmp_path, "--suite", str(suite), "--json")
    assert main(args) == 0, capsys.readouterr().err
    content = json.loads(capsys.readouterr().out)
    files = [p.name for p in (runs / RUN / "attacks").glob("s*.json")]
    assert len(files) == 1 and len(files[0].encode()) <= 255 and files[0].startswith("s" * 100)
    assert content["suite"] == "s" * 300
    assert main(args) == 0      # a rerun finds the same file: its name depends on the settings alone
    assert [p.name for p in (runs / RUN / "attacks").glob("s*.json")] == files


def test_after_a_full_disk_the_same_command_resumes_and_finishes(tmp_path, capsys):
    """What a full disk interrupted is redone from the last checkpoint once space is free again."""
    runs = runs_in(tmp_path)
    _epochs_to_two(runs / RUN)
    before = (runs / RUN / "checkpoints" / "last.pt").read_bytes()
    disk_full(0)
    assert main(train(runs, "epochs=2")) == 2
    assert (runs / RUN / "checkpoints" / "last.pt").read_bytes() == before
    FAULTS.free = None
    assert main(train(runs, "epochs=2", "--json")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == 2 and not list(runs.rglob("*.tmp"))


def test_an_os_error_about_the_code_itself_stays_a_traceback(tmp_path):
    """Only errors about the user's paths become one line: one inside the installed code is a bug."""
    from robust_kd.cli.fs_errors import user_path_problem

    inside = OSError(errno.EACCES, "Permission denied", str(Path(__file__).parents[1] / "robust_kd" / "x.json"))
    assert user_path_problem(inside, "train") is None
    assert user_path_problem(OSError(errno.EEXIST, "File exists", str(tmp_path)), "train") is None  # a folder: a bug
    assert user_path_problem(OSError(errno.EBADF, "Bad file descriptor", str(tmp_path / "x")), "train") is None
    line = user_path_problem(OSError(errno.ENOSPC, "No space left on device"), "attack")
    assert line is not None and line.startswith("cannot write: the disk is full")


def test_the_atomic_writer_names_the_file_a_full_disk_cut_and_keeps_the_old_one(tmp_path):
    """torch.save turns a failed write into a RuntimeError; the writer says ENOSPC and which file."""
    import torch

    from robust_kd.fileio import save_torch

    path = tmp_path / "w.pt"
    save_torch(path, {"w": torch.zeros(3)})
    old = path.read_bytes()
    disk_full(2000)
    with pytest.raises(OSError) as caught:
        save_torch(path, {"w": torch.randn(10_000)})
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert path.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ["w.pt"]
