"""One evaluation at one eps, from the clean pass to the last step's verdicts.

:class:`EvaluationRun` carries what every part of an evaluation needs (the model as attacked, the
points, the built suite, the options, the device and shard, the state, its snapshots and kept
examples, the progress) so that each part is a short method, not a function of twenty arguments.

The verdicts are the model's own, in float32, on the full batch: an attack proposes an example
through its view (the model, BPDA, a surrogate, in the evaluation's precision), and the point is
broken only where the model itself misclassifies that example (or returns NaN or inf on it) and the
example lies in the ball.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from . import checks, memory, provenance, work
from .adaptive import BPDA
from .core import CountingModel
from .kept import KeptExamples
from .precision import full_float32, in_precision
from .prepare import GRADIENT_KINDS, Options
from .progress import CompletedProgress, heartbeat, say
from .results import AttackRecord, Flag
from .shard import Shard, owns
from .snapshots import SnapshotFile
from .state import EvaluationState, robust_after, step_record
from .suites import Suite, SuiteStep
from .verdict import Judge, broken_by_logits, judging

Counts = Callable[[], "tuple[int, int, float]"]


class _Passes:
    """Forward/backward passes of one batch: through the evaluated model or through the view the
    attack differentiates (a view may call the model, e.g. BPDA, or not, e.g. a surrogate); the
    larger count of the two is the batch's cost, never both added up."""

    def __init__(self, counters: list[CountingModel]) -> None:
        self.counters = counters
        self.start = [(c.forwards, c.backwards) for c in counters]

    def delta(self) -> tuple[int, int]:
        forwards = max(c.forwards - f for c, (f, _) in zip(self.counters, self.start))
        backwards = max(c.backwards - b for c, (_, b) in zip(self.counters, self.start))
        return forwards, backwards


@dataclass
class TrackedBatch:
    """A batch being attacked: ``so_far()`` gives its forwards, backwards and seconds, a resumed
    batch's earlier run included (``earlier_seconds`` of them); ``judge`` knows the points it retired."""

    so_far: Counts
    earlier_seconds: float
    judge: Judge


@dataclass
class EvaluationRun:
    model: nn.Module                 # as attacked: batch norms folded, channels-last
    x: torch.Tensor
    y: torch.Tensor
    built: Suite
    options: Options
    batch_size: int
    device: torch.device
    shard: Shard
    progress: CompletedProgress
    state: EvaluationState
    snapshots: SnapshotFile
    examples: KeptExamples
    kept: torch.Tensor | None        # the adversarial examples, where kept
    cap: int | None = None           # images per pass at most (attacks.memory); None: by device

    def __post_init__(self) -> None:
        self.counting = CountingModel(self.model)
        self.bpda = self.options.bpda

    @property
    def total(self) -> int:
        return len(self.y)

    def rows(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The images, labels and indices of the points ``indices``, on the device."""
        index = torch.tensor(indices, dtype=torch.long)
        return self.x[index].to(self.device), self.y[index].to(self.device), index.to(self.device)

    def view_of(self, step: SuiteStep) -> nn.Module:
        """The model a step's attack sees: its own view, BPDA for gradient steps, or the model itself."""
        if step.view is not None:
            return step.view(self.counting)
        if self.bpda is not None and step.kind in GRADIENT_KINDS:
            return BPDA(self.counting, self.bpda)
        return self.counting

    @contextmanager
    def tracked(self, label: str, rows: list[int], counters: list[CountingModel], done: int) -> Iterator[TrackedBatch]:
        """Attack a batch inside: it resumes from its snapshot, if one was saved, and is snapshotted
        (after the batches before it are on disk); the progress hears from it about once a second."""
        passes, tick = _Passes(counters), time.perf_counter()
        saved = self.snapshots.for_batch(label, rows)
        earlier = (saved["forwards"], saved["backwards"], saved["seconds"]) if saved is not None else (0, 0, 0.0)

        def so_far() -> tuple[int, int, float]:
            forwards, backwards = passes.delta()
            return earlier[0] + forwards, earlier[1] + backwards, earlier[2] + time.perf_counter() - tick

        working = getattr(self.progress, "working", None)
        judge = Judge(self.counting, trusted=self.device.type == "cpu" and self.options.precision == "fp32")
        with work.tracking() as share, self.snapshots.tracking(label, rows, so_far,
                                                               before=lambda: self.state.save(force=True)):
            report = None if working is None else (
                lambda: working(label, done, len(rows), so_far()[0], sum(self.state.robust), self.total, share.read(),
                                so_far()[2]))
            with heartbeat(counters, report), judging(judge), memory.capped(self.cap):
                yield TrackedBatch(so_far, earlier[2], judge)

    def clean_pass(self, first: torch.Tensor, probe_logits: torch.Tensor) -> None:
        """Which points the model classifies correctly, and the sanity checks on the first batch."""
        correct = []
        for start in range(0, self.total, self.batch_size):
            xb = self.x[start:start + self.batch_size].to(self.device)
            yb = self.y[start:start + self.batch_size].to(self.device)
            with torch.no_grad(), full_float32():
                logits = self.counting(xb).float()
            checks.check_output(logits, yb)
            correct.append((logits.argmax(1) == yb).cpu())
        self.state.robust = torch.cat(correct).tolist()
        self.state.broken_by = [None if c else "clean" for c in self.state.robust]
        flags = []
        if self.options.sanity_checks:
            first_y = self.y[: len(first)].to(self.device)
            gradient_model = BPDA(self.model, self.bpda) if self.bpda is not None else self.model
            found = (checks.probabilities_instead_of_logits(probe_logits), checks.nondeterministic(self.model, first),
                     checks.gradient_health(gradient_model, first, first_y))
            flags = [asdict(f) for f in found if f is not None]
        self.state.clean_done, self.state.clean_by, self.state.flags = True, provenance.computed_by(), flags
        self.state.save(force=True)

    def run_steps(self) -> list[AttackRecord]:
        """Every step of the suite on the points still robust, batch by batch."""
        records = []
        for number, step in enumerate(self.built.steps):
            record = self._run_step(number, step)
            after = robust_after(self.state.broken_by, {s.label for s in self.built.steps[:number + 1]})
            record.robust_accuracy_after = after / max(self.total, 1)
            self.state.save(force=True)
            records.append(record)
            self.progress.attack_finished(record, after, self.total)
        return records

    def _run_step(self, number: int, step: SuiteStep) -> AttackRecord:
        done = set(self.state.attacked.get(step.label, []))
        todo = [i for i in range(self.total) if self.state.robust[i] and i not in done and owns(i, self.shard)]
        view = self.view_of(step)
        view_counter = CountingModel(view) if view is not self.counting else None
        counters = [c for c in (self.counting, view_counter) if c is not None]
        # the attack's passes in the evaluation's precision; the verdicts stay float32
        attacker = in_precision(view if view_counter is None else view_counter, self.options.precision)
        self.progress.attack_started(step.label, len(todo) + len(done))
        attacked = len(done)
        for start in range(0, len(todo), self.batch_size):
            rows = todo[start:start + self.batch_size]
            self._attack_batch(number, step, attacker, rows, counters, attacked)
            attacked += len(rows)
            self.progress.points_done(step.label, attacked, sum(self.state.robust), self.total)
        return step_record(step.label, step.attack.describe(), self.state.batches)

    def _attacked(self, step: SuiteStep, attacker: nn.Module, rows: list[int], points: tuple[torch.Tensor, ...],
                  counters: list[CountingModel], done: int) -> tuple[torch.Tensor, TrackedBatch]:
        """The attack's examples for the points ``rows`` (``points``: their images, labels and indices). A
        pass that runs out of device memory is made again with fewer images per pass (:mod:`attacks.memory`),
        on the same batch, from its snapshot."""
        xb, yb, index = points
        while True:
            try:
                with self.tracked(step.label, rows, counters, done) as batch:
                    return step.attack(attacker, xb, yb, index).detach(), batch
            except Exception as err:  # noqa: BLE001 - only running out of memory is retried
                if not memory.out_of_memory(err) or not self._smaller_passes(len(rows)):
                    raise

    def _smaller_passes(self, batch_rows: int) -> bool:
        """Halve the images per pass after running out of memory; False where that cannot help (the passes
        would be no larger than the batch itself: a smaller --batch-size can)."""
        smaller = memory.halved(self.cap, self.device)
        if smaller is None or smaller < batch_rows:
            return False
        self.cap = smaller
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.snapshots.reload()
        say(self.progress, f"out of device memory in a pass of the attack: passes of at most {smaller} images now; "
                           "the batch in flight goes on from its last snapshot")
        return True

    def _attack_batch(self, number: int, step: SuiteStep, attacker: nn.Module, rows: list[int],
                      counters: list[CountingModel], done: int) -> None:
        xb, yb, index = self.rows(rows)
        x_adv, batch = self._attacked(step, attacker, rows, (xb, yb, index), counters, done)
        invalid = checks.invalid_examples(x_adv, xb, self.options.eps, self.options.norm)
        with torch.no_grad(), full_float32():
            logits = self.counting(x_adv).float()
        # NaN or inf logits predict no class: the point is not classified correctly
        nonfinite = ~torch.isfinite(logits).all(dim=1) & ~invalid
        # a point the attack retired with an example the judge confirmed counts as broken whatever this pass,
        # at another batch shape, rounds to (attacks.verdict)
        retired = batch.judge.retired()
        retired_rows = torch.tensor([i in retired for i in rows], dtype=torch.bool, device=yb.device)
        wrong = (broken_by_logits(logits, yb) | retired_rows) & ~invalid
        forwards, backwards, seconds = batch.so_far()
        broken_rows = torch.tensor(rows, dtype=torch.long)[wrong.cpu()]
        if self.kept is not None:     # the examples are on disk before the state marks their points broken
            self.kept[broken_rows] = x_adv[wrong].to(self.kept.device)
            self.examples.add(KeptExamples.part(number, rows[0]), broken_rows, x_adv[wrong])
        for i in broken_rows.tolist():
            self.state.robust[i] = False
            self.state.broken_by[i] = step.label
        self.state.add_batch(step.label, rows, self.shard, earlier_seconds=batch.earlier_seconds, points=len(rows),
                             broken=int(wrong.sum()), invalid=int(invalid.sum()), nonfinite=int(nonfinite.sum()),
                             forwards=forwards, backwards=backwards, seconds=seconds)
        if self.snapshots.present:
            self.state.save(force=True)     # the batch's verdicts are on disk before its snapshot goes
            self.snapshots.clear()
        else:
            self.state.save()

    def flags_so_far(self) -> list[Flag]:
        return [Flag(**f) for f in self.state.flags]
