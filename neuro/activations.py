"""Layer activations of any ``nn.Module`` on a set of stimuli, through forward hooks.

Layers are PyTorch's dotted module names (``model.named_modules()``), plus ``"logits"`` for the model's
output. Hooks are always removed, every module's train/eval mode and the model's device are
restored, and everything runs batched under ``torch.no_grad()`` on the model's device (or the one
given).
"""

from __future__ import annotations

import difflib
import json
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import NeuroError
from .files import atomic_write_bytes, atomic_write_text

LOGITS = "logits"
_SKIP_AT_TOP = (nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Identity, nn.Dropout,
                nn.Flatten)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _trunk(model: nn.Module) -> tuple[str, nn.Module]:
    """Descend through wrappers (e.g. a normalisation layer + ``net``): the child holding ≥ 90 % of the
    parameters is the real network."""
    prefix, module = "", model
    while True:
        total = _n_params(module)
        heavy = [(n, c) for n, c in module.named_children() if total and _n_params(c) >= 0.9 * total]
        if len(heavy) != 1 or isinstance(heavy[0][1], (nn.Sequential, nn.ModuleList)) and prefix:
            return prefix, module
        name, child = heavy[0]
        if not list(child.children()):
            return prefix, module
        prefix, module = f"{prefix}{name}.", child


def _blocks(model: nn.Module) -> list[str]:
    """The stages a researcher would compare: outside the trunk, modules with parameters (e.g. a JPEG
    layer); in the trunk, each top-level module with parameters or a pooling layer, and for each stage
    container (a Sequential/ModuleList) its blocks, or, when the stage is flat (conv, bn, relu, pool, ...),
    the output of each pooling layer and of the stage."""
    prefix, trunk = _trunk(model)
    names: list[str] = []
    trunk_path = prefix.rstrip(".")
    for name, child in model.named_children():          # parameterised siblings of the trunk path (JPEG layer)
        if trunk_path and not trunk_path.startswith(name) and _n_params(child) > 0 \
                and not isinstance(child, _SKIP_AT_TOP):
            names.append(name)
    children = list(trunk.named_children())
    for position, (name, child) in enumerate(children):
        full = prefix + name
        if position == len(children) - 1 and isinstance(child, nn.Linear):
            continue                                     # the classifier's output is "logits"

        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            items = list(child.named_children())
            if any(list(c.children()) for _, c in items):
                names.extend(f"{full}.{n}" for n, _ in items)
            else:
                picks = [f"{full}.{n}" for n, c in items if isinstance(c, _POOLS)]
                last = f"{full}.{items[-1][0]}" if items else full
                names.extend(picks + ([last] if last not in picks else []))
        elif isinstance(child, _SKIP_AT_TOP):
            continue
        elif _n_params(child) > 0 or isinstance(child, _POOLS) or list(child.children()):
            names.append(full)
    return names


def list_layers(model: nn.Module, which: str = "blocks") -> list[str]:
    """Layer names: "blocks" (see ``_blocks``), "all" (every named module), or "leaves"; then "logits"."""
    if which == "all":
        names = [n for n, _ in model.named_modules() if n]
    elif which == "leaves":
        names = [n for n, m in model.named_modules() if n and not list(m.children())]
    elif which == "blocks":
        names = _blocks(model)
    else:
        raise NeuroError(f"which must be 'blocks', 'all' or 'leaves', not {which!r}")
    return names + [LOGITS]


def _resolve(model: nn.Module, layers: Sequence[str] | str) -> list[str]:
    if isinstance(layers, str):
        if layers in ("blocks", "all", "leaves"):
            return list_layers(model, layers)
        layers = [layers]
    known = dict(model.named_modules())
    out = []
    for layer in layers:
        if layer != LOGITS and layer not in known:
            close = difflib.get_close_matches(layer, list(known) + [LOGITS], n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise NeuroError(f"the model has no layer {layer!r}{hint}; see neuro.list_layers(model, 'all')")
        if layer not in out:
            out.append(layer)
    if not out:
        raise NeuroError("no layers asked for")
    return out


def as_image_batch(images: torch.Tensor | np.ndarray, size: int | None = None,
                   channels: int | None = None) -> torch.Tensor:
    """Float N×C×H×W in [0, 1] from a tensor or a uint8/float array (N×H×W×C or N×C×H×W); ``size``
    resizes (antialiased), ``channels`` converts RGB → luminance (ITU-R 601) or grey → RGB."""
    if isinstance(images, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(images))
    elif isinstance(images, torch.Tensor):
        t = images.detach().cpu()
    else:
        raise NeuroError(f"images must be a tensor or a numpy array, not {type(images).__name__}")
    if t.ndim == 3:
        t = t[:, None]
    if t.ndim != 4:
        raise NeuroError(f"images must be 4-D (N×H×W×C or N×C×H×W), got shape {tuple(t.shape)}")
    if t.shape[-1] in (1, 3) and t.shape[1] not in (1, 3):
        t = t.permute(0, 3, 1, 2)
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    elif not t.is_floating_point():
        raise NeuroError(f"images must be uint8 (0-255) or floats in [0, 1], got {t.dtype}; convert them to one "
                         "of those")
    else:
        t = t.float()
        if len(t) and (float(t.min()) < -1e-6 or float(t.max()) > 1 + 1e-6):
            hint = " (0-255 values: divide by 255)" if float(t.max()) > 1.5 else ""
            raise NeuroError(f"float images must lie in [0, 1], got values in [{float(t.min()):.3g}, "
                             f"{float(t.max()):.3g}]{hint}; models take [0, 1] images and normalise them themselves")
    if channels is not None and t.shape[1] != channels:
        if t.shape[1] == 3 and channels == 1:
            t = (t * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        elif t.shape[1] == 1 and channels == 3:
            t = t.repeat(1, 3, 1, 1)
        else:
            raise NeuroError(f"cannot turn {t.shape[1]}-channel images into {channels}-channel ones")
    if size is not None and tuple(t.shape[-2:]) != (size, size):
        t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return t


def _first_tensor(output: object) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    if isinstance(output, dict):
        for item in output.values():
            if isinstance(item, torch.Tensor):
                return item
    raise NeuroError(f"a hooked layer returned {type(output).__name__}, not a tensor")


def _leave_out_reused(reused: set[str], names: list[str], store: dict[str, list], chosen: bool) -> None:
    listed = ", ".join(repr(n) for n in names if n in reused)
    if chosen:
        raise NeuroError(f"layer {listed} runs more than once in one forward pass (the module is reused), so it has "
                         "no single activation; pick the block or layer around it")
    warnings.warn(f"left out {listed}: run more than once in one forward pass (a reused module), so without a "
                  "single activation", stacklevel=3)
    for name in [n for n in names if n in reused]:
        names.remove(name)
        del store[name]
    if not names:
        raise NeuroError("every layer asked for is a reused module; pick blocks or layers around them")


def activations(model: nn.Module, images: torch.Tensor | np.ndarray, layers: Sequence[str] | str = "blocks",
                batch_size: int = 64, device: torch.device | str | None = None, size: int | None = None,
                channels: int | None = None,
                progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """``{layer: N × features}`` float32 arrays, in the order of ``layers``.

    ``size`` / ``channels`` adapt the images to the model's input (see ``as_image_batch``)."""
    names = _resolve(model, layers)
    x = as_image_batch(images, size, channels)
    if len(x) == 0:
        raise NeuroError("no images given")
    if batch_size < 1:
        raise NeuroError("batch_size must be at least 1")
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    modules = dict(model.named_modules())
    store: dict[str, list[np.ndarray]] = {n: [] for n in names}
    current: dict[str, torch.Tensor] = {}

    reused: set[str] = set()     # modules run at several places in one pass (one ReLU for a whole block)

    def hook_for(name: str):
        def hook(_module: nn.Module, _inp: object, output: object) -> None:
            if name not in store:       # left out after the first batch (reused)
                return
            if name in current:
                reused.add(name)
            current[name] = _first_tensor(output)
        return hook

    handles = []
    modes = [(m, m.training) for m in model.modules()]     # each module's own, put back afterwards
    first = next(model.parameters(), None)
    home = first.device if first is not None else None
    try:
        for name in names:
            if name != LOGITS:
                handles.append(modules[name].register_forward_hook(hook_for(name)))
        model.to(device).eval()
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                batch = x[start:start + batch_size].to(device)
                current.clear()
                out = _first_tensor(model(batch))
                current[LOGITS] = out
                if reused:      # such a module has no single activation: named, an error; from a list, left out
                    _leave_out_reused(reused, names, store, chosen=not (isinstance(layers, str) and
                                                                        layers in ("blocks", "all", "leaves")))
                    reused.clear()
                for name in names:
                    if name not in current:
                        raise NeuroError(f"layer {name!r} was not called in the forward pass; pick another layer")
                    store[name].append(current[name].detach().float().flatten(1).cpu().numpy())
                if progress is not None:
                    progress(min(len(x), start + batch_size), len(x))
    finally:
        for h in handles:
            h.remove()
        for module, training in modes:
            module.training = training
        if home is not None and home != device:
            model.to(home)
    return {n: np.concatenate(store[n]) for n in names}


def save_activations(acts: dict[str, np.ndarray], folder: str | Path, stimuli: Sequence[str]) -> Path:
    """One ``<layer>.npy`` per layer, ``stimuli.txt`` and ``layers.json`` (no pickle)."""
    import io
    folder = Path(folder)
    files = {}
    for layer, a in acts.items():
        if len(a) != len(stimuli):
            raise NeuroError(f"layer {layer!r} has {len(a)} rows for {len(stimuli)} stimuli")
        fname = "".join(c if c.isalnum() or c in "-_." else "_" for c in layer) + ".npy"
        buf = io.BytesIO()
        np.save(buf, np.asarray(a))
        atomic_write_bytes(folder / fname, buf.getvalue())
        files[layer] = fname
    atomic_write_text(folder / "stimuli.txt", "\n".join(str(s) for s in stimuli) + "\n")
    atomic_write_text(folder / "layers.json", json.dumps(files, indent=2) + "\n")
    return folder


def load_activations(folder: str | Path) -> tuple[dict[str, np.ndarray], list[str]]:
    folder = Path(folder)
    index = folder / "layers.json"
    if not index.is_file():
        raise NeuroError(f"{folder} holds no layers.json; it was not written by save_activations")
    try:
        files = json.loads(index.read_text(encoding="utf-8"))
        acts = {layer: np.load(folder / fname, allow_pickle=False) for layer, fname in files.items()}
        stimuli = (folder / "stimuli.txt").read_text(encoding="utf-8").split("\n")
    except Exception as exc:  # noqa: BLE001  bad JSON, a missing or damaged .npy: the folder is unusable
        raise NeuroError(f"{folder} is damaged ({type(exc).__name__}: {exc}); write it again with "
                         "save_activations") from None
    return acts, [s for s in stimuli if s]
