"""What a ``--model`` argument names: a pretrained model, a checkpoint, a run folder, or the newest
run of an architecture. Used by the verbs that evaluate models (attack, transfer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .checkpoint import load_model
from .errors import UserError
from .runs import CHECKPOINT, latest_checkpoint
from .yamlfile import read_yaml_file


@dataclass
class ModelTarget:
    """A model ready to evaluate, with where it came from and where its results go."""

    name: str  # what the user typed, shortened for tables
    arch: str
    model: nn.Module
    source: str  # a sentence: "checkpoint runs/x/checkpoints/last.pt", "pyautoattack package"
    results_dir: Path  # <run folder>/attacks
    data: str | None  # the data set it was trained on, when known
    data_root: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    checkpoint_tag: str = ""  # the checkpoint's name when it is not its run's last.pt (e.g. "best"): kept in file names


def _run_config(run: Path) -> dict[str, Any]:
    """The run folder's config (its data set, root and options); none when the folder has no config.yaml.
    A config.yaml that cannot be read is an error, not an empty config: the model would otherwise be
    attacked on the default data set and fail later with a message about channels or classes."""
    path = run / "config.yaml"
    if not path.is_file():
        return {}
    config = read_yaml_file(path, "run config")
    if not isinstance(config, dict):
        raise UserError(f"run config '{path}' is not a mapping of settings; repair it (or delete it and give --data)")
    return config


def _data_of(config: dict[str, Any], model: Any) -> dict[str, Any]:
    """The data set the model was trained on: from its run's config, else the name its checkpoint records."""
    data = config.get("data")
    if isinstance(data, dict):
        return data
    recorded = getattr(model, "checkpoint_metadata", {}).get("dataset") or {}
    return {"name": recorded["name"]} if isinstance(recorded.get("name"), str) else {}


def _from_checkpoint(checkpoint: Path, name: str) -> ModelTarget:
    model = load_model(checkpoint)
    run = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None
    data = _data_of(_run_config(run) if run is not None else {}, model)
    return ModelTarget(
        name=name, arch=str(model.arch), model=model, source=f"checkpoint {checkpoint}",
        results_dir=(run if run is not None else checkpoint.parent) / "attacks",
        data=data.get("name"), data_root=data.get("root"), data_options=dict(data.get("options") or {}),
        checkpoint_tag="" if run is not None and checkpoint.name == Path(CHECKPOINT).name else checkpoint.stem,
    )


def resolve_model(spec: str, runs_dir: str | Path = "runs") -> ModelTarget:
    """``spec``: a pretrained name, a ``.pt`` checkpoint, a run folder, the name of a run folder
    under ``runs_dir``, or an architecture name (its newest run under ``runs_dir``)."""
    from .models import list_models
    from .models.pretrained import PRETRAINED, load_pretrained

    if spec in PRETRAINED:
        entry = PRETRAINED[spec]
        return ModelTarget(name=spec, arch=spec, model=load_pretrained(spec), source=entry.description,
                           results_dir=Path(runs_dir) / spec / "attacks",
                           data="cifar10-samples" if entry.data == "cifar10" else entry.data)
    path = Path(spec)
    if path.is_dir():
        checkpoint = path / CHECKPOINT
        if not checkpoint.is_file():
            raise UserError(f"'{path}' is a folder without {CHECKPOINT}; give a run folder or a checkpoint file")
        return _from_checkpoint(checkpoint, path.name)
    if path.suffix in (".pt", ".pth", ".ckpt") or path.is_file():
        if not path.is_file():
            raise UserError(f"checkpoint '{path}' does not exist")
        return _from_checkpoint(path, path.parent.parent.name if path.parent.name == "checkpoints" else path.stem)
    named_run = Path(runs_dir) / spec       # a run's own name (e.g. one trained with --name)
    if spec not in list_models() and "/" not in spec and (named_run / CHECKPOINT).is_file():
        return _from_checkpoint(named_run / CHECKPOINT, spec)
    if spec not in list_models():
        import difflib

        known = list(list_models()) + list(PRETRAINED)
        close = difflib.get_close_matches(spec, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"'{spec}' is neither a checkpoint, a run folder, a run under {runs_dir}/ nor a model "
                        f"name{hint}; see 'robust-kd models' for the names")
    checkpoint = latest_checkpoint(runs_dir, spec)
    if checkpoint is None:
        raise UserError(f"no trained {spec} under {runs_dir}/; train one first: "
                        f"robust-kd train --model {spec} --recipe quick")
    return _from_checkpoint(checkpoint, spec)
