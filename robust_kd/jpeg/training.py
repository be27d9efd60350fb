"""How JPEG-DL's quantization tables train beside the network.

The tables of every JPEG layer get their own optimizer (Adam without weight decay; the network
keeps SGD), start from tables computed on training images (:mod:`robust_kd.jpeg.init`), are
projected back into [table_min, table_max] after every step, and each epoch records how far they
moved from where they started. :class:`JpegTableTraining` does all of that through the generic
hooks of a training part (``robust_kd.train.parts.TrainingPart``); the trainer knows nothing of JPEG.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Iterator, Protocol

import torch
from torch import nn

from ..errors import UserError
from .config import JpegConfig
from .init import initialize_tables
from .layer import JpegLayer, jpeg_layers

OPTIMIZER = "jpeg"  # the name of the tables' optimizer in the trainer's (and the checkpoint's) optimizers


class TrainingImages(Protocol):
    """The training split and its shape of task, as a ``robust_kd.data.ImageDataset`` holds them."""

    @property
    def train_images(self) -> torch.Tensor: ...  # uint8, N×C×H×W

    @property
    def train_labels(self) -> torch.Tensor: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def channels(self) -> int: ...


class TrainingBatches(Protocol):
    """The training batches as the steps see them (``robust_kd.data.BatchLoader`` is one)."""

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


class PrepareContext(Protocol):
    """What preparing the tables reads of the run (``robust_kd.train.TrainingContext`` is one)."""

    @property
    def device(self) -> torch.device: ...

    @property
    def dataset(self) -> TrainingImages: ...

    @property
    def train_batches(self) -> TrainingBatches: ...

    def load_model(self, path: str) -> nn.Module: ...


class JpegTableTraining:
    """The training part for the quantization tables of ``layers`` (none for a plain model: every
    hook then does nothing, and the train state keeps an empty ``jpeg_initial_tables``)."""

    state_key = "jpeg_initial_tables"  # the train state's (and checkpoints') key for the initial tables

    def __init__(self, layers: list[JpegLayer], settings: JpegConfig) -> None:
        self.layers = layers
        self.settings = settings
        self.initial_tables: list[dict[str, Any]] = []  # one {table name: 8×8 nested lists} per layer

    @classmethod
    def of(cls, model: nn.Module, settings: JpegConfig) -> JpegTableTraining:
        return cls(jpeg_layers(model), settings)

    # ------------------------------------------------------------------ optimisation

    def parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.layers for p in layer.parameters()]

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        tables = self.parameters()
        if not tables:
            return {}
        return {OPTIMIZER: torch.optim.Adam(tables, lr=self.settings.lr, weight_decay=0.0)}

    def learning_rates(self, network_lr: float, base_lr: float) -> dict[str, float]:
        """``jpeg.lr``, or with ``jpeg.lr_schedule=follow`` scaled as the network's schedule scales its base LR."""
        if not self.layers:
            return {}
        if self.settings.lr_schedule == "follow":
            return {OPTIMIZER: self.settings.lr * network_lr / base_lr}
        return {OPTIMIZER: self.settings.lr}

    def after_step(self) -> None:
        for layer in self.layers:
            layer.project_parameters_()

    # ------------------------------------------------------------------ initialisation and state

    def prepare(self, context: PrepareContext) -> None:
        """Before the first epoch of a new run: tables from ``jpeg.init_images`` training images (and, for
        ``init=sensitivity``, the pretrained model of ``jpeg.init_checkpoint``)."""
        if not self.layers:
            return
        settings = self.settings
        images, labels = self._init_images(context)
        pretrained = partial(self._pretrained_model, context) if settings.init_checkpoint else None
        for layer in self.layers:
            initialize_tables(layer, settings.init, images, labels, pretrained=pretrained, q_max=settings.q_max,
                              batchnorm=settings.sensitivity_batchnorm)
        self.initial_tables = [{k: v.tolist() for k, v in layer.tables().items()} for layer in self.layers]

    def _init_images(self, context: PrepareContext) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``jpeg.init_images`` training images: as the authors, of the first epoch's shuffled and
        augmented batches (``jpeg.init_augmented``), else the split's first images as stored."""
        count = min(self.settings.init_images, context.dataset.train_images.shape[0])
        if not self.settings.init_augmented:
            images = context.dataset.train_images[:count].to(context.device).float().div_(255.0)
            return images, context.dataset.train_labels[:count].to(context.device)
        images, labels, seen = [], [], 0
        for batch_images, batch_labels in context.train_batches.epoch(0):
            images.append(batch_images.float())
            labels.append(batch_labels)
            seen += batch_images.shape[0]
            if seen >= count:
                break
        return torch.cat(images)[:count].contiguous(), torch.cat(labels)[:count]

    def _pretrained_model(self, context: PrepareContext) -> nn.Module:
        path = self.settings.init_checkpoint
        model = context.load_model(path)  # type: ignore[arg-type]
        dataset = context.dataset
        if model.num_classes != dataset.num_classes or model.in_channels != dataset.channels:
            raise UserError(
                f"jpeg.init_checkpoint '{path}' is a {model.num_classes}-class, {model.in_channels}-channel model; "
                f"this data set needs {dataset.num_classes} classes and {dataset.channels} channels"
            )
        return model

    def state_dict(self) -> list[dict[str, Any]]:
        return self.initial_tables

    def load_state_dict(self, state: list[dict[str, Any]]) -> None:
        self.initial_tables = state

    # ------------------------------------------------------------------ what an epoch records

    def epoch_metrics(self) -> dict[str, float]:
        """How far the tables moved since their initialisation: the mean over entries of
        |Q − Q₀| / Q₀, and its largest entry (nothing without a JPEG layer)."""
        if not self.layers or not self.initial_tables:
            return {}
        changes = []
        for layer, initial in zip(self.layers, self.initial_tables):
            for name, table in layer.tables().items():
                start = torch.tensor(initial[name])
                changes.append(((table - start).abs() / start.abs().clamp_min(1e-12)).flatten())
        change = torch.cat(changes)
        return {"jpeg_table_shift": float(change.mean()), "jpeg_table_shift_max": float(change.max())}
