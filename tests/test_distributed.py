"""Under torchrun (2 CPU processes, gloo): a sharded evaluation gives the single process's per-point
verdicts, in the library and through `robust-kd attack`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import attacks
from attacks.shard import owns, resolve_shard
from robust_kd.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from sharded_case import EPS, SUITE, make_case  # noqa: E402

TINY = ["--data", "synthetic", "--device", "cpu", "epochs=1", "batch_size=32", "data.options.size=16",
        "data.options.train=96", "data.options.test=64", "data.options.classes=4"]


def torchrun(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_sharded_evaluation_equals_one_process_point_for_point(tmp_path):
    model, x, y = make_case()
    single = attacks.evaluate(model, x, y, SUITE, eps=EPS, seed=3, batch_size=8, sanity_checks=False).to_dict()
    out = tmp_path / "sharded.json"
    done = torchrun(str(Path(__file__).parent / "sharded_worker.py"), str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    sharded = json.loads(out.read_text())
    assert sharded["points"] == single["points"]                    # every verdict and the attack that broke it
    assert sharded["robust_acc"] == single["robust_acc"] and sharded["clean_acc"] == single["clean_acc"]
    for mine, theirs in zip(sharded["attacks"], single["attacks"]):
        for key in ("label", "points_attacked", "points_broken", "robust_accuracy_after"):
            assert mine[key] == theirs[key], key
    assert 0 < single["robust_acc"] < 100                          # a case where attacks both fail and succeed
    assert sum(a["points_broken"] for a in single["attacks"][1:]) > 0


def test_shard_arguments():
    assert resolve_shard(None) == (0, 1) and resolve_shard("auto") == (0, 1)   # no process group here
    assert [i for i in range(7) if owns(i, (1, 3))] == [1, 4]
    with pytest.raises(attacks.AttackError, match="rank"):
        resolve_shard((2, 2))
    with pytest.raises(attacks.AttackError, match="process group"):
        resolve_shard((0, 2))


def test_robust_kd_attack_under_torchrun(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["train", "--model", "resnet8", "--runs-dir", str(runs), *TINY]) == 0
    run = next(runs.iterdir())
    attack = ["attack", "--model", str(run), "--suite", "fast", "--n", "40", "--eps", "8/255", "--device", "cpu"]
    assert main(attack) == 0
    capsys.readouterr()
    result_file = next((run / "attacks").glob("fast-*.json"))
    single = json.loads(result_file.read_text())
    done = torchrun("-m", "robust_kd.cli", "--", *attack, "--fresh")   # "--": the rest is ours, not torchrun's
    assert done.returncode == 0, done.stderr[-2000:]
    sharded = json.loads(result_file.read_text())
    assert sharded["processes"] == 2 and single["processes"] == 1
    for a, b in zip(sharded["evaluations"], single["evaluations"]):
        assert a["points"] == b["points"] and a["robust_acc"] == b["robust_acc"]
    assert done.stdout.count("results: ") == 1                    # rank 0 alone prints
    assert sorted(p.name.split(".")[-2] for p in (run / "attacks" / ".state").glob("fast-*.rank*.json")) == \
        ["rank0of2", "rank1of2"]

    refused = torchrun("-m", "robust_kd.cli", "--", "train", "--model", "resnet8", "--runs-dir", str(runs), *TINY)
    assert refused.returncode != 0 and "does not run under torchrun" in refused.stderr
