"""Data set registry: names → loaders that return an :class:`ImageDataset`."""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

from ..errors import UserError
from .dataset import ImageDataset
from .options import Option, checked_options

Loader = Callable[..., ImageDataset]


@dataclass(frozen=True)
class DatasetEntry:
    """What is known about a data set before loading it."""

    name: str
    loader: Loader
    description: str
    channels: int | None  # None: decided by the files (image folders)
    size: int | None
    num_classes: int | None
    default_root: str | None
    needs_root: bool
    licence: str
    option_specs: Mapping[str, Option] = field(default_factory=dict)  # every keyword option: type and range

    @property
    def reads_folder(self) -> bool:
        """Whether the loader reads files from a folder (else the data ship inside a package)."""
        return "root" in inspect.signature(self.loader).parameters

    def options(self) -> list[str]:
        """Keyword options the loader accepts beyond root/download."""
        return list(self.option_specs)


def _loader_options(loader: Loader) -> list[str]:
    return [p for p in inspect.signature(loader).parameters if p not in ("root", "download")]


_DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(
    name: str,
    *,
    description: str,
    channels: int | None,
    size: int | None,
    num_classes: int | None,
    default_root: str | None = None,
    needs_root: bool = False,
    licence: str = "",
    options: Mapping[str, Option] | None = None,
) -> Callable[[Loader], Loader]:
    """Decorator: register ``loader(root, download, **options) -> ImageDataset`` under ``name``.

    ``options`` declares the type and range of each of the loader's keyword options (all of them):
    :func:`load_dataset` checks the user's values against them before the loader runs."""

    def wrap(loader: Loader) -> Loader:
        if name in _DATASETS:
            raise ValueError(f"data set {name!r} is registered twice")
        declared = dict(options or {})
        if set(declared) != set(_loader_options(loader)):
            raise ValueError(f"data set {name!r} must declare exactly its loader's options "
                             f"{_loader_options(loader)}, declared {sorted(declared)}")
        _DATASETS[name] = DatasetEntry(
            name, loader, description, channels, size, num_classes, default_root, needs_root, licence,
            MappingProxyType(declared),
        )
        return loader

    return wrap


def list_datasets() -> list[DatasetEntry]:
    return [_DATASETS[name] for name in sorted(_DATASETS)]


def dataset_entry(name: str) -> DatasetEntry:
    try:
        return _DATASETS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_DATASETS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(
            f"unknown data set '{name}'{hint}; choose one of: {', '.join(sorted(_DATASETS))} "
            "(run 'robust-kd data' to list them)"
        ) from None


def stored_root(name: str, root: str | None) -> str | None:
    """A folder from a run's stored config, for loading ``name`` again: None where the data set reads
    no folder (a run trained before such roots were refused may still carry one)."""
    return root if dataset_entry(name).reads_folder else None


def load_dataset(
    name: str, root: str | Path | None = None, *, download: bool = False, **options: Any
) -> ImageDataset:
    """Load a registered data set; ``root`` defaults to the entry's usual location."""
    entry = dataset_entry(name)
    unknown = sorted(set(options) - set(entry.options()))
    if unknown:
        allowed = ", ".join(entry.options()) or "none"
        raise UserError(f"data set '{name}' has no option {', '.join(unknown)}; its options: {allowed}")
    options = checked_options(name, entry.option_specs, options)
    if root is not None and not entry.reads_folder:
        raise UserError(f"data set '{name}' comes with the installed packages and reads no folder; drop --data-root "
                        f"'{root}' (or data.root=)")
    root = root if root is not None else entry.default_root
    if entry.needs_root and root is None:
        raise UserError(
            f"data set '{name}' needs a folder: pass --data-root <folder> "
            "(robust-kd train also takes data.root=<folder>)"
        )
    kwargs: dict[str, Any] = dict(options)
    params = inspect.signature(entry.loader).parameters
    if entry.reads_folder:
        kwargs["root"] = Path(root).expanduser() if root is not None else None
    if "download" in params:
        kwargs["download"] = download
    elif download:
        raise UserError(f"data set '{name}' cannot be downloaded; it is read from local files only")
    return entry.loader(**kwargs)
