"""Finding runs: the newest run folder that trained a given architecture."""

from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .yamlfile import read_yaml_file

CHECKPOINT = Path("checkpoints") / "last.pt"


def runs_of(runs_dir: str | Path, model: str) -> list[Path]:
    """Run folders under ``runs_dir`` whose config trained ``model`` and that hold a checkpoint,
    newest checkpoint first."""
    found = []
    for config_file in Path(runs_dir).glob("*/config.yaml"):
        try:
            config = read_yaml_file(config_file, "run config")
        except UserError:
            continue  # not ours or damaged: not a candidate
        checkpoint = config_file.parent / CHECKPOINT
        if isinstance(config, dict) and config.get("model") == model and checkpoint.is_file():
            found.append(config_file.parent)
    return sorted(found, key=lambda run: (run / CHECKPOINT).stat().st_mtime, reverse=True)


def latest_checkpoint(runs_dir: str | Path, model: str) -> Path | None:
    runs = runs_of(runs_dir, model)
    return runs[0] / CHECKPOINT if runs else None
