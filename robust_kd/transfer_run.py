"""``robust-kd transfer``: the transfer matrix of examples made on each source against each target,
as one run object built with keywords (like :class:`robust_kd.robustness.AttackRun`)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import attacks

from . import compatibility
from .device import resolve_device
from .errors import UserError
from .fileio import write_json
from .jpeg.variants import is_jpegdl, transfer_source
from .paths import check_file, check_folder, fit_name
from .robustness import Points, check_eps, load_points, parse_eps
from .targets import ModelTarget, resolve_model

Progress = Callable[[str, int, int], None]      # (source, points done, points in all)


@dataclass
class TransferRun:
    sources: list[str]
    targets: list[str]
    eps: str | None = None          # as typed: "8/255", "0.03"; default by norm
    norm: str = "Linf"
    steps: int = 20
    n: int | None = 500
    n_given: bool = False           # --n was typed: a shortage is news then
    data: str | None = None
    data_root: str | None = None
    batch_size: int | None = None
    device: str = "auto"
    runs_dir: str = "runs"
    out: str | None = None
    jpeg_gradient: str = "identity"   # how a JPEG-DL source is differentiated: "identity" (BPDA) or "soft"
    precision: str = "fp32"

    def check(self) -> None:
        if not self.sources or not self.targets:
            raise UserError("--source and --target each need at least one model, separated by commas")
        for option, value in (("--steps", self.steps), ("--batch-size", self.batch_size), ("--n", self.n)):
            if value is not None and value < 1:
                raise UserError(f"{option} must be at least 1, got {value}")
        if self.out and os.path.isdir(self.out):
            raise UserError(f"--out '{self.out}' is a folder; give the path of a JSON file, e.g. "
                            f"{Path(self.out) / 'matrix.json'}")
        if self.out:
            check_file(self.out, "--out", suffix=".json")
        check_folder(Path(self.runs_dir) / "transfer", "--runs-dir")    # the examples made so far go there

    def execute(self, progress: Progress | None = None,
                notify: Callable[[str], None] = lambda _: None) -> tuple[Path, dict[str, Any]]:
        """Make the examples and judge them; returns (matrix file, its content)."""
        self.check()
        resolved = {name: resolve_model(name, self.runs_dir) for name in dict.fromkeys(self.sources + self.targets)}
        points = self._points(resolved, notify)
        eps = self._eps(points)
        device = resolve_device(self.device)
        slow = attacks.slow_here(self.precision, device)
        if slow:
            notify(slow)
        models = {name: t.model.to(device).eval() for name, t in resolved.items()}
        crafted_on, gradients = self._sources(models, device, notify)
        settings_name = self._settings_name(eps, len(points.y))
        path = Path(self.out) if self.out else Path(self.runs_dir) / "transfer" / f"{settings_name}.json"
        # each batch of examples is saved as it is made: an interrupted run resumes with the batches still
        # missing. Named by the settings, not by --out: the batch key cannot tell the JPEG gradient modes apart
        made_dir = Path(self.runs_dir) / "transfer" / ".state" / settings_name
        matrix = attacks.transfer_matrix(crafted_on, {t: models[t] for t in self.targets}, points.x, points.y, eps=eps,
                                         norm=self.norm, steps=self.steps, batch_size=self.batch_size,
                                         precision=self.precision, made_dir=made_dir, progress=progress)
        matrix.update({"data": points.data, "device": str(device), "source_gradients": gradients,
                       "models": {name: {"arch": t.arch, "source": t.source} for name, t in resolved.items()}})
        write_json(path, matrix)
        shutil.rmtree(made_dir, ignore_errors=True)     # the matrix holds what they were made for
        return path, matrix

    def _points(self, resolved: dict[str, ModelTarget], notify: Callable[[str], None]) -> Points:
        """The first source's data (or --data). Every model must fit the first source (the same classes,
        by number and, where both checkpoints name them, by name; image shape; pixel range) and the data."""
        first = resolved[self.sources[0]]
        reference = compatibility.of_model(f"source '{self.sources[0]}'", first.model)
        for name, target in resolved.items():
            role = "source" if name in self.sources else "target"
            compatibility.require_match(reference, compatibility.of_model(f"{role} '{name}'", target.model),
                                        "give sources and targets trained on the same classes and image size")
        points = load_points(first, self.data, self.data_root, self.n)
        if points.shortage() and self.n_given:    # the default --n (500) is more than small data sets have: not news
            notify(points.shortage())
        for name, target in resolved.items():
            if points.interface is not None:
                compatibility.require_match(compatibility.of_model(f"'{name}'", target.model), points.interface,
                                            "transfer on the data the models were trained on (--data)")
        return points

    def _eps(self, points: Points) -> float:
        values = parse_eps(self.eps) or [attacks.DEFAULT_EPS[self.norm]]
        if len(values) != 1:
            raise UserError("--eps takes one value for a transfer matrix")
        check_eps(values, self.norm, int(points.x[0].numel()))
        return values[0]

    def _sources(self, models: dict[str, Any], device: Any, notify: Callable[[str], None]) -> tuple[dict, dict]:
        """The modules the examples are made on (a JPEG-DL source as --jpeg-gradient says), and how each
        was differentiated."""
        as_crafted = {name: transfer_source(models[name], self.jpeg_gradient) for name in self.sources}
        if self.jpeg_gradient == "soft" and not any(is_jpegdl(models[name]) for name in self.sources):
            raise UserError("--jpeg-gradient soft applies to jpegdl_* sources only, and none is among --source; "
                            "drop it")
        for name in self.sources:
            if is_jpegdl(models[name]):
                how = ("its JPEG layer differentiated as the identity (BPDA)" if self.jpeg_gradient == "identity"
                       else "gradients through the soft quantizer")
                notify(f"{name} as a source: {how}")
        return ({name: module.to(device).eval() for name, (module, _) in as_crafted.items()},
                {name: how for name, (_, how) in as_crafted.items()})

    def _settings_name(self, eps: float, n: int) -> str:
        models = f"{'+'.join(Path(s).name for s in self.sources)}-to-{'+'.join(Path(t).name for t in self.targets)}"
        return fit_name(f"{models}-{self.norm}-{attacks.eps_label(eps, self.norm).replace('/', '-')}-n{n}"
                        f"{f'-steps{self.steps}' if self.steps != 20 else ''}"
                        f"{'-soft' if self.jpeg_gradient == 'soft' else ''}"
                        f"{'' if self.precision == 'fp32' else f'-{self.precision}'}")
