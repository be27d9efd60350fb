"""Everything an evaluation does before its first attack: the caller's data and options checked, the
modules made fast (:func:`prepared`: batch norms folded, convolutions channels-last), a probe pass
that checks the model and its stand-ins, the suite built and checked for this model, and the key
that names the evaluation in its files."""

from __future__ import annotations

import contextlib
import numbers
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from . import checks
from .errors import AttackError
from .fold import PROBE_POINTS, fold_for_evaluation
from .inputs import count, images_and_labels
from .layout import channels_last as channels_last_layout
from .provenance import tensors_fingerprint
from .reference import reference_suite
from .shard import Shard
from .suites import Suite, SuiteStep, build_suite, repeated_labels

GRADIENT_KINDS = ("white-box", "single-step", "adaptive")


@dataclass(frozen=True)
class Options:
    """The keywords of :func:`attacks.evaluate` (see there), as one evaluation at one eps uses them."""

    eps: float
    norm: str = "Linf"
    n: int | None = None
    seed: int = 0
    batch_size: int | None = None
    state_path: Path | None = None
    progress: Any = None
    keep_examples: bool = False
    sanity_checks: bool = True
    convergence_check: bool = True
    bpda: nn.Module | None = None
    gradient_views: Mapping[str, nn.Module] = field(default_factory=dict)
    shard: Shard | str | None = "auto"
    channels_last: bool | None = None
    fold_batchnorm: bool = True
    precision: str = "fp32"
    suite_context: Mapping[str, Any] = field(default_factory=dict)
    engine: str = "ours"


ENGINES = ("ours", "reference")   # reference: the steps computed by pyautoattack / torchattacks (attacks.reference)


def checked_data(model: nn.Module, x: Any, y: Any, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and labels as tensors, the first ``n`` of them, with every mistake said in one line."""
    x, y = images_and_labels(x, y, model)
    if n is not None:
        n = count("n", n)
        if n > len(y):
            warnings.warn(f"n={n} but the data have {len(y)} points: evaluating all {len(y)}", stacklevel=4)
        x, y = x[:n], y[:n]
    if len(y) == 0:
        raise AttackError("no points to evaluate: the images and labels are empty")
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise AttackError("images must lie in [0, 1]; models own their normalization")
    return x, y


def check_options(options: Options) -> None:
    """The options a mistake in which would only show mid-run, said before anything runs."""
    if isinstance(options.seed, bool) or not isinstance(options.seed, numbers.Integral):
        raise AttackError(f"seed must be an integer, got {options.seed!r}")
    if options.state_path is not None and Path(options.state_path).is_dir():
        raise AttackError(f"state_path '{options.state_path}' is a folder; give a file in it, e.g. "
                          f"'{Path(options.state_path) / 'state.json'}'")
    if options.bpda is not None and not isinstance(options.bpda, nn.Module):
        raise AttackError(f"bpda must be a module that stands in for the model, got {type(options.bpda).__name__}")
    for label, view in options.gradient_views.items():
        if not callable(view):
            raise AttackError(f"gradient_views['{label}'] must map images to the model's logits (e.g. "
                              f"attacks.EOT(model, 8)), got {type(view).__name__}")
    if options.batch_size is not None:
        count("batch_size", options.batch_size)
    if options.engine not in ENGINES:
        raise AttackError(f"engine must be one of {', '.join(ENGINES)}, got {options.engine!r}")
    if options.engine == "reference" and options.precision != "fp32":
        raise AttackError("the reference engine computes in fp32 only (precision='fp32'); bf16 is our engine's option")


@contextlib.contextmanager
def prepared(modules: Sequence[Any], probe: torch.Tensor, device: torch.device, *, fold: bool = True,
             channels_last: bool | None = None) -> Iterator[list[Any]]:
    """The modules as the attacks run them, for the length of the block: copies with each eval-mode
    batch norm folded into the convolution before it, where a copy gives its module's logits on
    ``probe`` (:mod:`attacks.fold`), with channels-last convolutions (:mod:`attacks.layout`; ``None``:
    on CPU and CUDA). Anything that is not a module (None, a function) is passed through. The
    caller's modules are not changed."""
    fast = fold_for_evaluation(list(modules), probe[:PROBE_POINTS].to(device)) if fold else list(modules)
    with channels_last_layout(fast, device, channels_last):
        yield fast


def _shape_or_type(value: Any) -> str:
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"


def probe(model: nn.Module, first: torch.Tensor, labels: torch.Tensor, bpda: nn.Module | None,
          views: Mapping[str, Any]) -> torch.Tensor:
    """The model's float logits on the first batch, after checking that they are logits of these
    labels and that the BPDA stand-in and every gradient view give logits of the same shape."""
    with torch.no_grad():
        logits = model(first)
        checks.check_output(logits, labels)
        logits = logits.float()
        if bpda is not None:
            stand_in = bpda(first)
            if not isinstance(stand_in, torch.Tensor) or stand_in.shape != logits.shape:
                raise AttackError(f"bpda must stand in for the whole model (the same B×{logits.shape[1]} logits), got "
                                  f"{_shape_or_type(stand_in)}; to differentiate one layer as the identity, build the "
                                  "stand-in with that layer replaced (see attacks.BPDA)")
        for label, view in views.items():
            seen = view(first)
            if not isinstance(seen, torch.Tensor) or seen.shape != logits.shape:
                raise AttackError(f"gradient_views['{label}'] must map images to the model's B×{logits.shape[1]} "
                                  f"logits, got {_shape_or_type(seen)}; a function of the model (model → module) goes "
                                  "to suite 'adaptive' as views=")
    return logits


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


def built_suite(suite: Any, options: Options, num_classes: int, views: Mapping[str, nn.Module]) -> Suite:
    """The suite for this ball and model, its gradient steps repeated through ``views``, checked: every
    step can attack a model of ``num_classes`` classes, and every label is its own and not 'clean'."""
    built = with_gradient_views(build_suite(suite, eps=options.eps, norm=options.norm, seed=options.seed,
                                            num_classes=num_classes, **options.suite_context), views)
    for step in built.steps:
        needed = step.attack.classes_needed()
        if num_classes < needed:
            raise AttackError(f"step '{step.label}' of suite '{built.name}' needs a model with at least {needed} "
                              f"classes ({step.attack.classes_reason()}); this one has {num_classes}: use another "
                              "suite (e.g. 'pgd') or a suite of your own without it")
    if any(s.label == "clean" for s in built.steps):
        raise AttackError(f"suite '{built.name}' has a step labelled 'clean', a label reserved for the points wrong on "
                          "clean input; give it another label")
    repeated = repeated_labels(built.steps)
    if repeated:
        raise AttackError(f"suite '{built.name}' has more than one step labelled {', '.join(repeated)}; "
                          "give each step its own label")
    return reference_suite(built) if options.engine == "reference" else built


def evaluation_key(built: Suite, options: Options, x: torch.Tensor, y: torch.Tensor, fingerprint: str,
                   shard: Shard) -> dict[str, Any]:
    """What names an evaluation in its files: a state, snapshot or kept example of another key is not
    this evaluation's."""
    key = {"suite": built.name, "steps": [s.label for s in built.steps], "eps": options.eps, "norm": options.norm,
           "seed": options.seed, "n": len(y), "data": tensors_fingerprint([x, y]), "bpda": options.bpda is not None,
           "model": fingerprint, "precision": options.precision, "engine": options.engine,
           "settings": [s.attack.result_settings() for s in built.steps]}
    if shard[1] > 1:
        key["shard"] = list(shard)
    return key
