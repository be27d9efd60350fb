"""Everything a report shows, read from results files alone (run folders, results JSON)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError


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


def _json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _metrics(path: Path) -> list[dict[str, Any]]:
    out = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue                 # a half-written last line of a live run
            if isinstance(row, dict):
                out.append(row)
    return out


def _jpeg_tables(run: Path) -> dict[str, list] | None:
    checkpoint = run / "checkpoints" / "last.pt"
    if not checkpoint.is_file():
        return None
    try:
        from ..checkpoint import read_checkpoint
        tables = read_checkpoint(checkpoint).get("metadata", {}).get("jpeg_tables")
    except UserError:
        return None
    return tables if isinstance(tables, dict) else None


def is_run(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in ("summary.json", "config.yaml", "attacks", "rsa"))


def read_run(path: Path) -> RunRecord:
    record = RunRecord(path=path, name=path.name, summary=_json(path / "summary.json"),
                       metrics=_metrics(path / "metrics.jsonl"))
    try:
        config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) if (path / "config.yaml").is_file() else {}
        record.config = config if isinstance(config, dict) else {}
    except yaml.YAMLError:
        record.config = {}
    for file in sorted((path / "attacks").glob("*.json")) if (path / "attacks").is_dir() else []:
        result = _json(file)
        if result and "evaluations" in result:
            result["_file"] = str(file)
            record.attacks.append(result)
    for name in ("rsa.json", "rsa_adversarial.json"):
        for file in sorted((path / "rsa").glob(f"*/{name}")) if (path / "rsa").is_dir() else []:
            result = _json(file)
            if result:
                result["_folder"] = str(file.parent)
                record.rsa.append(result)
    if "jpegdl" in record.arch:
        record.jpeg_tables = _jpeg_tables(path)
    return record


def collect(paths: list[str | Path]) -> ReportData:
    """Run folders, folders of runs (e.g. ``runs/``) and results JSON files, in the order given."""
    data = ReportData()
    seen: set[Path] = set()

    def add_json(file: Path) -> None:
        result = _json(file)
        if result is None:
            raise UserError(f"'{file}' is not a readable JSON results file")
        if "cells" in result and "sources" in result:
            data.transfers.append(result)
        elif result.get("kind") == "rsa-models":
            result["_folder"] = str(file.parent)
            data.rsa_models.append(result)
        else:
            raise UserError(f"'{file}' is not a transfer matrix or an rsa-models result; give run folders for the rest")

    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise UserError(f"'{path}' does not exist; give run folders, a runs folder or results JSON files")
        if path.is_file():
            add_json(path)
        elif is_run(path):
            if path.resolve() not in seen:
                seen.add(path.resolve())
                data.runs.append(read_run(path))
        else:
            children = sorted(p for p in path.iterdir() if p.is_dir())
            for child in children:
                if is_run(child) and child.resolve() not in seen:
                    seen.add(child.resolve())
                    data.runs.append(read_run(child))
            for file in sorted((path / "transfer").glob("*.json")) if (path / "transfer").is_dir() else []:
                add_json(file)
            for file in sorted((path / "rsa-models").glob("*/rsa_models.json")) if (path / "rsa-models").is_dir() else []:
                add_json(file)
        data.sources.append(str(path))
    if not (data.runs or data.transfers or data.rsa_models):
        raise UserError(f"nothing to report in {', '.join(map(str, paths))}: no run folders (summary.json, attacks/, "
                        "rsa/) and no results JSON")
    return data
