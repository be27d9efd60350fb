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
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from ..fileio import write_json, write_text
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


class RunFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

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
            run = cls._prepare(runs_dir, name, config, fresh=fresh) if distributed.is_main() else None
            distributed.barrier()
            return run if run is not None else cls._prepare(runs_dir, name, config, fresh=False)
        return cls._prepare(runs_dir, name, config, fresh=fresh)

    @classmethod
    def _prepare(cls, runs_dir: str | Path, name: str, config: dict[str, Any], *, fresh: bool = False) -> "RunFolder":
        run = cls(Path(runs_dir) / safe_run_name(name))
        if run.path.exists() and not run.path.is_dir():
            raise UserError(f"'{run.path}' exists and is not a folder; choose another --name")
        if fresh and run.config_file.is_file():
            from ..console import stderr

            lost = _results_in(run.path)
            shutil.rmtree(run.path)
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
        elif run.path.is_dir() and any(run.path.iterdir()):
            raise UserError(f"'{run.path}' exists and is not a robust-kd run folder; choose another --name")
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
