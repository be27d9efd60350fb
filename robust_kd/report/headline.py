"""The study report's headline: one row per model of the plan (seeds averaged) with clean accuracy, robust
accuracy per suite and eps, transfer from its teacher, RSA to the brain and the published number beside
ours; and the robustness-vs-accuracy scatter with an arrow from each teacher to its students.

Every model the plan names has its row: a model whose job failed, or has not run, says so in its cells.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attacks import eps_label

from ..robustness import parse_eps
from . import figures
from .collect import ReportData, RunRecord
from .document import Figure, Section, Table


@dataclass
class Group:
    """The models of one headline row: the same model trained with each seed."""

    name: str
    role: str
    entries: list[dict[str, Any]] = field(default_factory=list)
    teacher_group: str = ""

    @property
    def published(self) -> dict[str, Any] | None:
        return self.entries[0].get("published")


def _eps(value: Any) -> float:
    """eps as results store it: a number, or the text it was given as (8/255)."""
    return float(parse_eps(str(value))[0])


def _option(argv: list[str], name: str, default: str) -> str:
    """The value after ``name`` in a job's command line."""
    return str(argv[argv.index(name) + 1]) if name in argv[:-1] else default


def _mean_sd(values: list[float]) -> tuple[float, float] | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _cell(stats: tuple[float, float] | None, missing: str) -> str:
    if stats is None:
        return missing
    mean, sd = stats
    return f"{mean:.2f}" if sd == 0 else f"{mean:.2f} ± {sd:.2f}"


class Headline:
    def __init__(self, data: ReportData, study: dict[str, Any]) -> None:
        self.data, self.study = data, study
        self.runs: dict[str, RunRecord] = {r.path.name: r for r in data.runs}
        self.states: dict[str, dict[str, Any]] = study.get("_states", {})
        self.groups: dict[str, Group] = {}
        teachers = {m["run"]: m["group"] for m in study["models"]}
        for m in study["models"]:
            group = self.groups.setdefault(m["group"], Group(m["group"], m["role"]))
            group.entries.append(m)
            group.teacher_group = teachers.get(m.get("teacher", ""), "")
        self.columns = self._attack_columns()
        self.has_rsa = any(res.get("kind") == "rsa" for r in self.runs.values() for res in r.rsa)
        self.has_published = any(g.published for g in self.groups.values())
        self.sources = list(dict.fromkeys(g.published["source"] for g in self.groups.values() if g.published))

    # --------------------------------------------------------------------------------------- measurements
    def _attack_columns(self) -> list[tuple[str, str, float]]:
        seen: dict[tuple[str, str, float], None] = {}
        for run in self.runs.values():
            for result in run.attacks:
                for ev in result.get("evaluations", []):
                    if ev.get("eps") is not None:
                        seen[(str(result.get("suite")), str(ev.get("norm")), _eps(ev["eps"]))] = None
        planned = [job["argv"] for job in self.study["jobs"] if job["argv"][:1] == ["attack"]]
        for argv in planned:       # a column for every planned suite and eps, even where every job of it failed
            for eps in _option(argv, "--eps", "").split(","):
                if eps and _option(argv, "--suite", ""):
                    seen.setdefault((_option(argv, "--suite", ""), _option(argv, "--norm", "Linf"), _eps(eps)), None)
        order = [_option(argv, "--suite", "") for argv in planned]
        return sorted(seen, key=lambda c: (order.index(c[0]) if c[0] in order else len(order), c[0], c[1], c[2]))

    def missing(self, run: str, *job_kinds: str) -> str:
        """What a cell says when its number is absent: the job's state (failed, blocked, not run)."""
        states = [self.states.get(f"{kind}/{run}", {}).get("state") for kind in job_kinds]
        trained = self.states.get(f"train/{run}") or self.states.get(f"distill/{run}") or {}
        if trained.get("state") in ("failed", "blocked"):
            return f"{trained['state']} (training)"
        for state in ("failed", "blocked", "running", "interrupted"):
            if state in states:
                return state
        return "missing"

    def clean(self, run: str) -> float | None:
        summary = (self.runs.get(run) and self.runs[run].summary) or {}
        value = summary.get("final_test_accuracy")
        return None if value is None else 100 * float(value)

    def robust(self, run: str, column: tuple[str, str, float]) -> float | None:
        """The lowest robust accuracy over the model's variants (a JPEG-DL model: soft and hard layer)."""
        values = []
        record = self.runs.get(run)
        for result in record.attacks if record else []:
            if str(result.get("suite")) != column[0]:
                continue
            for ev in result.get("evaluations", []):
                if str(ev.get("norm")) == column[1] and ev.get("eps") is not None and \
                        abs(_eps(ev["eps"]) - column[2]) < 1e-9:
                    value = ev.get("robust_acc", ev.get("autoattack_acc"))
                    if value is not None:
                        values.append(float(value))
        return min(values) if values else None

    def transfer_from_teacher(self, entry: dict[str, Any]) -> float | None:
        teacher = entry.get("teacher")
        if not teacher:
            return None
        for matrix in self.data.transfers:
            cells = matrix.get("cells") or {}
            for source, row in cells.items():
                if Path(source).name != teacher:
                    continue
                for target, cell in row.items():
                    if Path(target).name == entry["run"] and cell.get("points", 1):
                        return 100 * float(cell["success_rate"])
        return None

    def rsa(self, run: str) -> float | None:
        record = self.runs.get(run)
        values = [float(row["similarity"]) for result in (record.rsa if record else []) if result.get("kind") == "rsa"
                  for row in result.get("rows", []) if row.get("similarity") is not None]
        return max(values) if values else None

    # --------------------------------------------------------------------------------------------- table
    def row(self, group: Group) -> list[Any]:
        runs = [e["run"] for e in group.entries]
        clean = _mean_sd([self.clean(r) for r in runs])
        cells: list[Any] = [group.name, group.role, f"{sum(self.clean(r) is not None for r in runs)}/{len(runs)}",
                            _cell(clean, self.missing(runs[0], "train"))]
        for column in self.columns:
            cells.append(_cell(_mean_sd([self.robust(r, column) for r in runs]),
                               self.missing(runs[0], f"attack/{column[0]}", f"attack/{column[0]}-{column[1]}")))
        if self.data.transfers:
            cells.append(_cell(_mean_sd([self.transfer_from_teacher(e) for e in group.entries]),
                               "—" if group.role != "student" else "missing"))
        if self.has_rsa:
            cells.append(_cell(_mean_sd([self.rsa(r) for r in runs]), "—"))
        return cells + (self.published_cells(group, clean) if self.has_published else [])

    def published_cells(self, group: Group, clean: tuple[float, float] | None) -> list[str]:
        published = group.published
        if not published:
            return ["", "", ""]
        diff = "" if clean is None else f"{clean[0] - published['top1']:+.2f}"
        sd = f" ± {published['std']:.2f}" if published.get("std") else ""
        mark = f" [{self.sources.index(published['source']) + 1}]"
        spread = 2 * published["std"] if published.get("std") else float(self.study.get("tolerance", 1.0))
        flag = "" if clean is None else ("⚠ outside" if abs(clean[0] - published["top1"]) > spread else "within")
        return [f"{published['top1']:.2f}{sd}{mark}", diff, flag]

    def table(self) -> Table:
        columns = ["model", "role", "seeds", "clean acc (%)"]
        columns += [f"{suite} {norm} {eps_label(eps, norm)} (%)" for suite, norm, eps in self.columns]
        columns += ["transfer from teacher (success %)"] if self.data.transfers else []
        columns += ["RSA to brain (best layer)"] if self.has_rsa else []
        columns += ["published (%)", "ours − published", "vs published spread"] if self.has_published else []
        return Table(columns, [self.row(g) for g in self.groups.values()],
                     "Every model of the study (mean ± sd over seeds). Click a column to sort.", sortable=True)

    # ------------------------------------------------------------------------------------------- scatter
    def scatter(self) -> Figure | None:
        if not self.columns:
            return None
        column = self.columns[-1]
        points: dict[str, tuple[float, float, str]] = {}
        for group in self.groups.values():
            runs = [e["run"] for e in group.entries]
            clean, robust = _mean_sd([self.clean(r) for r in runs]), _mean_sd([self.robust(r, column) for r in runs])
            if clean and robust:
                points[group.name] = (clean[0], robust[0], group.role)
        if not points:
            return None
        arrows = [(g.teacher_group, g.name) for g in self.groups.values()
                  if g.teacher_group in points and g.name in points]
        label = f"{column[0]} {column[1]} {eps_label(column[2], column[1])}"
        caption = (f"Robust accuracy ({label}) against clean accuracy, one point per model (seeds averaged); "
                   "arrows go from each teacher to its students.")
        return Figure("study_scatter.png", figures.robustness_scatter(points, arrows, label), caption)


def headline_section(data: ReportData) -> Section | None:
    study = data.study
    if not study:
        return None
    headline = Headline(data, study)
    blocks: list[Table | Figure] = [headline.table()]
    scatter = headline.scatter()
    if scatter is not None:
        blocks.append(scatter)
    states = study.get("_states", {})
    failed = sorted(job for job, s in states.items() if s.get("state") in ("failed", "blocked"))
    about = f" ({study['description']})" if study.get("description") else ""
    paragraphs = [f"Study {study['settings'].get('study')}{about}, plan {study.get('plan', '')}: "
                  f"{len(study['models'])} models, "
                  f"{len(study['jobs'])} jobs. Clean accuracy is the last epoch's on the test split; published "
                  "CIFAR-100 numbers are mostly the best epoch's (chosen on the test set), about 0.2–0.4 points "
                  f"higher. A row is flagged when ours − published exceeds twice the published sd, or "
                  f"{float(study.get('tolerance', 1.0)):.2f} points where the source gives no sd."]
    if headline.sources:
        paragraphs.append("Published numbers: " + "; ".join(f"[{k}] {s}" for k, s in enumerate(headline.sources, 1))
                          + ".")
    if failed:
        paragraphs.append("Jobs that did not finish: " + "; ".join(
            f"{job} ({states[job]['state']}, log {states[job].get('log', '')})" for job in failed) + ".")
    return Section("Study headline", paragraphs, blocks)
