"""A run folder ``runs/<name>/``: resolved config, metrics, checkpoints, summary.

Layout::

    config.yaml          the resolved config (written once, when the run starts)
    metrics.jsonl        one JSON line per finished epoch
    checkpoints/last.pt  written atomically after every epoch (resume point)
    checkpoints/best.pt  the epoch with the best test accuracy so far
    summary.json         final numbers, once the run is complete
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from ..fileio import write_json, write_text
from ..paths import check_folder, check_name
from ..yamlfile import read_yaml_file

# Keys that may differ between the first start of a run and its resumption.
RESUMABLE_DIFFERENCES = {"device", "eval_batch_size"}


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    a, b = _flatten(stored), _flatten(wanted)
    keys = sorted((set(a) | set(b)) - RESUMABLE_DIFFERENCES)
    return [f"{k}: {a.get(k)!r} → {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def safe_run_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("._")
    return name or "run"


def run_name(name: str | None, default: str) -> str:
    """The run folder's name: ``--name`` when given, else ``default``. An empty or blank name, one with a
    path separator, or one with no letter or digit is refused (it used to fall back, or land elsewhere,
    without a word); characters other than letters, digits and ``_ . = -`` become ``_``, with a note."""
    if name is None:
        return default
    if not name.strip():
        raise UserError("--name is empty; give the run folder a name (letters, digits, _ . = -), or leave --name "
                        f"out for the default ({default})")
    separators = sorted({"/", "\\", os.sep, os.altsep or "/"} & set(name))
    if separators:
        raise UserError(f"--name '{name}' holds a path separator ({' '.join(separators)}); a run's name is a folder "
                        "name: choose where run folders go with --runs-dir")
    if not any(c.isalnum() for c in name):
        raise UserError(f"--name '{name}' has no letter or digit; give the run folder a name such as my_run")
    if safe_run_name(name) != name:
        from ..console import stderr

        stderr().print(f"--name '{name}': the run folder is named '{safe_run_name(name)}' (characters other than "
                       "letters, digits and _ . = - become _)", markup=False)
    return name


LOCK = ".lock"      # in the run folder; kept by --fresh, which deletes the rest while the lock is held


def lock_path(run: str | Path) -> Path:
    """The file a training's process holds locked while it writes the run folder ``run``."""
    return Path(run) / LOCK


class RunFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = ExitStack()

    def hold(self) -> None:
        """Lock this run for this process until :meth:`release` (or the process ends): a second training of
        the same run folder, from this process or another, is refused in one line naming the holder."""
        from ..fileio import one_at_a_time

        def busy(holder: str) -> str:
            return (f"run folder '{self.path}' is in use by another robust-kd training "
                    f"({holder or 'a running process'}); wait for it to finish and rerun this command to resume "
                    "it, or give this run another --name")

        holder = f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        self.check_ours()       # before the lock file is put into a folder of someone else's
        try:
            self._lock.enter_context(one_at_a_time(lock_path(self.path), busy, holder))
        except OSError as err:
            raise UserError(f"cannot write in '{self.path}' ({err.strerror or type(err).__name__}); give --runs-dir "
                            "a folder you can write to") from None

    def release(self) -> None:
        self._lock.close()

    def check_ours(self) -> None:
        """Refuse a path that is not a run folder (a file, a folder of other things)."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"'{self.path}' exists and is not a folder; choose another --name")
        if self.path.is_dir() and not self.config_file.is_file() and any(c.name != LOCK for c in self.path.iterdir()):
            raise UserError(f"'{self.path}' exists and is not a robust-kd run folder; choose another --name")

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def last_checkpoint(self) -> Path:
        return self.path / "checkpoints" / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.path / "checkpoints" / "best.pt"

    @property
    def summary_file(self) -> Path:
        return self.path / "summary.json"

    @classmethod
    def prepare(cls, runs_dir: str | Path, name: str, config: dict[str, Any], *, fresh: bool = False) -> "RunFolder":
        """Create the folder for a new run, or reopen it to resume the same run. Under torchrun, rank 0
        creates (or wipes) it and the other ranks reopen it after."""
        from .. import distributed

        if distributed.world_size() > 1:
            run = cls._locked(runs_dir, name, config, fresh=fresh) if distributed.is_main() else None
            distributed.barrier()
            return run if run is not None else cls._prepare(cls(Path(runs_dir) / safe_run_name(name)), config)
        return cls._locked(runs_dir, name, config, fresh=fresh)

    @classmethod
    def _locked(cls, runs_dir: str | Path, name: str, config: dict[str, Any], *, fresh: bool) -> "RunFolder":
        """The run folder, held (see :meth:`hold`) before anything in it is read, deleted or written."""
        run = cls(Path(runs_dir) / safe_run_name(name))
        check_folder(runs_dir, "--runs-dir")
        check_name(run.path.name, runs_dir, "give a shorter --name")
        if os.path.isdir(run.path):
            check_folder(run.path, "--runs-dir")     # a run to resume: it is written in
        run.hold()
        try:
            return cls._prepare(run, config, fresh=fresh)
        except BaseException:
            run.release()
            raise

    @staticmethod
    def _prepare(run: "RunFolder", config: dict[str, Any], *, fresh: bool = False) -> "RunFolder":
        run.check_ours()
        if fresh and run.config_file.is_file():
            from ..console import stderr

            lost = _results_in(run.path)
            for child in run.path.iterdir():        # all but the lock this process holds
                if child.name != LOCK:
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            stderr().print(f"--fresh: removed '{run.path}'" + (f" with {lost}" if lost else ""), markup=False)
        if run.config_file.is_file():
            stored = run.read_config()
            differences = config_differences(stored, config)
            if differences:
                shown = "; ".join(differences[:3]) + (" …" if len(differences) > 3 else "")
                lost = _results_in(run.path)
                raise UserError(
                    f"run folder '{run.path}' holds a run with other settings ({shown}); "
                    "give this run another --name, or add --fresh to start that one over"
                    + (f" (it deletes that folder, with {lost})" if lost else "")
                )
        else:
            run.path.mkdir(parents=True, exist_ok=True)
            write_text(run.config_file, yaml.safe_dump(config, sort_keys=False))
        return run

    def read_config(self) -> dict[str, Any]:
        try:
            data = read_yaml_file(self.config_file, "run config")
        except UserError as err:
            raise UserError(f"{err}; repair it or start over with --fresh") from None
        if not isinstance(data, dict):
            raise UserError(f"'{self.config_file}' is not a config mapping; start over with --fresh")
        return data

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        """Rewrite the whole file from the history: on resume it never holds epochs twice."""
        write_text(self.metrics_file, "".join(json.dumps(record) + "\n" for record in history))

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.summary_file, summary)


def _results_in(folder: Path) -> str:
    """The results a run folder holds besides its training ('2 attack results, 1 RSA result'), or ''."""
    counts = [(len(list((folder / "attacks").glob("*.json"))), "attack result"),
              (len(list((folder / "rsa").glob("*/rsa*.json"))), "RSA result")]
    return ", ".join(f"{n} {what}{'s' if n > 1 else ''}" for n, what in counts if n)
