"""Run a suite the AutoAttack way: per-point verdicts, each attack only on still-robust points.

Points wrong on clean input are not attacked. Each step of the suite runs on the points no earlier
step broke; a point's verdict is "robust" only if every step failed on it, and the step that broke
it is recorded. Robust accuracy is therefore the point-wise worst case over the suite.

With ``state_path`` the evaluation writes its state after every batch (atomically) and a rerun
continues where it stopped; because every random choice is tied to a point's index
(:mod:`attacks.rng`), the resumed evaluation gives exactly the answer of an uninterrupted one.
The attacks also snapshot the batch in flight, and the rerun resumes inside it, in the middle
of a run's steps (:mod:`attacks.inflight`).
"""

from __future__ import annotations

import functools
import inspect
import json
import numbers
import platform
import re
import time
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

import torch
from torch import nn

from . import checks, inflight, work
from .adaptive import BPDA
from .atomic import write_atomically
from .core import CountingModel, auto_batch_size, model_device
from .errors import AttackError
from .inputs import CompletedProgress, count, eps_values, images_and_labels, unknown_keywords
from .fold import PROBE_POINTS, fold_for_evaluation
from .kept import KeptExamples
from .layout import channels_last as channels_last_layout
from .precision import check_precision, in_precision
from .pgd import PGD
from .results import AttackRecord, EvaluationResult, Flag
from .shard import Shard, gather, owns, resolve_shard
from .suites import DEFAULT_EPS, Suite, SuiteStep, build_suite, context_keywords, repeated_labels

WHITE_BOX_KINDS = ("white-box", "adaptive")
GRADIENT_KINDS = ("white-box", "single-step", "adaptive")
SANITY_POINTS = 32
BLACK_BOX_TOLERANCE = 0.002  # AutoAttack's check_square_sr threshold (share of all points)


class Progress(Protocol):
    """What an evaluation reports as it goes. A progress object may also have
    ``working(label, done, in_flight, forwards, robust, total, share, seconds)``: called about once a
    second while a batch of ``in_flight`` points is attacked (``forwards``: images passed forward in
    it so far; ``share``: the share of the batch's work done, a lower bound since points that break
    early cut it short (:mod:`attacks.work`); ``seconds``: time spent on the batch so far), and
    ``notify(text)``: a line for the user (a snapshot that could not be read; without ``notify`` it
    is a warning)."""

    def attack_started(self, label: str, points: int) -> None: ...
    def points_done(self, label: str, done: int, robust: int, total: int) -> None: ...
    def attack_finished(self, record: AttackRecord, robust: int, total: int) -> None: ...


HEARTBEAT_SECONDS = 1.0


def _working_of(progress: object) -> Callable[..., None] | None:
    """``progress.working`` as an eight-argument call; one written to the first, six-argument form
    (without ``share`` and ``seconds``) gets those six."""
    working = getattr(progress, "working", None)
    if working is None:
        return None
    try:
        inspect.signature(working).bind("", 0, 0, 0, 0, 0, 0.0, 0.0)
    except TypeError:
        return lambda label, done, in_flight, forwards, robust, total, share, seconds: working(
            label, done, in_flight, forwards, robust, total)
    except ValueError:   # no signature to read (a builtin): call it as documented
        pass
    return working


class _Heartbeat:
    """Calls ``report`` at most once per ``HEARTBEAT_SECONDS`` from the forward passes of a batch."""

    def __init__(self, report) -> None:
        self.report, self.last = report, time.monotonic()

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self.last >= HEARTBEAT_SECONDS:
            self.last = now
            self.report()


@contextmanager
def _heartbeat(counters: Sequence[CountingModel], report) -> Iterator[None]:
    """While inside: ``report()`` about once a second, from the forward passes of ``counters``
    (nothing when ``report`` is None)."""
    if report is None:
        yield
        return
    beat = _Heartbeat(report)
    for counter in counters:
        counter.listener = beat
    try:
        yield
    finally:
        for counter in counters:
            counter.listener = None


class _Silent:
    def attack_started(self, label: str, points: int) -> None: ...
    def points_done(self, label: str, done: int, robust: int, total: int) -> None: ...
    def attack_finished(self, record: AttackRecord, robust: int, total: int) -> None: ...


@functools.cache
def _versions() -> dict[str, str]:
    from importlib import metadata

    found = {"python": platform.python_version(), "torch": str(torch.__version__)}
    for package in ("robust-kd", "torchattacks", "pyautoattack"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def _computed_by() -> str:
    """The versions whose code decides a verdict, as each batch of a state records them."""
    found = _versions()
    return f"robust-kd {found.get('robust-kd', 'unknown')} with torch {found['torch']}"


def _device_name(device: torch.device) -> str:
    """The device, and on CUDA the precision of float32 convolutions (cuDNN's default is TF32, whose
    rounding alone may tip a point on the boundary: worth knowing when two devices disagree)."""
    if device.type != "cuda":
        return f"{device.type} ({torch.get_num_threads()} threads)" if device.type == "cpu" else device.type
    levels = [getattr(torch.backends.cudnn, "conv", None), torch.backends.cudnn, torch.backends]
    settings = [getattr(level, "fp32_precision", None) for level in levels]
    if settings[0] is None:   # a torch without the fp32_precision settings
        precision = "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"
    else:                     # "none" inherits from the level above; at the top it means ieee
        precision = next((s for s in settings if s not in (None, "none")), "ieee")
    return f"{torch.cuda.get_device_name(device)} (float32 convolutions: {precision})"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomically(path, lambda f: json.dump(data, f), mode="w")


def tensors_fingerprint(tensors: Iterable[torch.Tensor]) -> str:
    """CRC-32 of the dtype, shape and bytes of each tensor, in order; memory layout and device do
    not matter."""
    digest = 0
    for tensor in tensors:
        digest = zlib.crc32(f"{tensor.dtype}{tuple(tensor.shape)}".encode(), digest)
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest = zlib.crc32(data.view(torch.uint8).numpy().tobytes(), digest)
    return f"{digest:08x}"


def model_fingerprint(model: nn.Module) -> str:
    """:func:`tensors_fingerprint` of every parameter and buffer: another checkpoint, or the same
    run trained further, gives another value. Wrappers without weights of their own (counting,
    BPDA around the same model) do not matter."""
    return tensors_fingerprint([*model.parameters(), *model.buffers()])


KEY_WORDS = {"suite": "the suite", "steps": "the suite's attacks", "settings": "the attacks' settings", "eps": "eps",
             "norm": "the norm", "seed": "the seed", "n": "the number of points", "data": "the data",
             "bpda": "the BPDA stand-in", "model": "the model's weights (another checkpoint, or trained further?)"}


STATE_FIELDS = ("robust", "broken_by", "attacked", "batches", "flags", "clean_done")
BATCH_FIELDS = ("step", "first", "shard", "points", "broken", "invalid", "forwards", "backwards", "seconds")


def rank_state_path(base: Path, shard: Shard) -> Path:
    """The state file of one rank of a sharded evaluation whose unsharded state file is ``base``."""
    return base.with_suffix(f".rank{shard[0]}of{shard[1]}.json")


def state_family(base: Path) -> list[Path]:
    """Every state file of one evaluation: the unsharded one and those of each rank of any number of
    processes (an evaluation may resume with another number of processes than it started with)."""
    pattern = re.compile(re.escape(base.with_suffix("").name) + r"\.rank\d+of\d+\.json")
    siblings = sorted(p for p in base.parent.iterdir() if pattern.fullmatch(p.name)) if base.parent.is_dir() else []
    return ([base] if base.is_file() else []) + siblings


def _read_state(path: Path, key: dict[str, Any]) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "batches" not in data and isinstance(data.get("records"), dict):
            data["batches"] = _batches_of_old_state(path, data)
        if not _well_formed(data):
            raise ValueError("not a state file")
    except (OSError, ValueError) as err:    # ValueError covers bad JSON and bad UTF-8
        raise AttackError(f"'{path}' is damaged ({type(err).__name__}) and cannot be resumed from; "
                          "delete it to start over") from None
    stored = data.get("key")
    if not isinstance(stored, dict):
        raise AttackError(f"'{path}' holds the state of a different evaluation; delete it to start over")
    # fields an older version did not store ("model", "settings") cannot be compared
    differ = [k for k in key if k != "shard" and (k in stored or k not in ("model", "settings")) and stored.get(k) != key[k]]
    if differ:
        raise AttackError(f"'{path}' holds the state of a different evaluation ({', '.join(KEY_WORDS.get(k, k) for k in differ)} "
                          "differ); delete it to start over")
    return data


def _well_formed(data: Any) -> bool:
    if not isinstance(data, dict) or any(name not in data for name in STATE_FIELDS):
        return False
    lists = all(isinstance(data[name], list) for name in ("robust", "broken_by", "batches", "flags"))
    attacked = isinstance(data["attacked"], dict) and all(isinstance(v, list) for v in data["attacked"].values())
    return lists and attacked and all(isinstance(b, dict) and all(k in b for k in BATCH_FIELDS)
                                      and isinstance(b["shard"], list) and len(b["shard"]) == 2
                                      for b in data["batches"])


def _checks_well_formed(checks: Any) -> bool:
    """The checks after the suite, as a state file keeps them (older files have none)."""
    return isinstance(checks, dict) and bool(checks) and all(
        isinstance(c, dict) and isinstance(c.get("flags"), list) and all(isinstance(f, dict) for f in c["flags"])
        for c in checks.values()) and ("convergence" not in checks or "result" in checks["convergence"])


def _batches_of_old_state(path: Path, data: dict[str, Any]) -> list[dict[str, Any]]:
    """Older state files kept one count per step, not per batch: each becomes one batch, named by a
    negative first point of the file's own so that it cannot meet another file's."""
    first = -1 - zlib.crc32(path.name.encode())
    shard = data["key"].get("shard", [0, 1]) if isinstance(data.get("key"), dict) else [0, 1]
    try:
        return [{"step": label, "first": first, "shard": shard, "points": r["points_attacked"],
                 "broken": r["points_broken"], "invalid": r["invalid_examples"], "forwards": r["forwards"],
                 "backwards": r["backwards"], "seconds": r["seconds"]} for label, r in data["records"].items()]
    except (KeyError, TypeError):
        raise ValueError("not a state file") from None


def _batch_key(batch: dict[str, Any]) -> tuple[str, int]:
    """A batch of a step is named by its first point: each point is attacked once per step."""
    return batch["step"], batch["first"]


def _step_record(label: str, settings: dict[str, Any], batches: list[dict[str, Any]]) -> AttackRecord:
    """A step's counts from its batches. Its time is the slowest rank's, summed over the runs
    (numbers of processes) that took part."""
    mine = [b for b in batches if b["step"] == label]
    per_rank: dict[tuple[int, int], float] = {}
    for b in mine:
        rank, world = b["shard"]
        per_rank[(rank, world)] = per_rank.get((rank, world), 0.0) + b["seconds"]
    slowest: dict[int, float] = {}
    for (_, world), seconds in per_rank.items():
        slowest[world] = max(slowest.get(world, 0.0), seconds)
    return AttackRecord(label, settings, points_attacked=sum(b["points"] for b in mine),
                        points_broken=sum(b["broken"] for b in mine), invalid_examples=sum(b["invalid"] for b in mine),
                        nonfinite_outputs=sum(b.get("nonfinite", 0) for b in mine),
                        forwards=sum(b["forwards"] for b in mine), backwards=sum(b["backwards"] for b in mine),
                        seconds=sum(slowest.values()))


class _State:
    """What an evaluation has decided so far; saved as JSON for resuming.

    On start it merges every state file of the evaluation (:func:`state_family`), whatever number
    of processes wrote them: a point's attacks depend only on its index, so each file holds a true
    prefix of every point's history, and the merge keeps each point's furthest one. The attack
    counts are kept per batch, named by the batch's first point, so that batches known to several
    files count once."""

    def __init__(self, path: Path | None, key: dict[str, Any], family: list[Path] | None = None) -> None:
        self.path, self.key = path, key
        self.robust: list[bool] = []
        self.broken_by: list[str | None] = []
        self.attacked: dict[str, list[int]] = {}
        self.batches: list[dict[str, Any]] = []
        self.flags: list[dict[str, Any]] = []
        self.checks: dict[str, Any] = {}   # the checks after the suite: {name: {"flags": [...], ...}}
        self.clean_done = False
        self.clean_by: str | None = None   # the versions of the clean pass (older files: unknown)
        self.adopted = False
        self.seconds_now = 0.0      # attack time of this process's own batches in this run
        self.last_save = 0.0
        found = [(p, _read_state(p, key)) for p in family or [] if p.is_file()]
        n = key["n"]
        states = [d for _, d in found if d["clean_done"] and len(d["robust"]) == n == len(d["broken_by"])]
        if not states:
            return
        self.robust = [all(d["robust"][i] for d in states) for i in range(n)]
        self.broken_by = [next((d["broken_by"][i] for d in states if d["broken_by"][i] is not None), None)
                          for i in range(n)]
        labels = dict.fromkeys(label for d in states for label in d["attacked"])
        self.attacked = {label: sorted({i for d in states for i in d["attacked"].get(label, [])}) for label in labels}
        self.batches = _merge_batches(d["batches"] for d in states)
        self.flags = states[0]["flags"]
        self.checks = next((d["checks"] for d in states if _checks_well_formed(d.get("checks"))), {})
        self.clean_done = True
        self.clean_by = next((d["clean_by"] for d in states if isinstance(d.get("clean_by"), str)), None)
        self.adopted = [p for p, _ in found] != [path]     # it knows more than its own file holds

    def add_batch(self, step: str, rows: list[int], shard: Shard, earlier_seconds: float = 0.0, **counts: Any) -> None:
        """``earlier_seconds``: the part of the batch's seconds spent by an earlier run (resumed from a
        snapshot of the batch, :mod:`attacks.inflight`)."""
        self.batches.append({"step": step, "first": rows[0], "shard": list(shard), **counts, "by": _computed_by()})
        self.seconds_now += counts.get("seconds", 0.0) - earlier_seconds
        self.attacked.setdefault(step, []).extend(rows)

    def keep_check(self, name: str, outcome: dict[str, Any]) -> None:
        """Keep a check's outcome, as JSON gives it back (a rerun then returns the very same values)."""
        self.checks[name] = json.loads(json.dumps({**outcome, "by": _computed_by()}, default=str))
        self.save(force=True)

    def computed_by(self) -> list[str]:
        """Every distinct set of versions that computed part of this evaluation (older files did not
        record them: their parts are left out)."""
        found = [self.clean_by, *(b.get("by") for b in self.batches), *(c.get("by") for c in self.checks.values())]
        return sorted({v for v in found if isinstance(v, str)})

    def save(self, force: bool = False) -> None:
        if self.path is None or (not force and time.monotonic() - self.last_save < 2.0):
            return
        _write_json(self.path, {"key": self.key, "robust": self.robust, "broken_by": self.broken_by,
                                "attacked": self.attacked, "batches": self.batches, "flags": self.flags,
                                "clean_done": self.clean_done, "clean_by": self.clean_by, "checks": self.checks})
        self.last_save = time.monotonic()


def _merge_batches(lists: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The batches of several states, each once."""
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    for batches in lists:
        for batch in batches:
            merged.setdefault(_batch_key(batch), batch)
    return list(merged.values())


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    suite: str | Suite | Mapping[str, Any] = "autoattack",
    *,
    eps: float | Sequence[float] | None = None,
    norm: str = "Linf",
    n: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    state_path: str | Path | None = None,
    progress: Progress | None = None,
    keep_examples: bool = False,
    sanity_checks: bool = True,
    convergence_check: bool = True,
    bpda: nn.Module | None = None,
    gradient_views: Mapping[str, nn.Module] | None = None,
    shard: Shard | str | None = "auto",
    channels_last: bool | None = None,
    fold_batchnorm: bool = True,
    precision: str = "fp32",
    **suite_context: Any,
) -> EvaluationResult | list[EvaluationResult]:
    """Evaluate ``model`` (images in [0, 1] → logits) on ``x``, ``y`` with ``suite``.

    ``eps`` may be a list: the result is then one :class:`EvaluationResult` per eps (the
    accuracy-vs-eps curve), with a monotonicity flag where the curve rises. ``n`` takes the first
    n points. ``suite_context`` reaches suite builders (e.g. ``surrogates`` for transfer).

    ``bpda``: a differentiable stand-in for ``model`` (same outputs, or nearly). Gradient-based
    steps then compute the forward pass on ``model`` and the backward pass on ``bpda`` (BPDA);
    the verdicts are always ``model``'s own.

    ``gradient_views``: {label: module} of other ways to differentiate the same function (BPDA
    with another stand-in, EOT). The suite's gradient-based steps run again through each view, after
    the suite's own gradient steps and before its black-box ones, on the points still robust.

    The model runs in eval mode for the evaluation (its mode is put back afterwards), as every attack
    called directly does: a randomised defence must sample in eval mode too, and is attacked through
    an EOT view.

    ``shard``: (rank, world size) to attack only the points ``i`` with ``i mod world == rank`` and
    gather the verdicts of all ranks (every rank returns the whole result, equal to one process's);
    ``"auto"`` (default) shards over the initialised ``torch.distributed`` group, if any. With
    ``state_path``, each rank keeps its own state file, and a rerun resumes from all of them with
    any number of processes (one included).

    ``sanity_checks``: the checks of :mod:`attacks.checks` (flags on the result; only on the first
    eps of a list). ``convergence_check`` adds, among them, the suite's first iterative attack
    with 5× its steps on up to 32 points the suite left robust (``result.convergence``; flag
    ``not_converged``); it costs about as much as that attack on 160 points.

    ``batch_size``: points attacked together; ``None`` (default) by device (64 on CPU, 256 on CUDA:
    :data:`attacks.core.AUTO_BATCH_SIZE`). It never changes a verdict. With ``state_path``, the
    attacks also snapshot the batch in flight about every 30 s (:mod:`attacks.inflight`: Square,
    APGD, APGD-T, FAB-T, PGD and CW, in the middle of a run's steps) and a rerun with the same
    batch size resumes inside it.

    ``keep_examples``: ``result.x_adv`` holds each broken point's adversarial example (a robust
    point's clean image). With ``state_path`` the examples of each finished batch are saved beside
    the state (:mod:`attacks.kept`), so a resumed evaluation's ``x_adv`` is whole too.

    ``channels_last``: run the convolutions of ``model``, ``bpda`` and the views in channels-last
    layout for the evaluation (:mod:`attacks.layout`); ``None`` (default) does so on CPU and CUDA.

    ``fold_batchnorm``: attack copies of ``model``, ``bpda``, the views and the suite context's
    ``surrogates`` (transfer) with each eval-mode batch norm folded into the convolution before it
    (:mod:`attacks.fold`), where a copy gives its module's logits on the first points; the caller's
    modules are not changed.

    ``precision``: ``"fp32"`` (default) or ``"bf16"``: the attacks' passes under bfloat16 autocast,
    the verdicts in float32, the convergence check in float32 (:mod:`attacks.precision`).
    """
    check_precision(precision)
    eps = eps_values(eps)
    unknown_keywords(suite_context, context_keywords(), also=inspect.signature(evaluate).parameters)
    if isinstance(eps, list):
        values = eps
        paths = [None if state_path is None else Path(state_path).with_suffix(f".eps{i}.json") for i in range(len(values))]
        results = [evaluate(model, x, y, suite, eps=e, norm=norm, n=n, seed=seed, batch_size=batch_size, state_path=p,
                            progress=progress, keep_examples=keep_examples, sanity_checks=sanity_checks and i == 0,
                            convergence_check=convergence_check, bpda=bpda, gradient_views=gradient_views, shard=shard, channels_last=channels_last,
                            fold_batchnorm=fold_batchnorm, precision=precision, **suite_context)
                   for i, (e, p) in enumerate(zip(values, paths))]
        flag = checks.not_monotone_in_eps([(r.eps, r.robust_accuracy) for r in results])
        if flag is not None:
            for result in results:
                result.flags.append(flag)
        return results
    if norm not in DEFAULT_EPS:
        raise AttackError(f"norm must be one of {', '.join(DEFAULT_EPS)}, got '{norm}'")
    eps = DEFAULT_EPS[norm] if eps is None else float(eps)
    x, y = images_and_labels(x, y, model)
    if n is not None:
        n = count("n", n)
        if n > len(y):
            warnings.warn(f"n={n} but the data have {len(y)} points: evaluating all {len(y)}", stacklevel=2)
        x, y = x[:n], y[:n]
    if len(y) == 0:
        raise AttackError("no points to evaluate: the images and labels are empty")
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise AttackError("images must lie in [0, 1]; models own their normalization")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise AttackError(f"seed must be an integer, got {seed!r}")
    if state_path is not None and Path(state_path).is_dir():
        raise AttackError(f"state_path '{state_path}' is a folder; give a file in it, e.g. '{Path(state_path) / 'state.json'}'")
    if progress is not None:
        progress = CompletedProgress(progress)
    if bpda is not None and not isinstance(bpda, nn.Module):
        raise AttackError(f"bpda must be a module that stands in for the model, got {type(bpda).__name__}")
    for label, view in (gradient_views or {}).items():
        if not callable(view):
            raise AttackError(f"gradient_views['{label}'] must map images to the model's logits (e.g. "
                              f"attacks.EOT(model, 8)), got {type(view).__name__}")
    device = model_device(model)
    batch_size = auto_batch_size(device) if batch_size is None else count("batch_size", batch_size)
    if isinstance(suite_context.get("surrogates"), (list, tuple)):     # a suite names its surrogates
        suite_context = {**suite_context, "surrogates": {f"surrogate{i}": m for i, m in
                                                         enumerate(suite_context["surrogates"])}}
    parts = resolve_shard(shard)
    family = None
    if state_path is not None:
        family = state_family(Path(state_path))
        if parts[1] > 1:
            state_path = rank_state_path(Path(state_path), parts)
    was_training = model.training
    model.eval()
    try:
        fingerprint = model_fingerprint(model)   # the caller's weights: folding changes the weights, not the function
        views = dict(gradient_views or {})
        surrogates = suite_context.get("surrogates")
        surrogates = dict(surrogates) if isinstance(surrogates, Mapping) else {}
        modules = [model, bpda, *views.values(), *surrogates.values()]
        if fold_batchnorm:
            modules = fold_for_evaluation(modules, x[:PROBE_POINTS].to(device))
        attacked, bpda = modules[0], modules[1]
        views = dict(zip(views, modules[2:2 + len(views)]))
        if surrogates:
            suite_context = {**suite_context, "surrogates": dict(zip(surrogates, modules[2 + len(views):]))}
        with channels_last_layout(modules, device, channels_last):
            return _evaluate(attacked, x, y, suite, eps, norm, seed, batch_size, device, state_path,
                             progress or _Silent(), keep_examples, sanity_checks, bpda, views, suite_context, parts,
                             family, convergence_check, fingerprint=fingerprint, precision=precision)
    finally:
        model.train(was_training)


def _shape_or_type(value: Any) -> str:
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"


def _evaluate(model, x, y, suite, eps, norm, seed, batch_size, device, state_path, progress, keep_examples,
              sanity_checks, bpda, gradient_views, suite_context, shard: Shard = (0, 1),
              family: list[Path] | None = None, convergence_check: bool = True, *,
              fingerprint: str, precision: str = "fp32") -> EvaluationResult:
    started = time.perf_counter()
    counting = CountingModel(model)
    total = len(y)
    first = x[: min(batch_size, total)].to(device)
    with torch.no_grad():
        probe = model(first)
        checks.check_output(probe, y[: min(batch_size, total)].to(device))
        probe = probe.float()
        if bpda is not None:
            stand_in = bpda(first)
            if not isinstance(stand_in, torch.Tensor) or stand_in.shape != probe.shape:
                raise AttackError(f"bpda must stand in for the whole model (the same B×{probe.shape[1]} logits), got "
                                  f"{_shape_or_type(stand_in)}; to differentiate one layer as the identity, build the "
                                  "stand-in with that layer replaced (see attacks.BPDA)")
        for label, view in (gradient_views or {}).items():
            seen = view(first)
            if not isinstance(seen, torch.Tensor) or seen.shape != probe.shape:
                raise AttackError(f"gradient_views['{label}'] must map images to the model's B×{probe.shape[1]} logits, "
                                  f"got {_shape_or_type(seen)}; a function of the model (model → module) goes to suite "
                                  "'adaptive' as views=")
    built = with_gradient_views(build_suite(suite, eps=eps, norm=norm, seed=seed, num_classes=probe.shape[1],
                                            **suite_context), gradient_views or {})
    for step in built.steps:
        needed = step.attack.classes_needed()
        if probe.shape[1] < needed:
            raise AttackError(f"step '{step.label}' of suite '{built.name}' needs a model with at least {needed} "
                              f"classes ({step.attack.classes_reason()}); this one has {probe.shape[1]}: use another "
                              "suite (e.g. 'pgd') or a suite of your own without it")
    if any(s.label == "clean" for s in built.steps):
        raise AttackError(f"suite '{built.name}' has a step labelled 'clean', a label reserved for the points wrong on "
                          "clean input; give it another label")
    repeated = repeated_labels(built.steps)
    if repeated:
        raise AttackError(f"suite '{built.name}' has more than one step labelled {', '.join(repeated)}; "
                          "give each step its own label")
    key = {"suite": built.name, "steps": [s.label for s in built.steps], "eps": eps, "norm": norm, "seed": seed,
           "n": total, "data": tensors_fingerprint([x, y]), "bpda": bpda is not None, "model": fingerprint,
           "settings": json.loads(json.dumps([s.attack.result_settings() for s in built.steps], default=str))}
    if shard[1] > 1:
        key["shard"] = list(shard)
    if precision != "fp32":     # absent for fp32: states written before the setting existed stay valid
        key["precision"] = precision
    state = _State(Path(state_path) if state_path is not None else None, key, family)
    if state.adopted:
        state.save(force=True)      # this rank's file now holds all that the others knew
    flags = [Flag(**f) for f in state.flags]
    kept = x.clone() if keep_examples else None
    examples = KeptExamples(state.path, key, kept)
    if state.clean_done:     # resumed: the examples of the points its earlier runs broke
        number = {label: k for k, label in enumerate(key["steps"])}
        counted = {KeptExamples.part(number[b["step"]], b["first"]) for b in state.batches
                   if b.get("step") in number and isinstance(b.get("first"), int)}
        examples.restore(family or [], [not r and b != "clean" for r, b in zip(state.robust, state.broken_by)], counted)

    if not state.clean_done:
        correct = []
        for start in range(0, total, batch_size):
            xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
            with torch.no_grad():
                logits = counting(xb).float()
            checks.check_output(logits, yb)
            correct.append((logits.argmax(1) == yb).cpu())
        clean = torch.cat(correct)
        state.robust = clean.tolist()
        state.broken_by = [None if c else "clean" for c in state.robust]
        if sanity_checks:
            first_x, first_y = first, y[: min(batch_size, total)].to(device)
            gradient_model = BPDA(model, bpda) if bpda is not None else model
            for flag in (checks.probabilities_instead_of_logits(probe), checks.nondeterministic(model, first_x),
                         checks.gradient_health(gradient_model, first_x, first_y)):
                if flag is not None:
                    flags.append(flag)
        state.clean_done = True
        state.clean_by = _computed_by()
        state.flags = [asdict(f) for f in flags]
        state.save(force=True)
    clean_correct = [b is None or b != "clean" for b in state.broken_by]
    clean_accuracy = sum(clean_correct) / max(total, 1)

    snapshots = inflight.SnapshotFile(state.path, key)
    notify = getattr(progress, "notify", None)
    for damage in [*([] if snapshots.damaged is None else [snapshots.damaged]), *examples.damaged]:
        if callable(notify):
            notify(damage)
        else:
            warnings.warn(damage, stacklevel=2)
    try:
        records = _run_steps(built, state, counting, x, y, eps, norm, batch_size, device, bpda, progress, kept, total,
                             shard, snapshots, examples, precision)
    except BaseException:
        state.save(force=True)  # an interrupted evaluation keeps every finished batch
        raise
    if shard[1] > 1:
        records = _gather_shards(state, records, kept, shard)
        clean_correct = [b is None or b != "clean" for b in state.broken_by]   # each point as its owner saw it
        clean_accuracy = sum(clean_correct) / max(total, 1)

    flags.extend(_suite_flags(built, records, total, eps, norm))
    # the checks after the suite are kept in the state too: a rerun of a finished evaluation (an eps
    # list resumed, a retry after running out of memory) does not run them again
    if sanity_checks:
        if "large_eps" not in state.checks:
            survivors = [i for i in range(total) if clean_correct[i]][:SANITY_POINTS]
            flag = None
            if survivors:
                rows = torch.tensor(survivors)
                flag = checks.large_eps_attack_fails(
                    BPDA(counting, bpda) if bpda is not None else counting, x[rows].to(device), y[rows].to(device),
                    norm, lambda e: PGD(eps=e, norm=norm, steps=20, alpha=e / 8, loss="margin", seed=seed),
                )
            state.keep_check("large_eps", {"flags": [] if flag is None else [asdict(flag)]})
        flags.extend(Flag(**f) for f in state.checks["large_eps"]["flags"])
    convergence = None
    if sanity_checks and convergence_check:
        if "convergence" not in state.checks:
            flag, found = _convergence_check(built, state, counting, x, y, eps, norm, bpda, total, device, progress,
                                             snapshots)
            if precision != "fp32":   # the check of what a bf16 suite may have missed
                found["precision"] = "fp32"
                if flag is not None:
                    flag = replace(flag, message=f"{flag.message}; the suite ran in {precision} and this check in "
                                                 "fp32: evaluate in fp32 (--precision fp32) for numbers to report")
            state.keep_check("convergence", {"flags": [] if flag is None else [asdict(flag)], "result": found})
        flags.extend(Flag(**f) for f in state.checks["convergence"]["flags"])
        convergence = state.checks["convergence"]["result"]
    snapshots.clear()      # one left of a batch that no longer runs (e.g. another --batch-size)
    computed_with = state.computed_by()
    if len(computed_with) > 1:
        flags.append(Flag("resumed_across_versions",
                          f"parts of this evaluation were computed by different versions ({'; '.join(computed_with)}): "
                          "start over (--fresh, or delete its state file) for numbers from one version",
                          {"versions": computed_with}))
    robust = sum(state.robust) / max(total, 1)
    return EvaluationResult(
        suite=built.name, norm=norm, eps=eps, seed=seed, batch_size=batch_size, n_examples=total,
        clean_accuracy=clean_accuracy, robust_accuracy=robust, attacks=records, flags=flags,
        # the suite's passes and time over every run of it (a resumed evaluation adds up like an uninterrupted
        # one): its attacks' counts plus one clean pass; the sanity checks are not counted
        seconds=sum(r.seconds for r in records) + max(time.perf_counter() - started - state.seconds_now, 0.0),
        forwards=sum(r.forwards for r in records) + total, backwards=sum(r.backwards for r in records),
        device=_device_name(device), versions=_versions(),
        points={"label": y.tolist(), "clean_correct": clean_correct, "robust": list(state.robust),
                "broken_by": list(state.broken_by)},
        convergence=convergence, x_adv=kept, precision=precision, computed_with=computed_with, caveat=built.caveat,
    )


class _Passes:
    """Forward/backward passes of one step: through the evaluated model or through the view the
    attack differentiates (a view may call the model, e.g. BPDA, or not, e.g. a surrogate); the
    larger count of the two is the step's cost, never both added up."""

    def __init__(self, counting: CountingModel, view_counter: CountingModel | None) -> None:
        self.counters = [c for c in (counting, view_counter) if c is not None]
        self.start = [(c.forwards, c.backwards) for c in self.counters]

    def delta(self) -> tuple[int, int]:
        forwards = max(c.forwards - f for c, (f, _) in zip(self.counters, self.start))
        backwards = max(c.backwards - b for c, (_, b) in zip(self.counters, self.start))
        return forwards, backwards


def with_gradient_views(suite: Suite, views: Mapping[str, nn.Module]) -> Suite:
    """The suite's gradient steps, then each of them again through every view, then the rest."""
    if not views:
        return suite
    gradient = [s for s in suite.steps if s.kind in GRADIENT_KINDS and s.view is None]
    others = [s for s in suite.steps if not (s.kind in GRADIENT_KINDS and s.view is None)]
    extra = [SuiteStep(f"{s.label} [{label}]", s.attack, view=(lambda _, m=module: m),
                       kind="single-step" if s.kind == "single-step" else "adaptive")
             for label, module in views.items() for s in gradient]
    return Suite(suite.name, gradient + extra + others)


def _gather_shards(state: "_State", records: list[AttackRecord], kept: torch.Tensor | None,
                   shard: Shard) -> list[AttackRecord]:
    """Merge the ranks' verdicts (each rank decided its own points) and batches, and recompute each
    step's counts and robust accuracy from them."""
    mine = [i for i in range(len(state.robust)) if owns(i, shard)]
    part = {"index": mine, "robust": [state.robust[i] for i in mine], "broken_by": [state.broken_by[i] for i in mine],
            "batches": state.batches, "x_adv": kept[mine].cpu() if kept is not None and mine else None}
    parts = gather(part, shard)
    for p in parts:
        for k, i in enumerate(p["index"]):
            state.robust[i], state.broken_by[i] = p["robust"][k], p["broken_by"][k]
        if kept is not None and p["x_adv"] is not None:
            kept[p["index"]] = p["x_adv"].to(kept.device)
    state.batches = _merge_batches(p["batches"] for p in parts)
    merged = []
    total = max(len(state.robust), 1)
    for k, record in enumerate(records):
        merged_record = _step_record(record.label, record.settings, state.batches)
        merged_record.robust_accuracy_after = _robust_after(state.broken_by, {r.label for r in records[:k + 1]}) / total
        merged.append(merged_record)
    return merged


def _view_of(step: SuiteStep, counting: CountingModel, bpda: nn.Module | None) -> nn.Module:
    """The model a step's attack sees: its own view, BPDA for gradient steps, or the model itself."""
    if step.view is not None:
        return step.view(counting)
    if bpda is not None and step.kind in GRADIENT_KINDS:
        return BPDA(counting, bpda)
    return counting


def _convergence_check(built: Suite, state: "_State", counting: CountingModel, x: torch.Tensor, y: torch.Tensor,
                       eps: float, norm: str, bpda: nn.Module | None, total: int,
                       device: torch.device, progress: Progress | None,
                       snapshots: inflight.SnapshotFile) -> tuple[Flag | None, dict]:
    """The checklist's "more iterations give no gain" (reference note §5.3, item 5): the suite's
    first iterative white-box step, with more steps, on up to ``SANITY_POINTS`` of the points the
    suite left robust (the first by index, so every rank and every rerun draws the same). It is
    snapshotted like a batch of the suite (``snapshots``): an interrupted check resumes inside."""
    step = next((s for s in built.steps if s.kind in WHITE_BOX_KINDS and "steps" in s.attack.__dataclass_fields__),
                None)
    survivors = [i for i in range(total) if state.robust[i]]
    if step is None:
        return None, {"attack": None, "reason": "the suite has no iterative white-box attack"}
    probe = replace(step.attack, steps=checks.CONVERGENCE_FACTOR * step.attack.steps, seed=step.attack.seed + 1)
    if not survivors:
        return None, {"attack": step.label, "probe": probe.describe(), "points": 0, "survivors": 0, "broken": 0,
                      "estimated_overstatement": 0.0}
    rows = torch.tensor(survivors[:SANITY_POINTS])
    # reported like an attack: at CPU speed the probe can take minutes
    label = f"convergence check ({step.label}, {checks.CONVERGENCE_FACTOR}x steps)"
    progress = progress or _Silent()
    working = _working_of(progress)
    progress.attack_started(label, len(rows))
    start, tick, row_list = (counting.forwards, counting.backwards), time.perf_counter(), rows.tolist()
    saved = snapshots.for_batch(label, row_list)
    earlier = (saved["forwards"], saved["backwards"], saved["seconds"]) if saved is not None else (0, 0, 0.0)

    def so_far() -> tuple[int, int, float]:
        return (earlier[0] + counting.forwards - start[0], earlier[1] + counting.backwards - start[1],
                earlier[2] + time.perf_counter() - tick)

    with work.tracking() as share, snapshots.tracking(label, row_list, so_far, before=lambda: state.save(force=True)):
        report = None if working is None else (
            lambda: working(label, 0, len(rows), so_far()[0], sum(state.robust), total, share.read(), so_far()[2]))
        with _heartbeat([counting], report):
            found = checks.more_steps_gain(_view_of(step, counting, bpda), x[rows].to(device), y[rows].to(device),
                                           rows.to(device), probe, step.label, counting, len(survivors), total, eps,
                                           norm)
    progress.points_done(label, len(rows), sum(state.robust), total)
    return found


def _run_steps(built, state, counting, x, y, eps, norm, batch_size, device, bpda, progress, kept, total,
               shard: Shard, snapshots: inflight.SnapshotFile, examples: KeptExamples,
               precision: str = "fp32") -> list[AttackRecord]:
    records: list[AttackRecord] = []
    for number, step in enumerate(built.steps):
        done = set(state.attacked.get(step.label, []))
        todo = [i for i in range(total) if state.robust[i] and i not in done and owns(i, shard)]
        view = _view_of(step, counting, bpda)
        view_counter = CountingModel(view) if view is not counting else None
        if view_counter is not None:
            view = view_counter
        view = in_precision(view, precision)   # the verdicts below stay float32: counting(x_adv)
        progress.attack_started(step.label, len(todo) + len(done))
        attacked = len(done)
        working = _working_of(progress)
        counters = [c for c in (counting, view_counter) if c is not None]
        for start in range(0, len(todo), batch_size):
            rows = torch.tensor(todo[start:start + batch_size], dtype=torch.long)
            xb, yb, index = x[rows].to(device), y[rows].to(device), rows.to(device)
            tick, passes, row_list = time.perf_counter(), _Passes(counting, view_counter), rows.tolist()
            # a snapshot of this very batch, left by an interrupted run: its attack resumes inside it
            saved = snapshots.for_batch(step.label, row_list)
            earlier = (saved["forwards"], saved["backwards"], saved["seconds"]) if saved is not None else (0, 0, 0.0)

            def so_far(passes=passes, tick=tick, earlier=earlier) -> tuple[int, int, float]:
                """The batch's forwards, backwards and seconds, a resumed batch's earlier run included."""
                forwards, backwards = passes.delta()
                return earlier[0] + forwards, earlier[1] + backwards, earlier[2] + time.perf_counter() - tick

            # the batches before this one are on disk before its snapshot
            with work.tracking() as share, snapshots.tracking(step.label, row_list, so_far,
                                                              before=lambda: state.save(force=True)):
                report = None if working is None else (
                    lambda label=step.label, done=attacked, size=len(rows), share=share, so_far=so_far:
                    working(label, done, size, so_far()[0], sum(state.robust), total, share.read(), so_far()[2]))
                with _heartbeat(counters, report):
                    x_adv = step.attack(view, xb, yb, index).detach()
            invalid = checks.invalid_examples(x_adv, xb, eps, norm)
            with torch.no_grad():
                logits = counting(x_adv).float()
            # NaN or inf logits predict no class: the point is not classified correctly
            nonfinite = ~torch.isfinite(logits).all(dim=1) & ~invalid
            wrong = ((logits.argmax(1) != yb) | nonfinite) & ~invalid
            forwards, backwards, seconds = so_far()
            broken_rows = rows[wrong.cpu()]
            if kept is not None:     # the examples are on disk before the state marks their points broken
                kept[broken_rows] = x_adv[wrong].to(kept.device)
                examples.add(KeptExamples.part(number, row_list[0]), broken_rows, x_adv[wrong])
            for i in broken_rows.tolist():
                state.robust[i] = False
                state.broken_by[i] = step.label
            state.add_batch(step.label, row_list, shard, earlier_seconds=earlier[2], points=len(rows),
                            broken=int(wrong.sum()), invalid=int(invalid.sum()), nonfinite=int(nonfinite.sum()), forwards=forwards,
                            backwards=backwards, seconds=seconds)
            if snapshots.present:
                state.save(force=True)     # the batch's verdicts are on disk before its snapshot goes
                snapshots.clear()
            else:
                state.save()
            attacked += len(rows)
            progress.points_done(step.label, attacked, sum(state.robust), total)
        record = _step_record(step.label, step.attack.describe(), state.batches)
        robust_after = _robust_after(state.broken_by, {s.label for s in built.steps[:number + 1]})
        record.robust_accuracy_after = robust_after / max(total, 1)
        state.save(force=True)
        records.append(record)
        progress.attack_finished(record, robust_after, total)
    return records


def _robust_after(broken_by: list[str | None], steps_so_far: set[str]) -> int:
    """The points still robust after the steps ``steps_so_far``: from each point's verdict, not from
    the state now, since a resumed evaluation may already hold the verdicts of the steps after them."""
    return sum(1 for b in broken_by if b is None or (b != "clean" and b not in steps_so_far))


def _suite_flags(suite: Suite, records: list[AttackRecord], total: int, eps: float, norm: str) -> list[Flag]:
    """Flags that compare the steps of a suite with each other."""
    flags = []
    kinds = {step.label: step.kind for step in suite.steps}
    seen_white = False
    for record in records:
        kind = kinds[record.label]
        if kind in WHITE_BOX_KINDS:
            seen_white = True
        elif kind == "single-step" and seen_white and record.points_broken:
            flags.append(Flag("iterative_weaker_than_single_step",
                              f"{record.label} broke {record.points_broken} points that the iterative attacks before "
                              "it left robust: the iterative attacks are failing (gradient masking or too few steps)",
                              {"attack": record.label, "points": record.points_broken}))
        elif kind in ("black-box", "transfer") and seen_white and record.points_broken > BLACK_BOX_TOLERANCE * total:
            flags.append(Flag("black_box_beats_white_box",
                              f"{record.label} broke {record.points_broken} points ({100 * record.points_broken / total:.1f}%) "
                              "that the white-box attacks left robust: the white-box evaluation may be unreliable",
                              {"attack": record.label, "points": record.points_broken}))
        if record.nonfinite_outputs:
            flags.append(Flag("nonfinite_outputs",
                              f"the model returned NaN or inf on {record.nonfinite_outputs} of {record.label}'s examples; "
                              "they count as broken, since no class was predicted: check the model on inputs near "
                              "these (e.g. a division or a log of a value that can reach zero)",
                              {"attack": record.label, "points": record.nonfinite_outputs}))
        if record.invalid_examples:
            flags.append(Flag("adversarial_examples_outside_the_ball",
                              f"{record.label} returned {record.invalid_examples} examples outside the {norm} ball of "
                              f"radius {eps:g} or outside [0, 1]; they were not counted",
                              {"attack": record.label, "points": record.invalid_examples}))
    return flags
