"""Everything a report shows, read from results files alone (run folders, results JSON)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from attacks import convergence_words, cross_check_words

from ..errors import UserError
from ..yamlfile import read_yaml_file


@dataclass
class RunRecord:
    path: Path
    name: str
    summary: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    attacks: list[dict[str, Any]] = field(default_factory=list)
    rsa: list[dict[str, Any]] = field(default_factory=list)
    jpeg_tables: dict[str, list] | None = None
    skipped: list[str] = field(default_factory=list)    # its results files left out, why

    @property
    def arch(self) -> str:
        if self.summary:
            return str(self.summary.get("model", self.name))
        for result in self.attacks:
            return str(result.get("model", {}).get("arch", self.name))
        return self.name


@dataclass
class ReportData:
    runs: list[RunRecord] = field(default_factory=list)
    transfers: list[dict[str, Any]] = field(default_factory=list)
    rsa_models: list[dict[str, Any]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)     # files found while scanning a folder and left out, why
    study: dict[str, Any] | None = None                  # a study folder's study.json, with its jobs' states


def read_study(folder: Path) -> dict[str, Any] | None:
    """The plan a study folder records (study.json) and the state of each job (``_states``), or None."""
    study = _json(folder / "study.json")
    if not study or not isinstance(study.get("models"), list) or not isinstance(study.get("settings"), dict):
        return None
    states = {}
    for file in sorted((folder / ".study" / "jobs").glob("*.json")):
        state = _json(file)
        if state:
            states[str(state.get("job") or file.stem.replace("__", "/"))] = state
    study["_states"] = states
    return study


def _json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):          # ValueError covers bad UTF-8 and bad JSON
        return None
    return value if isinstance(value, dict) else None


def _metrics(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
    except (OSError, ValueError):
        return out
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue                     # a half-written last line of a live run
        if isinstance(row, dict):
            out.append(row)
    return out


def _jpeg_tables(run: Path) -> tuple[dict[str, list] | None, str | None]:
    """The learned tables of a JPEG-DL run's last checkpoint, read (and checked) as every verb reads a
    checkpoint; or why they are left out."""
    checkpoint = run / "checkpoints" / "last.pt"
    if not checkpoint.is_file():
        return None, None
    try:
        from ..checkpoint import read_checkpoint
        tables = read_checkpoint(checkpoint)["metadata"].get("jpeg_tables")
    except UserError as err:
        return None, f"{checkpoint} (its JPEG tables): {str(err).removeprefix(repr(str(checkpoint)) + ': ')}"
    return (tables, None) if isinstance(tables, dict) else (None, None)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def attack_problem(result: dict[str, Any]) -> str | None:
    """Why an attack results file cannot be reported (e.g. a hand edit broke it), or None."""
    evaluations = result.get("evaluations")
    if not isinstance(evaluations, list) or not evaluations or not all(isinstance(e, dict) for e in evaluations):
        return "its 'evaluations' is not a list of evaluations"
    for name in ("data", "model"):
        if not isinstance(result.get(name, {}), dict):
            return f"its '{name}' is not an object"
    for k, ev in enumerate(evaluations):
        where = f"evaluation {k + 1}"
        for name in ("clean_acc", "robust_acc", "autoattack_acc", "eps_value"):
            if name in ev and ev[name] is not None and not _number(ev[name]):
                return f"{where}: '{name}' is not a number"
        for name in ("variant", "norm", "eps", "seed", "n_examples", "device"):     # shown as they are
            if ev.get(name) is not None and not (isinstance(ev[name], str) or _number(ev[name])):
                return f"{where}: '{name}' is not a number or a text"
        for name in ("attacks", "flags"):
            if not isinstance(ev.get(name, []), list) or not all(isinstance(a, dict) for a in ev.get(name, [])):
                return f"{where}: '{name}' is not a list of objects"
        if not all(isinstance(f.get("code", ""), str) and isinstance(f.get("message", ""), str)
                   for f in ev.get("flags", [])):
            return f"{where}: a flag's 'code' or 'message' is not a text"
        if not isinstance(ev.get("convergence") or {}, dict):
            return f"{where}: 'convergence' is not an object"
        if ev.get("convergence"):
            try:
                convergence_words(ev["convergence"])
            except (KeyError, TypeError, ValueError):
                return f"{where}: 'convergence' lacks the fields of a convergence check"
        if ev.get("cross_check"):
            try:
                cross_check_words(ev["cross_check"])
            except (KeyError, TypeError, ValueError, AttributeError):
                return f"{where}: 'cross_check' lacks the fields of a cross-check"
    return None


def is_run(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in ("summary.json", "config.yaml", "attacks", "rsa"))


def read_run(path: Path) -> RunRecord:
    record = RunRecord(path=path, name=path.name, summary=_json(path / "summary.json"),
                       metrics=_metrics(path / "metrics.jsonl"))
    try:
        config = read_yaml_file(path / "config.yaml", "run config") if (path / "config.yaml").is_file() else {}
        record.config = config if isinstance(config, dict) else {}
    except UserError:
        record.config = {}
    for file in sorted((path / "attacks").glob("*.json")) if (path / "attacks").is_dir() else []:
        result = _json(file)
        problem = "it is not a readable JSON object" if result is None else attack_problem(result)
        if problem is None:
            result["_file"] = str(file)
            record.attacks.append(result)
        else:
            record.skipped.append(f"{file}: {problem}")
    for name in ("rsa.json", "rsa_adversarial.json"):
        for file in sorted((path / "rsa").glob(f"*/{name}")) if (path / "rsa").is_dir() else []:
            result = _json(file)
            if result:
                result["_folder"] = str(file.parent)
                record.rsa.append(result)
    if "jpegdl" in record.arch:
        record.jpeg_tables, problem = _jpeg_tables(path)
        if problem:
            record.skipped.append(problem)
    return record


def _transfer_problem(result: dict[str, Any]) -> str | None:
    """Why a transfer matrix cannot be drawn, or None when it is complete."""
    sources, targets, cells = result.get("sources"), result.get("targets"), result.get("cells")
    if not (isinstance(sources, list) and isinstance(targets, list) and isinstance(cells, dict)
            and sources and targets):
        return "it lacks sources, targets or cells"
    for s in sources:
        for t in targets:
            cell = (cells.get(s) or {}).get(t) if isinstance(cells.get(s), dict) else None
            if not isinstance(cell, dict) or "success_rate" not in cell:
                return f"the cell {s} -> {t} is missing"
    return None


SCAN_DEPTH = 3  # runs/, runs/quickstart/, one more


class Collector:
    """What :func:`collect` has gathered so far, and the files and folders it has seen (each is read once)."""

    def __init__(self) -> None:
        self.data = ReportData()
        self.seen: set[Path] = set()
        self.reported: set[Path] = set()     # attack results files in the report, by whichever way they came

    def add_json(self, file: Path, named: bool) -> None:
        if file.resolve() in self.seen:
            return
        self.seen.add(file.resolve())
        result = _json(file)
        problem = "it is not a readable JSON object" if result is None else self._add_result(file, result)
        if problem is None:
            return
        if named:
            raise UserError(f"cannot report '{file}': {problem}; give run folders, a runs folder, attack results, "
                            "transfer matrices or rsa_models.json files")
        self.data.skipped.append(f"{file}: {problem}")

    def _add_result(self, file: Path, result: dict[str, Any]) -> str | None:
        """Add one results file by its kind; returns why it cannot be shown, or None."""
        if "cells" in result or "sources" in result:
            problem = _transfer_problem(result)
            if problem is None:
                self.data.transfers.append(result)
            return problem
        if result.get("kind") == "rsa-models":
            result["_folder"] = str(file.parent)
            self.data.rsa_models.append(result)
            return None
        if "evaluations" not in result:
            return "it is not an attack result, a transfer matrix or an rsa-models result"
        problem = attack_problem(result)            # one attack results file: shown as its run's
        run = file.parent.parent if file.parent.name == "attacks" else file.parent
        if problem is None and run.resolve() not in self.seen and file.resolve() not in self.reported:
            self.reported.add(file.resolve())       # (else its run folder is in the report already, with it)
            result["_file"] = str(file)
            self.data.runs.append(RunRecord(path=run, name=run.name, attacks=[result]))
        return problem

    def add_run(self, folder: Path) -> None:
        if folder.resolve() not in self.seen:
            self.seen.add(folder.resolve())
            run = read_run(folder)
            run.attacks = [r for r in run.attacks if Path(r["_file"]).resolve() not in self.reported]  # named before
            self.reported.update(Path(r["_file"]).resolve() for r in run.attacks)
            self.data.runs.append(run)
            self.data.skipped += run.skipped

    def scan(self, folder: Path, depth: int) -> None:
        """A folder of runs: its run folders, transfer/ and rsa-models/ results, and the same in its
        other subfolders (e.g. runs/quickstart/), ``depth`` levels down."""
        for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if is_run(child):
                self.add_run(child)
            elif child.name == "transfer":
                for file in sorted(child.glob("*.json")):
                    self.add_json(file, named=False)
            elif child.name == "rsa-models":
                for file in sorted(child.glob("*/rsa_models.json")):
                    self.add_json(file, named=False)
            elif depth > 1:
                self.scan(child, depth - 1)


def collect(paths: list[str | Path]) -> ReportData:
    """Run folders, folders of runs (e.g. ``runs/``) and results JSON files, in the order given. A JSON file
    named on the command line must be usable (else a one-line error); one found while scanning a folder is
    skipped with its reason in ``skipped``. A study folder's study.json comes along (``study``)."""
    found = Collector()
    data = found.data
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise UserError(f"'{path}' does not exist; give run folders, a runs folder or results JSON files")
        if path.is_file():
            found.add_json(path, named=True)
        elif is_run(path):
            found.add_run(path)
        else:
            data.study = data.study or read_study(path)
            found.scan(path, SCAN_DEPTH)
        data.sources.append(str(path))
    if not (data.runs or data.transfers or data.rsa_models):
        raise UserError(f"nothing to report in {', '.join(map(str, paths))}: no run folders (summary.json, attacks/, "
                        "rsa/) and no results JSON")
    names = [r.name for r in data.runs]
    for run in data.runs:                     # the same run name from two folders: say which is which
        if names.count(run.name) > 1:
            run.name = f"{run.path.parent.name}/{run.path.name}"
    return data
