"""Passes that run out of device memory (attacks.memory): the evaluation makes them again with fewer
images per pass, on the same batch, and the verdicts are those of a run that had memory enough. On the
CPU the model raises the error a GPU would when a pass holds more images than it "fits"."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import attacks
from attacks import memory


class RunsOutOfMemory(nn.Module):
    """``model``, but a differentiated pass of more than ``rows`` images raises CUDA's out-of-memory error."""

    def __init__(self, model: nn.Module, rows: int) -> None:
        super().__init__()
        self.model, self.rows, self.failures = model, rows, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and x.shape[0] > self.rows:
            self.failures += 1
            raise torch.OutOfMemoryError(f"CUDA out of memory (simulated: a pass of {x.shape[0]} images)")
        return self.model(x)


class Notes:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def notify(self, text: str) -> None:
        self.lines.append(text)


SETTINGS = dict(eps=0.03, batch_size=8, sanity_checks=False, fold_batchnorm=False, channels_last=False)
# APGD-T's three targets side by side: by device (36 images per pass on a CPU) 8 points make passes of 24
SUITE = {"attacks": [{"attack": "apgd-t", "steps": 6, "targets": 3}]}


def test_a_pass_out_of_memory_is_made_again_smaller_on_the_same_batch(tiny_classifier):
    model, x, y = tiny_classifier
    x, y = x[:16], y[:16]
    reference = attacks.evaluate(model, x, y, SUITE, **SETTINGS)
    tight, notes = RunsOutOfMemory(model, 16), Notes()
    result = attacks.evaluate(tight, x, y, SUITE, progress=notes, **SETTINGS)
    assert tight.failures == 1 and result.points == reference.points
    # once: the cap then holds for the second batch too
    assert notes.lines == ["out of device memory in a pass of the attack: passes of at most 18 images now; the batch "
                           "in flight goes on from its last snapshot"]


def test_a_batch_whose_own_passes_do_not_fit_says_so_to_its_caller(tiny_classifier):
    """Fewer images per pass cannot help a batch whose own passes are too large: the error reaches the
    caller (the CLI then halves --batch-size)."""
    model, x, y = tiny_classifier
    tight, notes = RunsOutOfMemory(model, 4), Notes()
    with pytest.raises(torch.OutOfMemoryError):
        attacks.evaluate(tight, x[:8], y[:8], SUITE, progress=notes, **SETTINGS)
    assert [line.split(";")[0] for line in notes.lines] == [
        "out of device memory in a pass of the attack: passes of at most 18 images now",
        "out of device memory in a pass of the attack: passes of at most 9 images now"]


def test_the_cap_bounds_the_passes_of_every_attack_by_device():
    cpu = torch.device("cpu")
    assert memory.rows_per_pass(cpu, memory.TARGET_ROWS, 1) == 36
    with memory.capped(10):
        assert memory.rows_per_pass(cpu, memory.TARGET_ROWS, 1) == 10
        assert memory.rows_per_pass(cpu, memory.SQUARE_ROWS, 256) == 10
    assert memory.halved(None, cpu) == 18 and memory.halved(1, cpu) is None
    assert memory.rows_that_fit(nn.Linear(4, 2), torch.rand(2, 4)) is None      # measured on CUDA only
    assert memory.out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert not memory.out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
