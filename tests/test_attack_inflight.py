"""Snapshots of the batch in flight (attacks.inflight): an evaluation interrupted inside a long
attack resumes inside it and gives exactly the answer of an uninterrupted one."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import attacks
from attacks import inflight

EPS = 0.05


class _Interrupt(Exception):
    pass


class StopAfter(nn.Module):
    """The model, raising after ``calls`` forward passes once armed (a Ctrl-C inside an attack)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.calls, self.seen = model, None, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += 1
        if self.calls is not None:
            self.calls -= 1
            if self.calls < 0:
                raise _Interrupt
        return self.model(x)


SUITES = {
    "square-linf": ({"attacks": [{"attack": "square", "queries": 300}]}, "Linf", EPS),
    "square-l2": ({"attacks": [{"attack": "square", "queries": 300}]}, "L2", 1.0),
    "apgd-t-in-order": ({"attacks": [{"attack": "apgd-t", "steps": 8, "targets": 4, "rows_per_pass": 1}]}, "Linf", 0.03),
    "fab-t-side-by-side-restarts": ({"attacks": [{"attack": "fab-t", "steps": 6, "targets": 3, "restarts": 2,
                                                  "rows_per_pass": 4096}]}, "Linf", 0.03),
    "apgd-restarts": ({"attacks": [{"attack": "apgd", "steps": 8, "restarts": 3}]}, "Linf", 0.02),
    "pgd-restarts": ({"attacks": [{"attack": "pgd", "steps": 6, "restarts": 3}]}, "L2", 0.5),
}


@pytest.mark.parametrize("case", sorted(SUITES))
def test_a_batch_interrupted_inside_an_attack_resumes_to_the_same_examples(tiny_classifier, tmp_path, monkeypatch, case):
    suite, norm, eps = SUITES[case]
    model, x, y = tiny_classifier
    x, y = x[:24], y[:24]
    settings = dict(eps=eps, norm=norm, batch_size=12, sanity_checks=False, keep_examples=True, fold_batchnorm=False,
                    channels_last=False)
    whole = StopAfter(model)
    uninterrupted = attacks.evaluate(whole, x, y, suite, **settings)
    # the first batch's attack takes about half the passes: stop a third of the way through the evaluation
    calls = whole.seen // 3
    monkeypatch.setattr(inflight, "SNAPSHOT_SECONDS", 0.0)     # a snapshot at every offer
    state = tmp_path / "state.json"
    stopping = StopAfter(model)
    stopping.calls = calls
    with pytest.raises(_Interrupt):
        attacks.evaluate(stopping, x, y, suite, state_path=state, **settings)
    snapshot = state.with_suffix(".inflight.pt")
    assert snapshot.is_file()                                 # the batch in flight was snapshotted

    resuming = StopAfter(model)
    resumed = attacks.evaluate(resuming, x, y, suite, state_path=state, **settings)
    assert resumed.points == uninterrupted.points
    assert torch.equal(resumed.x_adv, uninterrupted.x_adv)
    assert not snapshot.exists()                              # gone once its batch was finished
    # the resumed run did not start the batch over (nothing was finished before it, so starting over
    # would take exactly the uninterrupted run's passes); Square, snapshotted after every pass here,
    # lost at most the pass that was cut off (plus the clean passes and probe of the second start)
    assert resuming.seen < whole.seen
    if case.startswith("square"):
        assert resuming.seen + calls <= whole.seen + 4
    # the counts add up across the two runs: the same passes, except that a targeted attack ranks the
    # targets of its batch again when it resumes (one forward pass over the batch of 12)
    record, reference = resumed.attacks[0], uninterrupted.attacks[0]
    assert (record.points_attacked, record.points_broken, record.backwards) == \
        (reference.points_attacked, reference.points_broken, reference.backwards)
    assert record.forwards - reference.forwards == (12 if "-t-" in case else 0)


def test_a_snapshot_of_another_batch_or_evaluation_is_not_used_and_a_damaged_one_is_named(tiny_classifier, tmp_path,
                                                                                         monkeypatch):
    model, x, y = tiny_classifier
    x, y = x[:24], y[:24]
    suite = {"attacks": [{"attack": "square", "queries": 200}]}
    settings = dict(eps=EPS, sanity_checks=False, fold_batchnorm=False, channels_last=False)
    reference = attacks.evaluate(model, x, y, suite, batch_size=12, **settings)
    monkeypatch.setattr(inflight, "SNAPSHOT_SECONDS", 0.0)
    state = tmp_path / "state.json"
    snapshot = state.with_suffix(".inflight.pt")
    stopping = StopAfter(model)
    stopping.calls = 40
    with pytest.raises(_Interrupt):
        attacks.evaluate(stopping, x, y, suite, batch_size=12, state_path=state, **settings)
    assert snapshot.is_file()
    kept = snapshot.read_bytes()

    fresh = StopAfter(model)
    attacks.evaluate(fresh, x, y, suite, batch_size=12, **settings)   # the passes of a start from nothing

    # the same batch size but the snapshot names other points: not theirs, so the batch starts over
    data = torch.load(snapshot, weights_only=True)
    torch.save({**data, "rows": [r + 1 for r in data["rows"]]}, snapshot)
    state.unlink()
    other = StopAfter(model)
    result = attacks.evaluate(other, x, y, suite, batch_size=12, state_path=state, **settings)
    assert result.points == reference.points and not snapshot.exists() and other.seen == fresh.seen

    # another batch size: other batches, so the snapshot is not theirs; the answer is still the same
    state.unlink()
    snapshot.write_bytes(kept)
    result = attacks.evaluate(model, x, y, suite, batch_size=8, state_path=state, **settings)
    assert result.points == reference.points and not snapshot.exists()

    # a snapshot of another evaluation (another eps) beside a fresh state: ignored (the answer is that
    # eps's own), then removed
    state.unlink()
    snapshot.write_bytes(kept)
    other, fresh = StopAfter(model), StopAfter(model)
    result = attacks.evaluate(other, x, y, suite, batch_size=12, state_path=state, **{**settings, "eps": 2 * EPS})
    assert result.points == attacks.evaluate(fresh, x, y, suite, batch_size=12, **{**settings, "eps": 2 * EPS}).points
    assert other.seen == fresh.seen and not snapshot.exists()

    # a damaged snapshot is only a lost shortcut: said (to the progress's notify, else as a warning),
    # not used, and the evaluation goes on
    class Notes:
        def __init__(self):
            self.lines = []

        def attack_started(self, label, points): ...
        def points_done(self, label, done, robust, total): ...
        def attack_finished(self, record, robust, total): ...

        def notify(self, text):
            self.lines.append(text)

    for damage in (kept[: len(kept) // 2], b"not a snapshot"):
        state.unlink()
        snapshot.write_bytes(damage)
        notes = Notes()
        result = attacks.evaluate(model, x, y, suite, batch_size=12, state_path=state, progress=notes, **settings)
        assert result.points == reference.points and not snapshot.exists()
        assert len(notes.lines) == 1 and re.fullmatch(r"'.*inflight\.pt' is damaged \(\w+\): the batch it was made in "
                                                     r"starts over", notes.lines[0]), notes.lines
    state.unlink()
    snapshot.write_bytes(b"not a snapshot")
    with pytest.warns(UserWarning, match="is damaged"):
        attacks.evaluate(model, x, y, suite, batch_size=12, state_path=state, **settings)


def test_a_snapshot_of_targets_in_order_is_not_taken_for_targets_side_by_side(tiny_classifier):
    """rows_per_pass changes only the speed (it is not in the evaluation's key) and by default depends
    on the device, but the two arrangements count their parts differently: a snapshot of one must not
    make the other skip targets."""
    model, x, y = tiny_classifier
    x, y = x[:12], y[:12]
    in_order = attacks.APGDT(eps=0.03, steps=8, targets=4, rows_per_pass=1)
    side_by_side = attacks.APGDT(eps=0.03, steps=8, targets=4, rows_per_pass=4096)
    written: list[dict] = []
    with inflight.tracking(None, written.append, seconds=0.0):
        in_order_examples = in_order(model, x, y)
    first = written[0]          # after the first of four targets
    assert int(first["tensors"]["parts_done"]) == 1
    with inflight.tracking(first, lambda _: None) as batch:
        assert torch.equal(in_order(model, x, y), in_order_examples)
    assert batch.restored == 1
    with inflight.tracking(first, lambda _: None) as batch:
        resumed = side_by_side(model, x, y)
    assert batch.restored == 0 and torch.equal(resumed, side_by_side(model, x, y))
