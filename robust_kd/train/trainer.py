"""One training loop for plain training and, through other objectives, distillation.

What trains beside the network's weights by rules of its own (JPEG-DL's quantization tables) is a
training part (:mod:`robust_kd.train.parts`): the loop calls its hooks and knows nothing more of it.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn

import attacks

from .. import distributed
from ..checkpoint import read_checkpoint, save_checkpoint
from ..data import Augment, BatchLoader, ImageDataset
from ..device import autocast, device_name, resolve_device, training_kernels, uses_channels_last
from ..errors import UserError
from . import parallel
from .context import TrainingContext
from .evaluate import evaluate
from .objective import CrossEntropy, Objective, StepInfo
from .parts import build_parts
from .progress import Reporter
from .recipe import TrainConfig
from .run import RunFolder
from .running_stats import RunningStats
from .schedule import lr_at
from .state import TrainState

# the keys of an epoch's record that the trainer writes itself; the others come from the training parts'
# and the objective's epoch_metrics, and the summary repeats those of the last epoch
OWN_RECORD_KEYS = frozenset({"epoch", "train_loss", "train_accuracy", "lr", "train_seconds", "images_per_s",
                             "test_accuracy", "test_loss"})


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


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
        summary_extra: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.summary_extra = summary_extra or {}
        self.dataset = dataset
        self.run = run
        self.objective = objective or CrossEntropy()
        self.reporter = reporter or Reporter()
        self.metadata = metadata or {}
        self.device = resolve_device(config.device)
        self.channels_last = uses_channels_last(self.device)
        self.shard = (distributed.rank(), distributed.world_size())
        if self.shard[1] > 1:
            if config.batch_size % self.shard[1]:
                raise UserError(f"batch_size {config.batch_size} does not split evenly over {self.shard[1]} processes; "
                                f"use a multiple of {self.shard[1]} (it is the global batch)")
            model = parallel.share_batch_statistics(model, self.device)
        self.model = model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # what the training step calls: DDP around the model under torchrun, the model itself otherwise
        self.step_model = parallel.wrap(self.model, self.device) if self.shard[1] > 1 else self.model
        self.parts = build_parts(self.model, config)
        self.optimizers = self.build_optimizers()
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
        # what the objective (and the training parts) may use of this run: not the trainer itself
        self.context = TrainingContext(self.device, dataset, self.train_loader)
        self.objective.bind(self.context)

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """SGD for the network's parameters; the training parts' own optimizers for theirs (JPEG-DL's
        tables: Adam)."""
        opt = self.config.optimizer
        claimed = {id(p) for part in self.parts for p in part.parameters()}
        optimizers: dict[str, torch.optim.Optimizer] = {
            "network": torch.optim.SGD(
                [p for p in self.model.parameters() if id(p) not in claimed], lr=self.config.base_lr(),
                momentum=opt.momentum, weight_decay=opt.weight_decay, nesterov=opt.nesterov,
            )
        }
        for part in self.parts:
            optimizers.update(part.optimizers())
        return optimizers

    def _set_learning_rates(self, progress: float) -> float:
        config = self.config
        lr = lr_at(config.schedule, config.base_lr(), progress, config.epochs)
        rates = {"network": lr}
        for part in self.parts:
            rates.update(part.learning_rates(lr, config.base_lr()))
        for name, optimizer in self.optimizers.items():
            for group in optimizer.param_groups:
                group["lr"] = rates[name]
        return lr

    def prepare(self, state: TrainState) -> None:
        """Before the first epoch of a new run: the objective's preparation (e.g. a distiller's
        thresholds), then the training parts' (e.g. JPEG tables from data). On resume, restore theirs."""
        if state.epochs_done > 0:
            self.objective.load_state_dict(state.objective_state)
            for part in self.parts:
                part.load_state_dict(state.part_states[part.state_key])
            return
        self.objective.prepare(self.context)
        state.objective_state = self.objective.state_dict()
        for part in self.parts:
            part.prepare(self.context)
            state.part_states[part.state_key] = part.state_dict()

    def _checkpoint_metadata(self, state: TrainState) -> dict[str, Any]:
        last = state.history[-1] if state.history else {}
        return {
            "dataset": self.dataset.describe(),
            "recipe": self.config.as_dict(),
            "epoch": state.epochs_done,
            "test_accuracy": last.get("test_accuracy"),
            **self.summary_extra,
            **self.metadata,
        }

    def _rng_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _save(self, state: TrainState, improved: bool) -> None:
        metadata = self._checkpoint_metadata(state)
        save_checkpoint(self.run.last_checkpoint, self.model, metadata, optimizers=self.optimizers,
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
            for name, optimizer in self.optimizers.items():
                optimizer.load_state_dict(payload["optimizers"][name])
        except (RuntimeError, ValueError, KeyError) as err:
            raise UserError(f"cannot resume from '{path}' ({str(err).splitlines()[0][:120]}); "
                            "start over with --fresh") from None
        rng = payload.get("rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        return TrainState.from_dict(payload["trainer"], {part.state_key: part.state_dict() for part in self.parts})

    # ---------------------------------------------------------------- loop

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training split (0-based ``epoch`` picks its shuffle and augmentation)."""
        self.model.train()
        steps = len(self.train_loader)
        stats = RunningStats(self.device)
        self.reporter.start_epoch(epoch + 1, steps)
        check_every = 1 if self.device.type == "cpu" else 25
        started = time.perf_counter()
        last_refresh = started
        for step, batch in enumerate(self.train_loader.batches(epoch, self.shard)):
            info = StepInfo(epoch, step, steps, self.config.epochs, self.config.seed)
            lr = self._set_learning_rates(info.progress)
            labels = batch.labels
            with autocast(self.device):
                logits, terms = self.objective(self.step_model, batch, info)
            loss = sum(terms.values())
            for optimizer in self.optimizers.values():
                optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            for optimizer in self.optimizers.values():
                optimizer.step()
            for part in self.parts:
                part.after_step()
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
        if self.shard[1] > 1:
            stats.reduce()
        term_means, accuracy = stats.read()
        return {
            "train_loss": term_means, "train_accuracy": accuracy, "lr": lr,
            "train_seconds": seconds, "images_per_s": stats.seen / max(seconds, 1e-9),
        }

    def _check_finite(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        value = float(loss.detach())
        if not math.isfinite(value):
            last = self.run.last_checkpoint
            kept = f"the last good checkpoint is '{last}'" if last.is_file() else "no checkpoint was written"
            raise TrainingDiverged(
                f"training diverged: the loss is {value} at epoch {epoch + 1}, step {step + 1}; "
                f"lower optimizer.lr or check the data ({kept})"
            )

    def _agree_across_ranks(self, state: TrainState) -> None:
        """Every rank resumed from the same epoch, and starts from rank 0's weights and buffers (each
        rank read the checkpoint and prepared the training parts, e.g. JPEG tables, itself)."""
        import torch.distributed as dist

        epochs: list[Any] = [None] * self.shard[1]
        dist.all_gather_object(epochs, state.epochs_done)
        if len(set(epochs)) > 1:
            raise UserError(f"the torchrun processes resumed from different epochs ({epochs}): they must all see "
                            f"'{self.run.last_checkpoint}' (a shared file system), or start over with --fresh")
        with torch.no_grad():
            for tensor in [*self.model.parameters(), *self.model.buffers()]:
                dist.broadcast(tensor, 0)

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        """Train one epoch and make its record: the trainer's own numbers (:data:`OWN_RECORD_KEYS`), then
        what the training parts and the objective measure."""
        record = {"epoch": epoch + 1, **self.train_epoch(epoch)}
        # in IEEE float32 (no bf16 autocast, no TF32): the checkpoint's test accuracy is then the clean accuracy
        # an attack's verdicts give on the same points
        with attacks.full_float32():
            record.update(evaluate(self.model, self.test_loader, prefix="test_"))
        for part in self.parts:
            record.update(part.epoch_metrics())
        record.update(self.objective.epoch_metrics())
        return record

    def fit(self) -> dict[str, Any]:
        """Train to the configured number of epochs (resuming if possible); return the summary. The run
        folder's hold (:meth:`RunFolder.hold`) ends with it, however it ends."""
        try:
            return self._fit()
        finally:
            self.run.release()

    def _fit(self) -> dict[str, Any]:
        state = self._resume()
        self.prepare(state)
        if self.shard[1] > 1:
            self._agree_across_ranks(state)
        epochs = self.config.epochs
        self.reporter.start(f"{self.config.model} on {self.dataset.name}", epochs, state.epochs_done)
        try:
            with training_kernels(self.device):
                for epoch in range(state.epochs_done, epochs):
                    self._epoch(state, epoch)
        finally:
            self.reporter.close()
        summary = self.summary(state)
        if distributed.is_main():
            self.run.write_summary(summary)
        return summary

    def _epoch(self, state: TrainState, epoch: int) -> None:
        """One epoch, its record kept, its checkpoint written."""
        epochs = self.config.epochs
        record = self.run_epoch(epoch)
        state.epochs_done = epoch + 1
        state.train_seconds += record["train_seconds"]
        improved = record["test_accuracy"] > state.best_accuracy
        if improved:
            state.best_accuracy, state.best_epoch = record["test_accuracy"], epoch + 1
        state.history.append(record)
        if distributed.is_main():          # under torchrun, rank 0 alone writes
            self._save(state, improved)
            self.run.write_metrics(state.history)
        distributed.barrier()
        self.reporter.end_epoch(record, epochs)

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
            "processes": self.shard[1],
            "checkpoint": str(self.run.last_checkpoint),
            "best_checkpoint": str(self.run.best_checkpoint),
            **{k: v for k, v in last.items() if k not in OWN_RECORD_KEYS},  # the parts' and the objective's
            **self.summary_extra,
        }
