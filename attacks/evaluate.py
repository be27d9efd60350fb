"""Run a suite the AutoAttack way: per-point verdicts, each attack only on still-robust points.

Points wrong on clean input are not attacked. Each step of the suite runs on the points no earlier
step broke; a point's verdict is "robust" only if every step failed on it, and the step that broke
it is recorded. Robust accuracy is therefore the point-wise worst case over the suite.

With ``state_path`` the evaluation writes its state after every batch (atomically) and a rerun
continues where it stopped; because every random choice is tied to a point's index
(:mod:`attacks.rng`), the resumed evaluation gives exactly the answer of an uninterrupted one.
The attacks also snapshot the batch in flight, and the rerun resumes inside it, in the middle
of a run's steps (:mod:`attacks.inflight`).

This module is the front door only: the preparation is in :mod:`attacks.prepare`, the run of the
suite in :mod:`attacks.run`, what follows its last step in :mod:`attacks.finish`, the state file in
:mod:`attacks.state`.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from . import checks, finish, memory
from .core import auto_batch_size, model_device
from .fold import PROBE_POINTS
from .errors import AttackError
from .inputs import eps_values, unknown_keywords
from .kept import KeptExamples
from .precision import check_precision
from .prepare import Options, built_suite, check_options, checked_data, evaluation_key, prepared, probe
from .progress import CompletedProgress, Progress, say
from .provenance import model_fingerprint
from .results import EvaluationResult
from .run import EvaluationRun
from .shard import Shard, resolve_shard
from .snapshots import SnapshotFile
from .state import EvaluationState, rank_state_path, state_family
from .suites import DEFAULT_EPS, Suite, context_keywords


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
    engine: str = "ours",
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

    ``engine``: ``"ours"`` (default) or ``"reference"``: every step computed by the package it comes
    from (pyautoattack for APGD, APGD-T, FAB-T and Square; torchattacks for PGD, FGSM and CW) on the same
    batches, with the model as given (no folding, the plain layout, fp32); the verdicts, state and
    flags stay ours (:mod:`attacks.reference`). A step no reference computes is an error.
    """
    check_precision(precision)
    eps = eps_values(eps)
    unknown_keywords(suite_context, context_keywords(), also=inspect.signature(evaluate).parameters)
    if isinstance(suite_context.get("surrogates"), (list, tuple)):     # a suite names its surrogates
        suite_context = {**suite_context, "surrogates": {f"surrogate{i}": m for i, m in
                                                         enumerate(suite_context["surrogates"])}}
    options = Options(
        eps=eps, norm=norm, n=n, seed=seed, batch_size=batch_size,
        state_path=None if state_path is None else Path(state_path), progress=progress, keep_examples=keep_examples,
        sanity_checks=sanity_checks, convergence_check=convergence_check, bpda=bpda,
        gradient_views=dict(gradient_views or {}), shard=shard,
        fold_batchnorm=fold_batchnorm and engine != "reference", precision=precision, suite_context=suite_context,
        # the reference attacks the model as given: its own layout, no folded copy
        channels_last=False if engine == "reference" else channels_last, engine=engine)
    if isinstance(eps, list):
        return _curve(model, x, y, suite, options, eps)
    return _evaluate(model, x, y, suite, options)


def _curve(model: nn.Module, x: Any, y: Any, suite: Any, options: Options,
           values: list[float]) -> list[EvaluationResult]:
    """One result per eps (each with its own state file), with a flag on all of them where the robust
    accuracy rises with eps somewhere. The sanity checks run on the first eps only."""
    results = []
    for i, eps in enumerate(values):
        path = None if options.state_path is None else options.state_path.with_suffix(f".eps{i}.json")
        results.append(_evaluate(model, x, y, suite, replace(options, eps=eps, state_path=path,
                                                             sanity_checks=options.sanity_checks and i == 0)))
    flag = checks.not_monotone_in_eps([(r.eps, r.robust_accuracy) for r in results])
    if flag is not None:
        for result in results:
            result.flags.append(flag)
    return results


def _evaluate(model: nn.Module, x: Any, y: Any, suite: Any, options: Options) -> EvaluationResult:
    """One eps: the options checked, the modules prepared, the model in eval mode for the length of it."""
    if options.norm not in DEFAULT_EPS:
        raise AttackError(f"norm must be one of {', '.join(DEFAULT_EPS)}, got '{options.norm}'")
    options = replace(options, eps=DEFAULT_EPS[options.norm] if options.eps is None else float(options.eps))
    x, y = checked_data(model, x, y, options.n)
    check_options(options)
    options = replace(options, shard=resolve_shard(options.shard))
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        fingerprint = model_fingerprint(model)   # the caller's weights: folding changes the weights, not the function
        views, surrogates = options.gradient_views, dict(options.suite_context.get("surrogates") or {})
        modules = [model, options.bpda, *views.values(), *surrogates.values()]
        with prepared(modules, x, device, fold=options.fold_batchnorm, channels_last=options.channels_last) as fast:
            options = replace(options, bpda=fast[1], gradient_views=dict(zip(views, fast[2:2 + len(views)])))
            if surrogates:
                options = replace(options, suite_context={**options.suite_context,
                                                          "surrogates": dict(zip(surrogates, fast[2 + len(views):]))})
            return _run(fast[0], x, y, suite, options, device, fingerprint)
    finally:
        model.train(was_training)


def _run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, suite: Any, options: Options, device: torch.device,
         fingerprint: str) -> EvaluationResult:
    started = time.perf_counter()
    batch_size = auto_batch_size(device) if options.batch_size is None else options.batch_size
    first = x[:batch_size].to(device)
    logits = probe(model, first, y[:batch_size].to(device), options.bpda, options.gradient_views)
    built = built_suite(suite, options, logits.shape[1], options.gradient_views)
    shard: Shard = options.shard  # type: ignore[assignment]   # resolved by _evaluate
    key = evaluation_key(built, options, x, y, fingerprint, shard)
    state_path, family = _state_files(options.state_path, shard)
    state = EvaluationState(state_path, key, family)
    if state.adopted:
        state.save(force=True)      # this rank's file now holds all that the others knew
    kept = x.clone() if options.keep_examples else None
    run = EvaluationRun(model, x, y, built, options, batch_size, device, shard, CompletedProgress(options.progress),
                        state, SnapshotFile(state.path, key), KeptExamples(state.path, key, kept), kept,
                        cap=memory.rows_that_fit(model, first[:PROBE_POINTS]))
    if state.clean_done:     # resumed: the examples of the points its earlier runs broke
        _restore_examples(run, family)
    else:
        run.clean_pass(first, logits)
    _say_damage(run)
    try:
        records = run.run_steps()
    except BaseException:
        state.save(force=True)  # an interrupted evaluation keeps every finished batch
        raise
    if shard[1] > 1:
        records = finish.gather_shards(run, records)
    return _finished(run, records, started)


def _state_files(state_path: Path | None, shard: Shard) -> tuple[Path | None, list[Path]]:
    """This process's state file (each rank of a sharded evaluation has its own) and every file of the
    evaluation, whatever number of processes wrote them."""
    if state_path is None:
        return None, []
    family = state_family(state_path)
    return (rank_state_path(state_path, shard) if shard[1] > 1 else state_path), family


def _restore_examples(run: EvaluationRun, family: list[Path]) -> None:
    number = {step.label: k for k, step in enumerate(run.built.steps)}
    counted = {KeptExamples.part(number[b["step"]], b["first"]) for b in run.state.batches
               if b.get("step") in number and isinstance(b.get("first"), int)}
    broken = [not r and b != "clean" for r, b in zip(run.state.robust, run.state.broken_by)]
    run.examples.restore(family, broken, counted)


def _say_damage(run: EvaluationRun) -> None:
    """A snapshot or kept examples that could not be read: only a shortcut is lost, but the user hears
    of it (through the progress's ``notify``, else as a warning)."""
    for damage in [*([] if run.snapshots.damaged is None else [run.snapshots.damaged]), *run.examples.damaged]:
        say(run.progress, damage)


def _finished(run: EvaluationRun, records: list, started: float) -> EvaluationResult:
    """The flags and checks after the suite, then the result."""
    options = run.options
    clean_correct = [b is None or b != "clean" for b in run.state.broken_by]   # each point as its owner saw it
    flags = run.flags_so_far() + finish.suite_flags(run.built, records, run.total, options.eps, options.norm)
    if options.sanity_checks:
        flags += finish.large_eps_check(run, clean_correct)
    convergence = None
    if options.sanity_checks and options.convergence_check:
        found, convergence = finish.convergence_check(run)
        flags += found
    run.snapshots.clear()      # one left of a batch that no longer runs (e.g. another --batch-size)
    flag = finish.versions_flag(run.state.computed_by())
    return finish.result(run, records, flags + ([] if flag is None else [flag]), convergence, started)
