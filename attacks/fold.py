"""Batch norm folded into the convolution before it, for the length of an evaluation.

In eval mode a BatchNorm2d is a per-channel affine map of its input. When that input is the output
of a Conv2d and nothing else reads it, the affine map can live in the convolution's weights and
bias instead: one pass over the activations fewer, forward and backward. On a 2-core CPU that makes
PGD over whole batches 1.09-1.15x faster; a whole AutoAttack evaluation, whose time goes to passes
over a few surviving points, gains nothing measurable (docs/benchmarks.md). The function is the
same; the logits differ by float rounding only.

The caller's model is never changed: :func:`folded_copy` returns a folded copy, and
:func:`fold_for_evaluation` uses it only where it gives the model's logits on a probe batch.
Conv→BN pairs are found with ``torch.fx`` in the graph of the whole model, where submodules
without a convolution or batch norm (a JPEG layer) are opaque; a model that still does not trace
is not folded.
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections import Counter
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from .precision import full_float32

# The folded copy may differ from the model by float rounding, relative to the logits' scale.
FOLD_TOLERANCE = 1e-4
PROBE_POINTS = 8   # images on which a folded copy must give its module's logits


def _foldable_norm(module: nn.Module) -> bool:
    return (isinstance(module, nn.BatchNorm2d) and not module.training and module.track_running_stats
            and module.running_mean is not None and module.running_var is not None)


def _foldable_conv(module: nn.Module) -> bool:
    """A plain Conv2d in float32/float64 (a parametrized weight, as with weight or spectral norm, is
    computed on every call and cannot be replaced; half precision would round more than the check
    allows)."""
    return (isinstance(module, nn.Conv2d) and not parametrize.is_parametrized(module)
            and module.weight.dtype in (torch.float32, torch.float64))


def _hooked(module: nn.Module) -> bool:
    return any(getattr(module, name, None) for name in
               ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"))


class _Tracer(torch.fx.Tracer):
    """Modules with no convolution or batch norm inside are opaque leaves: their code (a JPEG layer's
    rounding, say) need not trace, and nothing in them can be folded."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return super().is_leaf_module(module, qualified_name) or not any(
            isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) for m in module.modules())


class FoldedNorm(nn.Identity):
    """Where a batch norm was: its affine map now lives in the convolution before it."""


def _traced_pairs(module: nn.Module) -> list[tuple[str, str]] | None:
    """(conv, norm) names of every pair in the graph of the whole module where the norm (a foldable
    batch norm, or a :class:`FoldedNorm` already) alone reads the convolution's output, each is
    called once and the forward reads neither's parameters directly. None if the module does not
    trace."""
    try:
        graph = _Tracer().trace(module)
    except Exception:  # noqa: BLE001 - any tracing failure means "fold nothing"
        return None
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    # a module whose parameters or buffers the forward reads directly (e.g. ``self.norm.weight``) stays
    read = {node.target.rpartition(".")[0] for node in graph.nodes if node.op == "get_attr"}
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs or calls[node.target] != 1:
            continue
        norm = module.get_submodule(node.target)
        source = node.args[0]
        if not ((_foldable_norm(norm) or isinstance(norm, FoldedNorm)) and isinstance(source, torch.fx.Node)
                and source.op == "call_module"):
            continue
        conv = module.get_submodule(source.target)
        if (_foldable_conv(conv) and len(source.users) == 1 and calls[source.target] == 1
                and (isinstance(norm, FoldedNorm) or conv.out_channels == norm.num_features)
                and source.target not in read and node.target not in read):
            pairs.append((source.target, node.target))
    return pairs


def foldable_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """Qualified names (conv, batch norm) of the pairs that :func:`folded_copy` folds: in the graph
    of the whole module, a norm that alone reads a convolution's output, each called once, neither
    read directly by the forward. Empty when the module does not trace: pairs found in the children
    alone could be wrong, since the parent may call their parts directly. Traces ``module`` itself
    (:func:`folded_copy` passes a copy)."""
    return [(conv, norm) for conv, norm in _traced_pairs(module) or []
            if not isinstance(module.get_submodule(norm), FoldedNorm)]


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


@torch.no_grad()
def _fold(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    """Move ``norm``'s affine map into ``conv`` (new parameters, computed in float64: a weight shared
    with another module keeps its value there)."""
    weight = conv.weight.double()
    scale = (norm.running_var.double() + norm.eps).rsqrt()
    shift = -norm.running_mean.double() * scale
    if norm.affine:
        scale, shift = scale * norm.weight.double(), shift * norm.weight.double() + norm.bias.double()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(shift)
    dtype = conv.weight.dtype
    conv.weight = nn.Parameter((weight * scale.view(-1, 1, 1, 1)).to(dtype), requires_grad=conv.weight.requires_grad)
    conv.bias = nn.Parameter((bias * scale + shift).to(dtype), requires_grad=conv.weight.requires_grad)


@contextlib.contextmanager
def _random_state_kept(device: torch.device) -> Iterator[None]:
    """Tracing and probing run the module's code, which may draw random numbers (a randomised
    defence): the global generators of torch, Python and NumPy come back as they were."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _safe_to_copy(module: nn.Module) -> bool:
    """No part in training mode that keeps buffers (a batch norm would update its statistics on the
    probe) and no hooks (tracing would call them with symbolic values; folding would change what
    they see)."""
    return not any((m.training and next(m.buffers(recurse=False), None) is not None) or _hooked(m)
                   for m in module.modules())


def folded_copy(module: nn.Module, memo: dict[int, Any] | None = None) -> nn.Module:
    """A copy of ``module`` with every eval-mode BatchNorm2d that reads only a Conv2d's output folded
    into that convolution (and replaced by :class:`FoldedNorm`); ``module`` itself when there is none,
    or when the module has a training-mode part with buffers, has hooks, cannot be copied or does not
    trace.

    ``memo`` (a ``copy.deepcopy`` memo) shared between calls makes modules that share a network (a
    model and its BPDA wrappers, say) share one folded copy of it, as the originals share theirs."""
    if not _safe_to_copy(module):
        return module
    try:
        # traced as a copy: a forward that stores things on self keeps them there
        folded = copy.deepcopy(module, {} if memo is None else memo)
        pairs = _traced_pairs(folded)
        if pairs is None:
            return module
        # a part shared with an earlier copy may have been folded there: only right if this module's
        # graph would have folded it too (it may, say, call that part's convolution directly)
        sound = {norm for _, norm in pairs}
        if any(isinstance(m, FoldedNorm) and name not in sound for name, m in folded.named_modules()):
            return module
        for conv_name, norm_name in pairs:
            if not isinstance(folded.get_submodule(norm_name), FoldedNorm):
                _fold(folded.get_submodule(conv_name), folded.get_submodule(norm_name))
                _set_submodule(folded, norm_name, FoldedNorm())
    except Exception:  # noqa: BLE001 - anything unexpected: attack the module as it is
        return module
    return folded if pairs else module   # every pair's norm is a FoldedNorm now


@torch.no_grad()
def same_function(model: nn.Module, folded: nn.Module, x: torch.Tensor) -> bool:
    """``folded`` gives ``model``'s logits on ``x`` up to float rounding (and runs at all: a forward
    that reaches into a replaced batch norm fails on the copy)."""
    try:
        try:
            with full_float32():
                expected, got = model(x).float(), folded(x).float()
        except Exception:  # noqa: BLE001 - e.g. a forward that reads the legacy TF32 switches, which raise in there
            expected, got = model(x).float(), folded(x).float()
    except Exception:  # noqa: BLE001 - any failure (the copy's, or a module on another device) means "keep the module"
        return False
    if expected.shape != got.shape:
        return False
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    return bool(((expected - got).abs() <= FOLD_TOLERANCE * max(scale, 1.0)).all())   # NaN anywhere: False


def fold_for_evaluation(modules: Sequence[object], probe: torch.Tensor) -> list[object]:
    """Each module folded where that keeps its logits on ``probe``; anything else as it was (None,
    plain functions, modules with nothing to fold or whose copy differs, e.g. a random one). Parts
    the modules share are copied once. Tracing and the probe passes leave the global random state
    as they found it."""
    done: dict[int, object] = {}
    memo: dict[int, Any] = {}
    out = []
    for module in modules:
        if isinstance(module, nn.Module) and id(module) not in done:
            with _random_state_kept(probe.device):
                candidate = folded_copy(module, memo)
                if candidate is not module and not same_function(module, candidate, probe):
                    candidate = module
            done[id(module)] = candidate
        out.append(done.get(id(module), module) if isinstance(module, nn.Module) else module)
    return out
