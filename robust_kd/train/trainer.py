"""One training loop for plain training and, through other objectives, distillation."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..checkpoint import read_checkpoint, save_checkpoint
from ..data import Augment, BatchLoader, ImageDataset
from ..device import autocast, device_name, resolve_device, uses_channels_last
from ..errors import UserError
from .evaluate import evaluate
from .objective import CrossEntropy, Objective
from .progress import Reporter
from .recipe import TrainConfig
from .run import RunFolder
from .schedule import lr_at


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


@dataclass
class TrainState:
    epochs_done: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_accuracy: float = -1.0
    best_epoch: int = 0
    train_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "epochs_done": self.epochs_done,
            "history": self.history,
            "best_accuracy": self.best_accuracy,
            "best_epoch": self.best_epoch,
            "train_seconds": self.train_seconds,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainState":
        return cls(**{k: data[k] for k in ("epochs_done", "history", "best_accuracy", "best_epoch", "train_seconds")})


class _RunningStats:
    """Sums kept on the device; read (one sync) only when the progress display refreshes."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.terms: dict[str, torch.Tensor] = {}
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.seen = 0

    def add(self, logits: torch.Tensor, labels: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        n = labels.shape[0]
        for name, value in terms.items():
            weighted = value.detach().float() * n
            self.terms[name] = self.terms[name] + weighted if name in self.terms else weighted
        self.correct += (logits.detach().argmax(dim=1) == labels).sum()
        self.seen += n

    def read(self) -> tuple[dict[str, float], float]:
        terms = {k: float(v) / max(self.seen, 1) for k, v in self.terms.items()}
        return terms, int(self.correct) / max(self.seen, 1)


class Trainer:
    """Train ``model`` on ``dataset`` by ``config`` into ``run``; resumes from the run's last checkpoint."""

    def __init__(
        self,
        config: TrainConfig,
        model: nn.Module,
        dataset: ImageDataset,
        run: RunFolder,
        *,
        objective: Objective | None = None,
        reporter: Reporter | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.dataset = dataset
        self.run = run
        self.objective = objective or CrossEntropy()
        self.reporter = reporter or Reporter()
        self.metadata = metadata or {}
        self.device = resolve_device(config.device)
        self.channels_last = uses_channels_last(self.device)
        self.model = model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = self.build_optimizer()
        hflip = dataset.hflip if config.augment.hflip is None else config.augment.hflip
        self.train_loader = BatchLoader(
            dataset.train_images, dataset.train_labels, batch_size=config.batch_size, device=self.device,
            shuffle=True, augment=Augment(config.augment.crop_padding, hflip), seed=config.seed,
            channels_last=self.channels_last,
        )
        self.test_loader = BatchLoader(
            dataset.test_images, dataset.test_labels, batch_size=config.eval_batch_size, device=self.device,
            channels_last=self.channels_last,
        )
        if len(self.train_loader) == 0:
            raise UserError(f"the training split has no images; check the data set '{dataset.name}'")

    def build_optimizer(self) -> torch.optim.Optimizer:
        opt = self.config.optimizer
        return torch.optim.SGD(
            self.model.parameters(), lr=self.config.base_lr(), momentum=opt.momentum,
            weight_decay=opt.weight_decay, nesterov=opt.nesterov,
        )

    # ---------------------------------------------------------------- checkpoints

    def _checkpoint_metadata(self, state: TrainState) -> dict[str, Any]:
        last = state.history[-1] if state.history else {}
        return {
            "dataset": self.dataset.describe(),
            "recipe": self.config.as_dict(),
            "epoch": state.epochs_done,
            "test_accuracy": last.get("test_accuracy"),
            **self.metadata,
        }

    def _rng_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _save(self, state: TrainState, improved: bool) -> None:
        metadata = self._checkpoint_metadata(state)
        save_checkpoint(self.run.last_checkpoint, self.model, metadata, optimizer=self.optimizer,
                        trainer=state.as_dict(), rng=self._rng_state())
        if improved:
            save_checkpoint(self.run.best_checkpoint, self.model, metadata)

    def _resume(self) -> TrainState:
        path = self.run.last_checkpoint
        if not path.is_file():
            return TrainState()
        payload = read_checkpoint(path)
        if payload["metadata"]["arch"] != self.config.model or payload.get("trainer") is None:
            raise UserError(f"'{path}' does not belong to this run; start over with --fresh")
        try:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise UserError(f"cannot resume from '{path}' ({str(err).splitlines()[0][:120]}); start over with --fresh") from None
        rng = payload.get("rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        return TrainState.from_dict(payload["trainer"])

    # ---------------------------------------------------------------- loop

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training split (0-based ``epoch`` picks its shuffle and augmentation)."""
        config = self.config
        self.model.train()
        steps = len(self.train_loader)
        stats = _RunningStats(self.device)
        self.reporter.start_epoch(epoch + 1, steps)
        check_every = 1 if self.device.type == "cpu" else 25
        started = time.perf_counter()
        last_refresh = started
        for step, (images, labels) in enumerate(self.train_loader.epoch(epoch)):
            lr = lr_at(config.schedule, config.base_lr(), epoch + step / steps, config.epochs)
            for group in self.optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            with autocast(self.device):
                logits, terms = self.objective(self.model, images, labels)
            loss = sum(terms.values())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            self.optimizer.step()
            stats.add(logits, labels, terms)
            if step % check_every == 0 or step == steps - 1:
                self._check_finite(loss, epoch, step)  # type: ignore[arg-type]
            now = time.perf_counter()
            if now - last_refresh > 0.5 or step == steps - 1:
                last_refresh = now
                term_means, accuracy = stats.read()
                self.reporter.update(step + 1, {
                    "loss": sum(term_means.values()), "accuracy": accuracy,
                    "images_per_s": stats.seen / max(now - started, 1e-9),
                })
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - started
        term_means, accuracy = stats.read()
        return {
            "train_loss": term_means, "train_accuracy": accuracy, "lr": lr,
            "train_seconds": seconds, "images_per_s": stats.seen / max(seconds, 1e-9),
        }

    def _check_finite(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        value = float(loss.detach())
        if not math.isfinite(value):
            kept = f"the last good checkpoint is '{self.run.last_checkpoint}'" if self.run.last_checkpoint.is_file() else "no checkpoint was written"
            raise TrainingDiverged(
                f"training diverged: the loss is {value} at epoch {epoch + 1}, step {step + 1}; "
                f"lower optimizer.lr or check the data ({kept})"
            )

    def fit(self) -> dict[str, Any]:
        """Train to the configured number of epochs (resuming if possible); return the summary."""
        state = self._resume()
        epochs = self.config.epochs
        self.reporter.start(f"{self.config.model} on {self.dataset.name}", epochs, state.epochs_done)
        try:
            for epoch in range(state.epochs_done, epochs):
                record = {"epoch": epoch + 1, **self.train_epoch(epoch)}
                with autocast(self.device):
                    record.update(evaluate(self.model, self.test_loader, prefix="test_"))
                state.epochs_done = epoch + 1
                state.train_seconds += record["train_seconds"]
                improved = record["test_accuracy"] > state.best_accuracy
                if improved:
                    state.best_accuracy, state.best_epoch = record["test_accuracy"], epoch + 1
                state.history.append(record)
                self._save(state, improved)
                self.run.write_metrics(state.history)
                self.reporter.end_epoch(record, epochs)
        finally:
            self.reporter.close()
        summary = self.summary(state)
        self.run.write_summary(summary)
        return summary

    def summary(self, state: TrainState) -> dict[str, Any]:
        last = state.history[-1]
        return {
            "run": str(self.run.path),
            "model": self.config.model,
            "data": self.dataset.name,
            "recipe": self.config.recipe,
            "seed": self.config.seed,
            "epochs": state.epochs_done,
            "final_test_accuracy": last["test_accuracy"],
            "best_test_accuracy": state.best_accuracy,
            "best_epoch": state.best_epoch,
            "train_seconds": round(state.train_seconds, 2),
            "images_per_s": round(sum(r["images_per_s"] for r in state.history) / len(state.history), 1),
            "device": device_name(self.device),
            "checkpoint": str(self.run.last_checkpoint),
            "best_checkpoint": str(self.run.best_checkpoint),
        }
