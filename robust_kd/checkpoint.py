"""Checkpoints: weights plus the metadata that rebuilds the model, loaded with ``weights_only=True``.

A checkpoint is a dict of plain types and tensors::

    {"format": "robust-kd-checkpoint", "format_version": 1,
     "metadata": {"arch", "num_classes", "in_channels", "image_size", "normalization": {"mean", "std"},
                  "dataset": {...}, "recipe": {...}, "versions": {...}, "epoch", "test_accuracy", ...},
     "model": state_dict, "optimizers": {name: state_dict} | None, "trainer": {...} | None,
     "rng": {...} | None}
"""

from __future__ import annotations

import json
import platform
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .bounds import shown
from .errors import UserError
from .fileio import save_torch
from .model_checks import check_weights

FORMAT = "robust-kd-checkpoint"
FORMAT_VERSION = 1
REQUIRED_METADATA = ("arch", "num_classes", "in_channels", "image_size", "normalization")


def versions() -> dict[str, str]:
    import torchvision

    return {
        "robust_kd": __version__,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "python": platform.python_version(),
    }


def model_metadata(model: nn.Module) -> dict[str, Any]:
    """What :func:`load_model` needs to rebuild ``model`` (a NormalizedClassifier)."""
    normalize = model.normalize  # type: ignore[attr-defined]
    metadata: dict[str, Any] = {}
    input_layer = getattr(model, "input_layer", None)
    if input_layer is not None:
        metadata["input_layer_options"] = input_layer.options()
        if hasattr(input_layer, "tables"):  # JPEG-DL: the learned tables, readable without torch
            metadata["jpeg_tables"] = {k: v.tolist() for k, v in input_layer.tables().items()}
    return {
        "arch": model.arch,  # type: ignore[attr-defined]
        "num_classes": int(model.num_classes),  # type: ignore[attr-defined]
        "in_channels": int(model.in_channels),  # type: ignore[attr-defined]
        "image_size": int(model.image_size),  # type: ignore[attr-defined]
        "normalization": {
            "mean": [float(v) for v in normalize.mean.flatten()],
            "std": [float(v) for v in normalize.std.flatten()],
        },
        **metadata,
    }


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    metadata: dict[str, Any],
    *,
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
    trainer: dict[str, Any] | None = None,
    rng: dict[str, Any] | None = None,
) -> None:
    """Write atomically: a crash leaves the previous checkpoint intact."""
    # a JSON round trip keeps the metadata to plain types that weights_only=True can load
    plain_metadata = json.loads(json.dumps({**model_metadata(model), "versions": versions(), **metadata}))
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "metadata": plain_metadata,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()} if optimizers else None,
        "trainer": json.loads(json.dumps(trainer)) if trainer is not None else None,
        "rng": rng,
    }
    save_torch(path, payload)


def _what_the_file_is(path: Path) -> str:
    """Why torch.load failed, in words a user can act on. The unpickler's own complaint about
    garbage bytes ("Unsupported operand 188", a KeyError '101') says nothing to them; the file's
    first bytes say what it is."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as err:
        return f"cannot be opened: {err.strerror or type(err).__name__}"
    if not head:
        return "the file is empty"
    if head.startswith(b"PK"):
        return "a PyTorch archive that is damaged: cut short (an interrupted copy or download?) or altered"
    if head.startswith(b"\x80"):
        return "an old-style PyTorch file that is damaged or cut short"
    if all(32 <= c < 127 or c in (9, 10, 13) for c in head):
        return "a text file, not a PyTorch file"
    return "not a PyTorch file"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint file: its metadata (types, ranges) and its weights (finite), for
    every verb that reads one (see :mod:`robust_kd.model_checks`); every failure is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint '{path}' does not exist; give the path of a .pt file from a run folder")
    try:
        with warnings.catch_warnings():   # torch's notes on a damaged file ("pickle protocol 228") are noise here
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (garbage bytes raise KeyError, IndexError, struct.error, ...)
        refused = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(err))
        if refused:
            raise UserError(
                f"'{path}' holds pickled Python objects ({refused.group(1)}), which robust-kd does not load "
                "(a pickle can run code); use a checkpoint from a robust-kd run folder, which holds tensors only"
            ) from None
        raise UserError(
            f"'{path}' is not a readable checkpoint ({_what_the_file_is(path)}); it is corrupt or was not "
            "written by robust-kd: train again or use another file"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(
            f"'{path}' is a PyTorch file but not a robust-kd checkpoint (no robust-kd metadata); "
            "use a checkpoint from a robust-kd run folder"
        )
    version = payload.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise UserError(f"'{path}' is a damaged robust-kd checkpoint (its format_version is {shown(version)}, not a "
                        "number); train again or use another file")
    if version > FORMAT_VERSION:
        raise UserError(f"'{path}' was written by a newer robust-kd (format {version}); upgrade robust-kd")
    metadata = payload.get("metadata")
    missing = [k for k in REQUIRED_METADATA if not isinstance(metadata, dict) or k not in metadata]
    if missing or not isinstance(payload.get("model"), dict):
        raise UserError(f"'{path}' is an incomplete robust-kd checkpoint (missing {', '.join(missing) or 'weights'})")
    from .checkpoint_metadata import metadata_problem   # it imports the model zoo

    problem = metadata_problem(metadata) or _parts_problem(payload)
    if problem is not None:
        raise UserError(f"'{path}' is a damaged robust-kd checkpoint: {problem}; train again or use another file")
    check_weights(f"'{path}'", payload["model"])
    return payload


def _parts_problem(payload: dict[str, Any]) -> str | None:
    """The training state beside the weights (read on resume) must at least have the right shape."""
    for part in ("optimizers", "trainer", "rng"):
        if payload.get(part) is not None and not isinstance(payload[part], dict):
            return f"its '{part}' is not a mapping"
    return None


def build_model_from_metadata(metadata: dict[str, Any]) -> nn.Module:
    """The untrained model the (checked) metadata describes."""
    from .models import create_model

    try:
        return create_model(
            metadata["arch"],
            int(metadata["num_classes"]),
            in_channels=int(metadata["in_channels"]),
            image_size=int(metadata["image_size"]),
            mean=metadata["normalization"]["mean"],
            std=metadata["normalization"]["std"],
            input_layer_options=metadata.get("input_layer_options"),
        )
    except (TypeError, ValueError) as err:     # input_layer_options that the layer does not take
        raise UserError(f"the checkpoint's metadata does not describe a {metadata['arch']} "
                        f"({str(err).splitlines()[0][:160]}); the file is corrupt or was edited") from None


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model of a checkpoint from its metadata alone, in eval mode."""
    payload = read_checkpoint(path)
    try:
        model = build_model_from_metadata(payload["metadata"])
    except UserError as err:
        raise UserError(f"'{path}': {err}") from None
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(f"'{path}': weights do not fit {payload['metadata']['arch']} ({first[:160]}); "
                        "the file is corrupt") from None
    model.checkpoint_metadata = payload["metadata"]  # type: ignore[assignment]
    return model.to(device).eval()
