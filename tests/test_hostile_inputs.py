"""The hostile-input catalogue, part 1: the basics every verb already meets (tests/hostile.py has the
harness; the other parts are tests/test_hostile_*.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostile import Case, check


def _junk_checkpoint(scratch: Path) -> list[str]:
    (scratch / "junk.pt").write_bytes(b"not a checkpoint at all" * 10)
    return ["attack", "--model", str(scratch / "junk.pt"), "--runs-dir", str(scratch / "runs")]


def _empty_checkpoint(scratch: Path) -> list[str]:
    (scratch / "empty.pt").write_bytes(b"")
    return ["attack", "--model", str(scratch / "empty.pt"), "--runs-dir", str(scratch / "runs")]


CASES = [
    Case("unknown model", lambda s: ["train", "--model", "resnet9", "--runs-dir", str(s / "runs")],
         "unknown model 'resnet9'"),
    Case("unknown verb", lambda s: ["frobnicate"], "No such command"),
    Case("junk checkpoint", _junk_checkpoint, "junk.pt"),
    Case("empty checkpoint", _empty_checkpoint, "empty.pt"),
    Case("wrong type in an override", lambda s: ["train", "epochs=three", "--runs-dir", str(s / "runs")],
         "expects an integer"),
    Case("attack: a negative seed", lambda s: ["attack", "--seed", "-5", "--runs-dir", str(s / "runs")],
         r"--seed.*not in the range 0<=x<=4294967295"),
    Case("train: a seed past 2^32", lambda s: ["train", "--seed", str(2**64), "--runs-dir", str(s / "runs")],
         r"--seed.*not in the range"),
    Case("rsa-adversarial: a seed past 2^32", lambda s: ["rsa-adversarial", "--seed", str(2**40)],
         r"--seed.*not in the range"),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_hostile_input_is_refused_in_one_line(case, tmp_path, capsys):
    check(case, tmp_path, capsys)
