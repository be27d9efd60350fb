"""``robust-kd attack`` behind the command line: points, model variants, suites, results files.

The attack library (:mod:`attacks`) knows nothing of runs; this module decides what to attack
(for a ``jpegdl_*`` model: the soft layer, and the hard layer through BPDA, with transfer from the
twin without the JPEG layer), where results go (``<run>/attacks/<suite>-<norm>-<eps>-n<N>-seed<S>.json``)
and how an interrupted evaluation resumes (per-variant state files in ``<run>/attacks/.state/``).
"""

from __future__ import annotations

import gc
import shutil
import time
from dataclasses import dataclass, field
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

import attacks
from attacks import AttackError, ModelOutputError, check_precision, slow_here

from . import compatibility, distributed
from .bounds import shown
from .device import resolve_device
from .errors import UserError
from .fileio import one_at_a_time, write_json
from .paths import check_folder, fit_name
from .jpeg.variants import hard_model_bpda, is_jpegdl, soft_model_bpda, twin_without_jpeg
from .targets import ModelTarget
from .yamlfile import read_yaml_file

MAX_LINF_EPS = 1.0


class TypedEps(float):
    """An eps value that remembers how it was typed ('300/255'), so that an error can echo it."""

    typed: str

    def __new__(cls, value: float, typed: str) -> "TypedEps":
        made = super().__new__(cls, value)
        made.typed = typed
        return made


def parse_eps(text: str | None) -> list[float] | None:
    """'8/255', '2/255,4/255,8/255' or '0.5' → floats; None stays None (the norm's default)."""
    if text is None:
        return None
    values: list[float] = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            value = TypedEps(float(Fraction(part)), part)
        except ZeroDivisionError:
            raise UserError(f"--eps: '{part}' divides by zero; write e.g. 8/255 or 0.5") from None
        except (ValueError, OverflowError):     # OverflowError: a number beyond float's range, e.g. 1e400
            raise UserError(f"--eps: '{part}' is not a number; write e.g. 8/255 or 0.5, "
                            "or a list 2/255,4/255,8/255") from None
        twin = next((v for v in values if v == value), None)
        if twin is not None:
            raise UserError(f"--eps lists {twin.typed} and {part}, the same value; give each eps once")
        values.append(value)
    return values


def check_eps(values: list[float], norm: str, image_numel: int) -> None:
    """Each eps within what [0, 1] images allow: 1 (Linf), √pixels (L2), pixels (L1)."""
    limit = {"Linf": MAX_LINF_EPS, "L1": float(image_numel)}.get(norm, image_numel ** 0.5)
    example = {"Linf": "8/255", "L2": "0.5", "L1": "12"}[norm]
    for value in values:
        if not 0 < value <= limit:
            raise UserError(f"--eps {getattr(value, 'typed', f'{value:g}')} is out of range for {norm} on [0, 1] "
                            f"images: use a value in (0, {limit:g}] (e.g. {example})")


def shipped_suites() -> dict[str, tuple[Path, dict[str, Any]]]:
    """The suite files in configs/suites/ that read as YAML mappings: {name: (path, content)}."""
    folder = Path(str(resources.files("robust_kd.configs") / "suites"))
    found = {}
    for path in sorted(folder.glob("*.yaml")):
        try:
            data = read_yaml_file(path, "suite file")
        except UserError:
            continue
        if isinstance(data, dict) and path.stem != "example_custom":
            found[path.stem] = (path, data)
    return found


def suite_source(suite: str) -> str | dict[str, Any]:
    """A registered suite name, or the mapping of a YAML suite file (a path, or a name in configs/suites/)."""
    if suite in attacks.SUITES:
        return suite
    path = Path(suite)
    if not path.is_file():
        shipped = Path(str(resources.files("robust_kd.configs") / "suites" / f"{suite}.yaml"))
        if not shipped.is_file() and path.suffix.lower() in (".yaml", ".yml"):
            raise UserError(f"suite file '{suite}' does not exist; check the path, or run robust-kd attack --list "
                            "for the suites that ship")
        if not shipped.is_file():
            import difflib

            names = sorted(set(attacks.list_suites()) | set(shipped_suites()))
            close = difflib.get_close_matches(suite, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UserError(f"unknown suite '{suite}'{hint}; choose one of: {', '.join(names)}, "
                            "or give a YAML suite file (see configs/suites/example_custom.yaml)")
        path = shipped
    data = read_yaml_file(path, "suite file")
    if not isinstance(data, dict):
        raise UserError(f"suite file '{path}' must hold a mapping with 'name' and 'attacks'")
    data.setdefault("name", path.stem)
    name = data["name"]
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"suite file '{path}': 'name' must be a non-empty text (it names the results files), "
                        f"got {shown(name)}; write e.g. name: my_suite")
    return data


def suite_name(source: str | Mapping[str, Any]) -> str:
    return source if isinstance(source, str) else str(source["name"])


def suite_caveat(source: str | Mapping[str, Any]) -> str:
    """A suite file's ``caveat`` (e.g. autoattack_quick: not AutoAttack), one line; '' if none."""
    caveat = source.get("caveat", "") if isinstance(source, Mapping) else ""
    return " ".join(caveat.split()) if isinstance(caveat, str) else ""


@dataclass
class Points:
    x: torch.Tensor  # N×C×H×W float in [0, 1], on the CPU
    y: torch.Tensor
    data: str
    class_names: tuple[str, ...]
    short_of: int | None = None     # the --n asked for, when the data set has fewer test points
    interface: compatibility.Interface | None = None    # classes, image shape and pixel range of the data

    def shortage(self) -> str | None:
        """A line for the user when --n asked for more points than the test split has, or None."""
        if self.short_of is None:
            return None
        return f"--n {self.short_of}: {self.data} has {len(self.y)} test points; using all {len(self.y)}"


def load_points(target: ModelTarget, data: str | None, data_root: str | None, n: int | None) -> Points:
    """The first ``n`` test points of the data set (the model's own by default)."""
    from .data import load_dataset
    from .data.registry import stored_root

    name = data or target.data or "embedded"
    own_root = stored_root(name, target.data_root) if name == target.data else None
    root = data_root if data_root is not None else own_root
    options = target.data_options if name == target.data else {}
    dataset = load_dataset(name, root, **options)
    images, labels = dataset.test_images, dataset.test_labels
    if n is not None:
        if n < 1:
            raise UserError(f"--n must be at least 1, got {n}")
        images, labels = images[:n], labels[:n]
    side = images.shape[-1] if images.shape[-1] == images.shape[-2] else None
    interface = compatibility.of_data(name, len(dataset.class_names), images.shape[1], side, dataset.class_names)
    compatibility.require_match(compatibility.of_model(target.name, target.model), interface,
                                "attack it on the data it was trained on (--data)")
    return Points(images.float() / 255.0, labels.long(), name, dataset.class_names,
                  short_of=n if n is not None and n > len(labels) else None, interface=interface)


@dataclass
class Variant:
    """One model to evaluate, with what the suite may use around it."""

    label: str
    model: nn.Module
    note: str
    context: dict[str, Any] = field(default_factory=dict)

    def modules(self) -> list[nn.Module]:
        """The model and every module the suite may run beside it (transfer surrogates, gradient views)."""
        context = self.context
        return [self.model, *context.get("surrogates", {}).values(), *context.get("gradient_views", {}).values()]

    def to(self, device: torch.device) -> "Variant":
        """All of them on ``device``, in eval mode. The views are copies made with the model on the CPU (a
        JPEG layer's tables): moving only the model would leave them behind."""
        for module in self.modules():
            module.to(device).eval()
        return self


def variants_of(target: ModelTarget, suite: str) -> list[Variant]:
    """The model itself; for a JPEG-DL model its soft and hard versions (see :mod:`robust_kd.jpeg.variants`)."""
    model = target.model
    if not is_jpegdl(model):
        return [Variant("model", model, "the model as given")]
    twin = {"twin-without-jpeg": twin_without_jpeg(model)}
    hard_views = {"bpda-soft": hard_model_bpda(model, "soft")} if suite == "adaptive" else {}
    return [
        Variant("soft", model, "JPEG layer with the soft quantizer (as trained): white-box through it, then through "
                "BPDA with the identity; transfer from the network without the JPEG layer",
                {"surrogates": twin, "gradient_views": {"bpda-identity": soft_model_bpda(model)}}),
        Variant("hard", hard_model_bpda(model, "identity"), "real JPEG codec (hard quantizer): gradients through BPDA "
                "with the identity" + (", then with the soft layer" if hard_views else "")
                + "; transfer from the network without the JPEG layer",
                {"surrogates": twin, "gradient_views": hard_views}),
    ]


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def results_stem(suite: str, norm: str, eps: list[float] | None, n: int, seed: int, data: str = "",
                 checkpoint: str = "", precision: str = "fp32", engine: str = "ours") -> str:
    """The results file's name: every setting that changes the numbers and that a rerun must not mix
    up (``data``: only when it is not the model's own; ``checkpoint``: only when not the run's last.pt;
    ``precision``: only when not fp32; ``engine``: only when not ours). A name too long for a file system
    (a long suite name, many radii) keeps its start and a digest of the rest (paths.fit_name)."""
    eps_text = "default" if eps is None else "_".join(attacks.eps_label(e, norm).replace("/", "-") for e in eps)
    parts = (data, checkpoint, "" if precision == "fp32" else precision, "" if engine == "ours" else engine)
    extra = "".join(f"-{_safe(part)}" for part in parts if part)
    return fit_name(f"{_safe(suite)}-{norm}-{eps_text}-n{n}-seed{seed}{extra}")


@dataclass
class AttackRun:
    target: ModelTarget
    suite: str | dict[str, Any]
    eps: list[float] | None
    norm: str
    n: int | None
    seed: int
    batch_size: int | None      # None: by device (attacks.core.AUTO_BATCH_SIZE)
    data: str | None = None
    data_root: str | None = None
    device: str = "auto"
    fresh: bool = False
    eot: int = 0
    convergence_check: bool = True
    save_examples: bool = False     # the broken points' adversarial examples, as .npz and a figure (examples_out)
    precision: str = "fp32"         # what the attacks compute in (attacks.precision); verdicts stay float32
    engine: str = "ours"            # or "reference": pyautoattack / torchattacks compute the steps (attacks.reference)
    cross_check: bool = False       # also evaluate with the other engine and list the verdicts that differ

    def execute(self, progress: Any = None, on_variant: Callable[[str, str], None] = lambda label, note: None,
                notify: Callable[[str], None] = lambda _: None) -> tuple[Path, dict[str, Any]]:
        """Evaluate every variant; returns (results file, its content)."""
        if self.norm not in ("Linf", "L2", "L1"):
            raise UserError(f"--norm must be Linf, L2 or L1, got '{self.norm}'")
        if self.batch_size is not None and self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        check_folder(self.target.results_dir, "the results folder",
                     advice="give --model a copy of the run folder in a place you can write to (for a pretrained "
                            "model: another --runs-dir)")
        try:
            check_precision(self.precision)
        except AttackError as err:
            raise UserError(f"--{err}") from None
        if self.precision != "fp32" and (self.engine == "reference" or self.cross_check):
            raise UserError("--engine reference and --cross-check compute in fp32 only; drop --precision "
                            f"{self.precision}")
        if self.suite == "transfer" and not is_jpegdl(self.target.model):
            raise UserError("suite 'transfer' attacks a jpegdl_* model with examples made on its twin without the JPEG "
                            "layer; for other models use robust-kd transfer --source A,B --target C,D")
        points = load_points(self.target, self.data, self.data_root, self.n)
        if points.shortage():
            notify(points.shortage())
        if self.eps is None:
            self.eps = [attacks.DEFAULT_EPS[self.norm]]
        check_eps(self.eps, self.norm, int(points.x[0].numel()))
        per_pixel = [e.typed for e in self.eps if "/255" in getattr(e, "typed", "")]
        if self.norm == "L2" and per_pixel:     # a Linf habit: 8/255 as an L2 radius is a tiny ball
            notify(f"--eps {', '.join(per_pixel)} with --norm L2 bounds the whole image's perturbation, "
                   "not each pixel's (L2 radii are usually 0.5 on CIFAR-10); if you meant a per-pixel bound, "
                   "use --norm Linf")
        device = resolve_device(self.device)
        name = suite_name(self.suite)
        other_data = points.data if self.data is not None and self.data != self.target.data else ""
        stem = results_stem(name, self.norm, self.eps, len(points.y), self.seed, other_data, self.target.checkpoint_tag,
                            self.precision, self.engine)
        slow = slow_here(self.precision, device)
        if slow is not None:
            notify(slow)
        out_dir = self.target.results_dir
        path = out_dir / f"{stem}.json"
        state_dir = out_dir / ".state"
        # two commands evaluating the same thing at once would both do all of the work into one state
        lock = state_dir / f"{stem}.lock"
        with distributed.entered_on_main(one_at_a_time(
                lock, f"another robust-kd attack is running this evaluation now (results: '{path}'); wait for it to "
                      "finish, then rerun this command to read its results")):
            if self.fresh and distributed.is_main():
                # its states and snapshots, and the temporary file of a write cut off by a kill
                for old in [*state_dir.glob(f"{stem}.*"), *state_dir.glob(f".{stem}.*.tmp"),
                            *out_dir.glob(f"{stem}.*.examples.npz"), *out_dir.glob(f"{stem}.*.examples.png")]:
                    if old != lock:
                        shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)   # a folder: kept examples
            distributed.barrier()          # under torchrun: nobody starts before old state is gone
            return self._evaluate_variants(points, name, stem, path, state_dir, device, progress, on_variant, notify)

    def _evaluate_variants(self, points: Points, name: str, stem: str, path: Path, state_dir: Path, device,
                           progress: Any, on_variant: Callable[[str, str], None],
                           notify: Callable[[str], None]) -> tuple[Path, dict[str, Any]]:
        out_dir = path.parent
        evaluations: list[dict[str, Any]] = []
        started = time.perf_counter()
        variants = variants_of(self.target, name if isinstance(self.suite, str) else "custom")
        for k, variant in enumerate(variants):
            model = variant.to(device).model
            on_variant(variant.label, variant.note)
            results = self._evaluate(model, points, variant, state_dir / f"{stem}.{variant.label}.json", progress,
                                     notify)
            checks = self._cross_checks(results, model, points, variant, state_dir / f"{stem}.{variant.label}",
                                        progress, on_variant, notify)
            for result, check in zip(results if isinstance(results, list) else [results], checks):
                saved = self._save_examples(result, points, model, device, out_dir, f"{stem}.{variant.label}",
                                            notify)
                evaluations.append({"variant": variant.label, "variant_note": variant.note, **result.to_dict(),
                                    **saved, **check})
            content = self._content(points, evaluations, time.perf_counter() - started, device,
                                    pending=[v.label for v in variants[k + 1:]])
            if distributed.is_main():
                write_json(path, content)
        return path, content

    def _save_examples(self, result, points, model, device, out_dir, name, notify) -> dict[str, Any]:
        if not self.save_examples or not distributed.is_main():
            return {}
        from .examples_out import save_examples

        eps = attacks.eps_label(result.eps, result.norm)
        saved = save_examples(result, points.x, points.class_names, model, device, out_dir,
                              f"{name}.{eps.replace('/', '-')}", f"{self.target.name} ({name.rsplit('.', 1)[-1]}), "
                              f"{result.norm} eps {eps}")
        if saved["examples"]["missing"]:
            notify(f"{name.rsplit('.', 1)[-1]}, eps {eps}: {saved['examples']['missing']} broken points have no "
                   "example: an earlier run broke them "
                   "without --save-examples (or their saved examples were damaged); add --fresh to attack them again")
        return saved

    def _cross_checks(self, results, model, points, variant, state_stem: Path, progress, on_variant,
                      notify) -> list[dict[str, Any]]:
        """With ``cross_check``: the same evaluation by the other engine (its own state file), and per eps
        the verdicts that differ (``attacks.cross_check``), kept in the evaluation as ``cross_check``."""
        results = results if isinstance(results, list) else [results]
        if not self.cross_check:
            return [{} for _ in results]
        other = "reference" if self.engine == "ours" else "ours"
        on_variant(f"{variant.label}, cross-check", f"the same evaluation by the {other} engine")
        others = self._evaluate(model, points, variant, state_stem.with_name(f"{state_stem.name}.{other}.json"),
                                progress, notify, engine=other, keep=False)
        checks = []
        for result, twin in zip(results, others if isinstance(others, list) else [others]):
            ours, reference = (result, twin) if self.engine == "ours" else (twin, result)
            check = attacks.cross_check(ours, reference)
            if check["differ"]:
                result.flags.append(attacks.Flag("engines_disagree", attacks.cross_check_words(check),
                                                 {"differ": len(check["differ"])}))
            checks.append({"cross_check": check})
        return checks

    def _evaluate(self, model, points, variant, state_path, progress, notify, engine: str | None = None,
                  keep: bool = True):
        batch_size = self.batch_size or attacks.auto_batch_size(attacks.model_device(model))
        while True:
            try:
                eps = self.eps if len(self.eps) > 1 else self.eps[0]
                return attacks.evaluate(model, points.x, points.y, self.suite, eps=eps, norm=self.norm,
                                        seed=self.seed, batch_size=batch_size, state_path=state_path,
                                        progress=progress, keep_examples=self.save_examples and keep,
                                        convergence_check=self.convergence_check, precision=self.precision,
                                        engine=engine or self.engine,
                                        **({"eot": self.eot} if self.eot else {}), **variant.context)
            except RuntimeError as err:
                if not attacks.out_of_memory(err):
                    raise
                if batch_size == 1:
                    raise UserError("out of GPU memory even with batch size 1; use --device cpu") from None
            except ModelOutputError as err:
                raise UserError(f"{self.target.name}: {err}") from None
            except AttackError as err:
                message = str(err).replace("delete it to start over", "add --fresh to start over")
                raise UserError(message) from None
            # out of memory; outside the except block, so that the failed attempt's tensors (held by its
            # traceback until there) are freed before the cache is emptied
            batch_size = max(batch_size // 2, 1)
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            notify(f"out of GPU memory: retrying with --batch-size {batch_size} (finished batches are kept)")

    def _content(self, points: Points, evaluations: list[dict[str, Any]], seconds: float, device,
                 pending: list[str]) -> dict[str, Any]:
        """The results file's content; ``pending``: the variants still to evaluate (the file is written
        after each one, so an interrupted run leaves one that says what it lacks)."""
        first = evaluations[0]
        headline_acc = "autoattack_acc" if "autoattack_acc" in first else "robust_acc"
        weakest = min((e for e in evaluations if e["eps"] == first["eps"]), key=lambda e: e.get(headline_acc, 100.0))
        headline = {k: weakest[k] for k in ("threat_model", "eps", "clean_acc", headline_acc) if k in weakest}
        headline["headline_variant"] = weakest["variant"]
        return {
            **headline,
            "name": self.target.name,
            "model": {"arch": self.target.arch, "source": self.target.source,
                      "variants": sorted({e["variant"] for e in evaluations})},
            "data": {"name": points.data, "split": "test", "n_examples": len(points.y)},
            "suite": suite_name(self.suite),
            "norm": self.norm,
            "seed": self.seed,
            "device": str(device),
            "precision": self.precision,
            "engine": self.engine,
            "processes": distributed.world_size(),
            "seconds": seconds,
            "flags": sorted({f["code"] for e in evaluations for f in e["flags"]}),
            "evaluations": evaluations,
            "complete": not pending,
            **({"variants_pending": pending} if pending else {}),
            **({"suite_caveat": caveat} if (caveat := suite_caveat(self.suite)) else {}),
            "note": "accuracies are percentages; the top-level ones are those of the variant with the lowest robust "
                    "accuracy (headline_variant) at the first eps given",
        }
