"""Distillation as a training objective: teacher outputs (cached where possible) feed a distiller."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..data import Batch
from ..device import autocast, uses_channels_last
from ..train.context import TrainingContext
from ..train.objective import Objective, StepInfo
from ..train.parallel import global_batch
from .base import Distiller, DistillSetup, StepContext

CACHE_BUDGET_BYTES = {"cpu": 512 * 2**20, "cuda": 2 * 2**30}


class TeacherCache:
    """Teacher logits per (training sample, augmentation view), filled as the views come up.

    The loader's augmentation (crop offset and flip) takes finitely many values per image and the
    teacher is deterministic in eval mode, so its logits for a view never change: each is computed
    once. Without augmentation every epoch after the first is free of teacher work.
    """

    def __init__(self, num_samples: int, num_views: int, num_classes: int, device: torch.device) -> None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        self.logits = torch.zeros(num_samples, num_views, num_classes, dtype=dtype, device=device)
        self.filled = torch.zeros(num_samples, num_views, dtype=torch.bool, device=device)
        # counted on the host: once every view is filled, a step reads the cache without asking the device
        # which entries are missing (a nonzero, a host sync on CUDA)
        self.unfilled = num_samples * num_views

    @staticmethod
    def bytes_needed(num_samples: int, num_views: int, num_classes: int, device: torch.device) -> int:
        itemsize = 2 if device.type == "cuda" else 4
        return num_samples * num_views * (num_classes * itemsize + 1)

    def hit_rate(self) -> float:
        return float(self.filled.float().mean())


class DistillationObjective(Objective):
    """The trainer's objective for distillation: ``(student, batch, step) -> (logits, terms)``."""

    def __init__(self, distiller: Distiller, teacher: nn.Module, *, device: torch.device,
                 teacher_arch: str, student_arch: str, cache: str = "auto") -> None:
        self.distiller = distiller
        self.device = device
        self.teacher = teacher.to(device).eval()
        if uses_channels_last(device):
            self.teacher = self.teacher.to(memory_format=torch.channels_last)
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)
        self.teacher_arch, self.student_arch = teacher_arch, student_arch
        self.cache_mode = cache
        self.cache: TeacherCache | None = None
        distiller.attach(self.teacher)

    # ------------------------------------------------------------------ teacher

    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Teacher logits under inference mode (bf16 autocast on CUDA), as a plain fp32 tensor."""
        with torch.inference_mode(), autocast(self.device):
            logits = self.distiller.teacher_forward(self.teacher, images)
        return logits.float().clone()  # clone: an ordinary tensor that autograd may save

    def _teacher_for(self, batch: Batch) -> torch.Tensor:
        if self.cache is None:
            return self.teacher_logits(batch.images)
        view = batch.view if batch.view is not None else torch.zeros_like(batch.index)  # no augmentation: one view
        logits = self.cache.logits[batch.index, view].float()
        if self.cache.unfilled == 0:
            return logits
        missing = (~self.cache.filled[batch.index, view]).nonzero(as_tuple=True)[0]
        if missing.numel():
            self.cache.unfilled -= missing.numel()
            fresh = self.teacher_logits(batch.images[missing])
            logits[missing] = fresh
            self.cache.logits[batch.index[missing], view[missing]] = fresh.to(self.cache.logits.dtype)
            self.cache.filled[batch.index[missing], view[missing]] = True
        return logits

    # ------------------------------------------------------------------ trainer hooks

    def bind(self, context: TrainingContext) -> None:
        """Called by the trainer at every start: set up the teacher cache for its training batches (none where
        the method's teacher logits depend on the batch, e.g. R2KD's pruned copy with batch statistics)."""
        if not self.distiller.teacher_is_cacheable():
            return
        loader = context.train_batches
        classes = context.dataset.num_classes
        size = TeacherCache.bytes_needed(loader.num_samples, loader.num_views, classes, self.device)
        budget = CACHE_BUDGET_BYTES.get(self.device.type, 0)
        if self.cache_mode == "always" or (self.cache_mode == "auto" and size <= budget):
            self.cache = TeacherCache(loader.num_samples, loader.num_views, classes, self.device)

    def prepare(self, context: TrainingContext) -> None:
        self.distiller.prepare(DistillSetup(
            teacher=self.teacher_logits, teacher_model=self.teacher, train_batches=context.train_batches,
            device=self.device, teacher_arch=self.teacher_arch, student_arch=self.student_arch,
        ))

    def state_dict(self) -> dict[str, Any]:
        return self.distiller.state_dict()

    def epoch_metrics(self) -> dict[str, float]:
        """Recorded with each epoch: the share of (sample, view) teacher outputs held in the cache."""
        return {} if self.cache is None else {"teacher_cache_filled": self.cache.hit_rate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.distiller.load_state_dict(state)

    def __call__(self, model: nn.Module, batch: Batch, step: StepInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        teacher = self.distiller.adjust_teacher(self._teacher_for(batch), batch.labels)
        student = model(batch.images)
        context = StepContext(
            images=batch.images, labels=batch.labels, progress=step.progress, student=model,
            teacher=self.teacher_logits, generator=step.generator(),
        )
        # Under torchrun the loss sees the global batch: several methods pool over the batch (CSKD's
        # per-class cosines, R2KD's, DTD's batch-mean difficulty), and a mean of per-rank losses would
        # differ from the single-process loss. Logits are small; gathering them costs little.
        terms = self.distiller.loss(global_batch(student.float()), global_batch(teacher), global_batch(batch.labels),
                                    context)
        return student, terms
