"""Snapshots of the batch in flight (attacks.inflight): an evaluation interrupted inside a long
attack resumes inside it and gives exactly the answer of an uninterrupted one."""

from __future__ import annotations

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

    # another batch size: other batches, so the snapshot is not theirs; the answer is still the same
    other = StopAfter(model)
    result = attacks.evaluate(other, x, y, suite, batch_size=8, state_path=state, **settings)
    assert result.points == reference.points and not snapshot.exists()

    # a snapshot of another evaluation (another eps) beside a fresh state: ignored, then removed
    state.unlink()
    snapshot.write_bytes(kept)
    result = attacks.evaluate(model, x, y, suite, batch_size=12, state_path=state, **{**settings, "eps": 2 * EPS})
    assert result.eps == 2 * EPS and not snapshot.exists()

    state.unlink()
    snapshot.write_bytes(kept[: len(kept) // 2])
    with pytest.raises(attacks.AttackError, match=r"inflight\.pt' is damaged .* delete it to start over"):
        attacks.evaluate(model, x, y, suite, batch_size=12, state_path=state, **settings)
    snapshot.write_bytes(b"not a snapshot")
    with pytest.raises(attacks.AttackError, match="is damaged"):
        attacks.evaluate(model, x, y, suite, batch_size=12, state_path=state, **settings)


def test_snapshots_are_not_taken_more_often_than_their_interval_nor_without_a_state_file(tiny_classifier, tmp_path,
                                                                                        monkeypatch):
    model, x, y = tiny_classifier
    written: list[dict] = []
    square = attacks.make_attack("square", eps=EPS, queries=50, forward_batch=4)
    monkeypatch.setattr(inflight, "SNAPSHOT_SECONDS", 3600.0)
    with inflight.tracking(None, written.append):
        square(model, x[:4], y[:4])
    assert written == []
    with inflight.tracking(None, written.append, seconds=0.0):
        first = square(model, x[:4], y[:4])
    assert len(written) > 1 and {w["kind"] for w in written} == {"square"}
    assert all(t.device.type == "cpu" for w in written for t in w["tensors"].values())
    # resuming from the first snapshot gives the same examples; a snapshot of another shape is not used
    with inflight.tracking(written[0], lambda _: None) as batch:
        assert torch.equal(square(model, x[:4], y[:4]), first)
    assert batch.restored == 1
    with inflight.tracking(written[0], lambda _: None) as batch:
        square(model, x[:3], y[:3])
    assert batch.restored == 0
    assert torch.equal(square(model, x[:4], y[:4]), first)   # outside tracking: nothing saved, nothing restored
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(inflight, "SNAPSHOT_SECONDS", 0.0)
    attacks.evaluate(model, x[:8], y[:8], {"attacks": [{"attack": "square", "queries": 20}]}, eps=EPS,
                     sanity_checks=False)   # no state file: no snapshot file either
    assert list(tmp_path.iterdir()) == []
