"""Snapshots of the batch in flight (attacks.inflight): an evaluation interrupted inside a long
attack resumes inside it and gives exactly the answer of an uninterrupted one."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
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


@pytest.fixture
def every_offer(monkeypatch):
    """A snapshot at every offer (no interval, no spacing after the time a write took)."""
    monkeypatch.setattr(inflight, "SNAPSHOT_SECONDS", 0.0)
    monkeypatch.setattr(inflight, "WRITE_SPACING", 0.0)


@dataclass
class MomentumState(attacks.RunState):
    x_adv: torch.Tensor
    velocity: torch.Tensor
    step: int = 0


@dataclass
class MomentumPGD(attacks.IterativeAttack):
    """MI-FGSM on the model itself, written as a newcomer writes an attack: a start and a step, and no
    snapshot code of its own. The kill-and-resume test below resumes it in the middle of its steps."""

    steps: int = 10
    decay: float = 1.0
    name = "momentum-pgd-test"
    norms = ("Linf",)
    State = MomentumState

    def start(self, model, x, y, index):
        return MomentumState(x_adv=x.clone(), velocity=torch.zeros_like(x))

    def step(self, model, x, y, state):
        current = state.x_adv.detach().requires_grad_(True)
        loss = F.cross_entropy(model(current).float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, current)
        state.velocity = (self.decay * state.velocity
                          + grad / grad.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12))
        step_size = 2.5 * self.eps / self.steps
        state.x_adv = attacks.project(current.detach() + step_size * state.velocity.sign(), x, self.eps, self.norm)


@pytest.fixture
def momentum_pgd():
    """The attack above in the registry, for the length of a test."""
    attacks.register_attack(MomentumPGD)
    yield MomentumPGD
    attacks.ATTACKS.pop(MomentumPGD.name)


SUITES = {
    "square-linf": ({"attacks": [{"attack": "square", "queries": 300}]}, "Linf", EPS),
    "square-l2": ({"attacks": [{"attack": "square", "queries": 300}]}, "L2", 1.0),
    "apgd-t-in-order": ({"attacks": [{"attack": "apgd-t", "steps": 8, "targets": 4, "rows_per_pass": 1}]},
                        "Linf", 0.03),
    "fab-t-side-by-side-restarts": ({"attacks": [{"attack": "fab-t", "steps": 6, "targets": 3, "restarts": 2,
                                                  "rows_per_pass": 4096}]}, "Linf", 0.03),
    "apgd-restarts": ({"attacks": [{"attack": "apgd", "steps": 8, "restarts": 3}]}, "Linf", 0.02),
    "pgd-restarts": ({"attacks": [{"attack": "pgd", "steps": 6, "restarts": 3}]}, "L2", 0.5),
    # one long run each: resumed in the middle of its steps
    "apgd-one-run": ({"attacks": [{"attack": "apgd", "steps": 40}]}, "Linf", 0.01),
    "apgd-t-side-by-side": ({"attacks": [{"attack": "apgd-t", "steps": 20, "targets": 3, "rows_per_pass": 4096}]},
                            "L2", 0.3),
    "fab-t-in-order": ({"attacks": [{"attack": "fab-t", "steps": 20, "targets": 2, "rows_per_pass": 1}]}, "Linf", 0.01),
    "pgd-one-run": ({"attacks": [{"attack": "pgd", "steps": 40, "alpha": 0.001}]}, "Linf", 0.01),
    "cw-search": ({"attacks": [{"attack": "cw-l2", "steps": 12, "search_steps": 3, "c": 0.1}]}, "L2", 0.3),
    # an attack of a newcomer's (above), with no snapshot code: resumed in the middle of its steps all the same
    "momentum-pgd-of-a-newcomer": ({"attacks": [{"attack": "momentum-pgd-test", "steps": 40}]}, "Linf", 0.01),
}


@pytest.mark.parametrize("case", sorted(SUITES))
def test_a_batch_interrupted_inside_an_attack_resumes_to_the_same_examples(tiny_classifier, tmp_path, every_offer,
                                                                           momentum_pgd, case):
    suite, norm, eps = SUITES[case]
    model, x, y = tiny_classifier
    x, y = x[:24], y[:24]
    settings = dict(eps=eps, norm=norm, batch_size=12, sanity_checks=False, keep_examples=True, fold_batchnorm=False,
                    channels_last=False)
    whole = StopAfter(model)
    uninterrupted = attacks.evaluate(whole, x, y, suite, **settings)
    # the first batch's attack takes about half the passes: stop a third of the way through the evaluation
    calls = whole.seen // 3
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
    # would take exactly the uninterrupted run's passes), nor the part or run it was cut off in: with a
    # snapshot at every step it lost at most the pass that was cut off, the targeted attacks' ranking
    # of the targets and FAB's second pass of its step
    assert resuming.seen + calls <= whole.seen + 3
    # the counts add up across the two runs: the same passes, except that a targeted attack ranks the
    # targets of its batch again when it resumes (one forward pass over the batch of 12)
    record, reference = resumed.attacks[0], uninterrupted.attacks[0]
    assert (record.points_attacked, record.points_broken, record.backwards) == \
        (reference.points_attacked, reference.points_broken, reference.backwards)
    assert record.forwards - reference.forwards == (12 if "-t-" in case else 0)


def test_a_snapshot_of_another_batch_or_evaluation_is_not_used_and_a_damaged_one_is_named(tiny_classifier, tmp_path,
                                                                                         every_offer):
    model, x, y = tiny_classifier
    x, y = x[:24], y[:24]
    suite = {"attacks": [{"attack": "square", "queries": 200}]}
    settings = dict(eps=EPS, sanity_checks=False, fold_batchnorm=False, channels_last=False)
    reference = attacks.evaluate(model, x, y, suite, batch_size=12, **settings)
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
    start_over = fresh.seen

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
    # a snapshot of another version of the format: said, and not used
    state.unlink()
    snapshot.write_bytes(kept)
    data = torch.load(snapshot, weights_only=True)
    torch.save({**data, "version": data["version"] + 1}, snapshot)
    notes, counted = Notes(), StopAfter(model)
    result = attacks.evaluate(counted, x, y, suite, batch_size=12, state_path=state, progress=notes, **settings)
    assert result.points == reference.points and not snapshot.exists() and counted.seen == start_over
    assert notes.lines == [f"'{snapshot}' was written by another version of robust-kd: the batch it was made in "
                           "starts over"]
    state.unlink()
    snapshot.write_bytes(b"not a snapshot")
    with pytest.warns(UserWarning, match="is damaged"):
        attacks.evaluate(model, x, y, suite, batch_size=12, state_path=state, **settings)


def test_a_snapshot_of_targets_in_order_is_not_taken_for_targets_side_by_side(tiny_classifier, every_offer):
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
    # the snapshot taken as the first of four targets finished, and one in the middle of the second
    first = next(s for s in written if int(s["levels"][0]["tensors"]["parts_done"]) == 1)
    inside = next(s for s in written if int(s["levels"][0]["tensors"]["parts_done"]) == 1 and len(s["levels"]) == 2
                  and int(s["levels"][1]["tensors"]["step"]) == 4)
    assert len(first["levels"]) == 1 and inside["levels"][1]["kind"] == "apgd run"
    for saved, levels in ((first, 1), (inside, 2)):
        with inflight.tracking(saved, lambda _: None) as batch:
            assert torch.equal(in_order(model, x, y), in_order_examples)
        assert batch.restored == levels
        with inflight.tracking(saved, lambda _: None) as batch:
            resumed = side_by_side(model, x, y)
        assert batch.restored == 0 and torch.equal(resumed, side_by_side(model, x, y))


def test_snapshots_keep_their_interval_and_leave_twenty_times_a_slow_write_between_two(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(inflight, "_clock", lambda: now[0])
    written: list[float] = []

    def write(snapshot):
        written.append(now[0])
        now[0] += 2.0             # a write that takes 2 s: the next one waits 20 × 2 s

    @dataclass
    class Run(inflight.RunState):
        x: torch.Tensor
        step: int = 0

    x = torch.zeros(2, 3)
    with inflight.tracking(None, write, seconds=30.0):
        with inflight.resume(Run, x, lambda: Run(x)) as run:
            for _ in run.steps(200):
                now[0] += 1.0
    # due at 30 s; the first write ends at 32 s, so the next is due at 72 s, then 114 s, then 156 s
    assert written == [30.0, 72.0, 114.0, 156.0, 198.0]


def test_a_write_cut_off_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    from attacks.store import write_atomically

    target = tmp_path / "state.json"
    write_atomically(target, lambda f: f.write(b"old"))

    def cut_off(f):
        f.write(b"half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, cut_off)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_an_interrupted_convergence_check_resumes_inside_its_probe(tiny_classifier, tmp_path, every_offer):
    """The check after the suite (the first iterative attack with five times the steps) is the
    longest single run of an evaluation; it is snapshotted like a batch of the suite."""
    model, x, y = tiny_classifier
    x, y = x[:24], y[:24]
    suite = {"attacks": [{"attack": "pgd", "steps": 8, "alpha": 0.002}]}
    settings = dict(eps=0.01, norm="Linf", batch_size=12, fold_batchnorm=False, channels_last=False)
    whole = StopAfter(model)
    uninterrupted = attacks.evaluate(whole, x, y, suite, **settings)
    assert uninterrupted.convergence["points"] > 0 and uninterrupted.convergence["probe"]["steps"] == 40
    # the probe runs last: its 40 steps are the last passes but one (the verdict on its examples)
    calls = whole.seen - 20
    state = tmp_path / "state.json"
    stopping = StopAfter(model)
    stopping.calls = calls
    with pytest.raises(_Interrupt):
        attacks.evaluate(stopping, x, y, suite, state_path=state, **settings)
    saved = torch.load(state.with_suffix(".inflight.pt"), weights_only=True)
    assert saved["step"].startswith("convergence check") and saved["snapshot"]["levels"][-1]["kind"] == "pgd run"

    resuming = StopAfter(model)
    resumed = attacks.evaluate(resuming, x, y, suite, state_path=state, **settings)
    assert resumed.convergence == uninterrupted.convergence and resumed.points == uninterrupted.points
    assert not state.with_suffix(".inflight.pt").exists()
    # the rerun did the clean probe pass and the rest of the probe, not its first 20 steps again
    assert resuming.seen <= 20 + 3


def test_a_resumed_evaluation_keeps_the_examples_of_the_batches_finished_before(tiny_classifier, tmp_path):
    model, x, y = tiny_classifier
    x, y = x[:24], y[:24]
    suite = {"attacks": [{"attack": "pgd", "steps": 6}, {"attack": "fgsm"}]}
    settings = dict(eps=0.05, norm="Linf", batch_size=12, sanity_checks=False, keep_examples=True)
    whole = StopAfter(model)
    uninterrupted = attacks.evaluate(whole, x, y, suite, **settings)
    broken = [i for i, b in enumerate(uninterrupted.points["broken_by"]) if b not in (None, "clean")]
    assert broken and not torch.equal(uninterrupted.x_adv[broken], x[broken])
    state = tmp_path / "state.json"
    stopping = StopAfter(model)
    stopping.calls = whole.seen - 3          # in the last batch: every earlier batch is finished
    with pytest.raises(_Interrupt):
        attacks.evaluate(stopping, x, y, suite, state_path=state, **settings)
    saved = sorted(p.name for p in (tmp_path / "state.examples").iterdir())
    assert saved and all(name.endswith(".pt") for name in saved)
    resumed = attacks.evaluate(model, x, y, suite, state_path=state, **settings)
    assert resumed.points == uninterrupted.points and torch.equal(resumed.x_adv, uninterrupted.x_adv)

    # a damaged examples file is said, and only its examples are missing
    first = tmp_path / "state.examples" / saved[0]
    first.write_bytes(b"not examples")
    with pytest.warns(UserWarning, match=r"state\.examples/.*is damaged \(\w+\): its examples are not used"):
        again = attacks.evaluate(model, x, y, suite, state_path=state, **settings)
    assert again.points == uninterrupted.points
    # the points of that file lost their example; the others kept theirs
    lost = [i for i in broken if torch.equal(again.x_adv[i], x[i])]
    assert lost and all(torch.equal(again.x_adv[i], uninterrupted.x_adv[i]) for i in broken if i not in lost)


def test_kept_examples_of_every_rank_are_restored_for_the_points_still_broken(tmp_path):
    from attacks.kept import KeptExamples

    key = {"suite": "s", "n": 6, "model": "abc"}
    x = torch.rand(6, 1, 2, 2)
    for rank in range(2):         # each rank's state file has its own folder; the keys differ only in "shard"
        path = tmp_path / f"state.rank{rank}of2.json"
        KeptExamples(path, {**key, "shard": [rank, 2]}, torch.zeros(6, 1, 2, 2)).add(
            f"000-{rank:08d}", torch.tensor([rank, rank + 2, rank + 4]), x[rank::2])
    KeptExamples(tmp_path / "other.json", {**key, "model": "other"}, torch.zeros(6, 1, 2, 2)).add(
        "000-00000000", torch.arange(6), torch.full((6, 1, 2, 2), 7.0))
    family = [tmp_path / "state.rank0of2.json", tmp_path / "state.rank1of2.json", tmp_path / "other.json"]
    # another evaluation's, of other points (left beside a state deleted to start over): not "damaged", ignored
    KeptExamples(tmp_path / "other.json", {**key, "n": 9}, torch.zeros(9, 1, 3, 3)).add(
        "001-00000000", torch.arange(9), torch.full((9, 1, 3, 3), 7.0))
    kept = torch.zeros(6, 1, 2, 2)
    broken = [True, True, True, False, True, True]      # point 3 not broken in this state: not restored
    restoring = KeptExamples(tmp_path / "state.json", key, kept)
    assert restoring.restore(family, broken) == 5 and restoring.damaged == []
    assert torch.equal(kept[[0, 1, 2, 4, 5]], x[[0, 1, 2, 4, 5]]) and not kept[3].any()
    # only the files of batches the state counted (here rank 0's): another file may be of a batch
    # that ran again after a kill, whose example the verdict did not come from
    kept = torch.zeros(6, 1, 2, 2)
    assert KeptExamples(tmp_path / "state.json", key, kept).restore(family, broken, {"000-00000000"}) == 3
    assert torch.equal(kept[[0, 2, 4]], x[[0, 2, 4]]) and not kept[[1, 3, 5]].any()
    # without keep_examples or a state file nothing is written or read
    assert KeptExamples(None, key, kept).restore(family, broken) == 0
    KeptExamples(tmp_path / "none.json", key, None).add("000-00000000", torch.arange(6), x)
    assert not (tmp_path / "none.examples").exists()


def test_an_interrupt_while_examples_are_written_loses_no_example_and_no_count(tiny_classifier, tmp_path, monkeypatch):
    """The examples of a batch reach the disk before its verdicts: a Ctrl-C in between leaves the
    batch unfinished (attacked again on resume), never broken points without examples or counts."""
    from attacks.kept import KeptExamples

    model, x, y = tiny_classifier
    x, y = x[:24], y[:24]
    suite = {"attacks": [{"attack": "fgsm"}, {"attack": "pgd", "steps": 4}]}
    settings = dict(eps=0.05, norm="Linf", batch_size=8, sanity_checks=False, keep_examples=True)
    reference = attacks.evaluate(model, x, y, suite, **settings)
    assert reference.attacks[0].points_broken > 0
    add, calls = KeptExamples.add, []

    def interrupted(self, part, index, x_adv):
        calls.append(part)
        if len(calls) == 2:
            raise KeyboardInterrupt
        add(self, part, index, x_adv)

    monkeypatch.setattr(KeptExamples, "add", interrupted)
    state = tmp_path / "state.json"
    with pytest.raises(KeyboardInterrupt):
        attacks.evaluate(model, x, y, suite, state_path=state, **settings)
    monkeypatch.undo()
    resumed = attacks.evaluate(model, x, y, suite, state_path=state, **settings)
    assert resumed.points == reference.points and torch.equal(resumed.x_adv, reference.x_adv)
    assert [(a.label, a.points_attacked, a.points_broken) for a in resumed.attacks] == \
        [(a.label, a.points_attacked, a.points_broken) for a in reference.attacks]
