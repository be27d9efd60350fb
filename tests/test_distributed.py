"""Under torchrun (2 CPU processes, gloo): a sharded evaluation gives the single process's per-point
verdicts, in the library and through `robust-kd attack`."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import attacks
from attacks.shard import owns, resolve_shard
from robust_kd.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from conftest import HANG_SECONDS, epochs_written, metrics_history  # noqa: E402
from sharded_case import EPS, SUITE, make_case  # noqa: E402

TINY = ["--data", "synthetic", "--device", "cpu", "epochs=1", "batch_size=32", "data.options.size=16",
        "data.options.train=96", "data.options.test=64", "data.options.classes=4"]


def torchrun(*args: str, timeout: float = HANG_SECONDS) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def two_nodes(*args: str, timeout: float = HANG_SECONDS) -> list[subprocess.CompletedProcess]:
    """Two torchrun "nodes" of one process each on this machine, meeting through the c10d rendezvous
    as they would across machines."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--rdzv-id", "test",
               *args]
    nodes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [node.communicate(timeout=timeout) for node in nodes]
    return [subprocess.CompletedProcess(command, node.returncode, *out) for node, out in zip(nodes, outputs)]


@pytest.mark.parametrize("launch", ["one node", "two nodes"])
def test_sharded_evaluation_equals_one_process_point_for_point(tmp_path, launch):
    model, x, y = make_case()
    singles = attacks.evaluate(model, x, y, SUITE, eps=[EPS / 2, EPS], seed=3, batch_size=8, sanity_checks=False)
    out = tmp_path / "sharded.json"
    worker = [str(Path(__file__).parent / "sharded_worker.py"), str(out)]
    for done in (torchrun(*worker),) if launch == "one node" else two_nodes(*worker):
        assert done.returncode == 0, done.stderr[-2000:]
    for sharded, single in zip(json.loads(out.read_text())["results"], [r.to_dict() for r in singles]):   # eps list
        assert sharded["points"] == single["points"]                # every verdict and the attack that broke it
        assert sharded["robust_acc"] == single["robust_acc"] and sharded["clean_acc"] == single["clean_acc"]
        for mine, theirs in zip(sharded["attacks"], single["attacks"]):
            for key in ("label", "points_attacked", "points_broken", "robust_accuracy_after"):
                assert mine[key] == theirs[key], key
    single = singles[-1].to_dict()
    assert 0 < single["robust_acc"] < 100                          # a case where attacks both fail and succeed
    assert sum(a["points_broken"] for a in single["attacks"][1:]) > 0


def test_three_stopped_ranks_resume_as_two(tmp_path, monkeypatch):
    """Three ranks, each stopped after another step of the suite, leave three state files; two
    processes under torchrun resume from them, attack no point again, and end with the verdicts and
    counts of one uninterrupted process."""
    evaluation = sys.modules["attacks.evaluate"]
    model, x, y = make_case()
    singles = attacks.evaluate(model, x, y, SUITE, eps=[EPS / 2, EPS], seed=3, batch_size=8, sanity_checks=False)
    fresh_images = model.images

    class StopAfter:
        def __init__(self, step: int) -> None:
            self.step = SUITE["attacks"][step].get("label", SUITE["attacks"][step]["attack"])

        def attack_started(self, label, points): ...
        def points_done(self, label, done, robust, total): ...

        def attack_finished(self, record, robust, total):
            if record.label == self.step:
                raise KeyboardInterrupt

    state = tmp_path / "state.json"
    for rank in range(3):                     # the first eps of the list; the second one never started
        monkeypatch.setattr(evaluation, "resolve_shard", lambda shard, rank=rank: (rank, 3))
        alone = tmp_path / f"rank{rank}" / "state.json"     # as if all had started at once: none saw the others
        with pytest.raises(KeyboardInterrupt):
            attacks.evaluate(model, x, y, SUITE, eps=[EPS / 2, EPS], seed=3, batch_size=8, sanity_checks=False,
                             state_path=alone, progress=StopAfter(rank))
        (alone.parent / f"state.eps0.rank{rank}of3.json").rename(tmp_path / f"state.eps0.rank{rank}of3.json")
    monkeypatch.undo()
    assert len(list(tmp_path.glob("state.eps0.rank*of3.json"))) == 3 and not list(tmp_path.glob("state.eps1*"))

    out = tmp_path / "resumed.json"
    done = torchrun(str(Path(__file__).parent / "sharded_worker.py"), str(out), str(state))
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    for sharded, single in zip(report["results"], [r.to_dict() for r in singles]):
        assert sharded["points"] == single["points"]
        for mine, theirs in zip(sharded["attacks"], single["attacks"]):
            for key in ("label", "points_attacked", "points_broken", "robust_accuracy_after"):
                assert mine[key] == theirs[key], key
    saved = sum(b["forwards"] for p in tmp_path.glob("state.eps0.rank*of3.json")
                for b in json.loads(p.read_text())["batches"])
    # one process's work less what the stopped ranks had done, plus what each of two processes does
    # for all points: the probe batch of both eps (+2 × 8 images) and the clean pass of the second
    # (+48), while the first's clean pass is not run again (−48). Exact but for Square, whose
    # passes depend on the batch.
    expected = fresh_images - saved + 2 * 8 + 48 - 48
    assert abs(report["images"] - expected) <= 0.01 * expected and saved > 0.2 * fresh_images
    assert sorted(p.name for p in tmp_path.glob("state.eps*.rank*of2.json")) == [
        "state.eps0.rank0of2.json", "state.eps0.rank1of2.json", "state.eps1.rank0of2.json", "state.eps1.rank1of2.json"]


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

    refused = torchrun("-m", "robust_kd.cli", "--", "report", str(runs))
    assert refused.returncode != 0 and "does not run under torchrun" in refused.stderr

    # the same evaluation running elsewhere: rank 0 finds its lock taken, and every rank stops with one line
    import fcntl

    with open(run / "attacks" / ".state" / f"{result_file.stem}.lock", "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        busy = torchrun("-m", "robust_kd.cli", "--", *attack)
    ours = [line for line in busy.stderr.splitlines() if line.startswith(("robust-kd", "[rank"))]
    assert busy.returncode != 0 and ours == [
        f"robust-kd: error: another robust-kd attack is running this evaluation now (results: '{result_file}'); wait "
        "for it to finish, then rerun this command to read its results"], busy.stderr[-3000:]


def _weights(run: Path) -> dict:
    import torch

    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


FLOAT64_CLI = str(Path(__file__).parent / "float64_cli.py")   # robust-kd training in float64: see its docstring

# How far the float64 weights of one process and of two may differ (weights and running statistics are O(0.1-1),
# so the bound serves as relative and absolute tolerance). Per step the two compute the same numbers but
# (a) sum in other orders: at most TERMS·eps64 relative (Higham's bound for any order of a sum of TERMS terms),
# TERMS = 32·16·16, a weight gradient's sum over batch × height × width, the longest; and (b) the losses take
# float32 copies of the logits (objective: logits.float()), copies of values that agree to float64 rounding, so
# equal but where a value straddles a float32 rounding boundary: one float32 ulp, eps32. Over STEPS steps,
# STEPS·(eps32 + TERMS·eps64) = 7.2e-7. Measured: 2e-15 (1 or 2 threads, 1 or 2 processes); batch norm over
# each process's share instead of the global batch gives 2e-2.
STEPS = 2 * (96 // 32)          # epochs=2 over data.options.train=96 in global batches of 32 (TINY)
TERMS = 32 * 16 * 16
TOLERANCE = STEPS * (torch.finfo(torch.float32).eps + TERMS * torch.finfo(torch.float64).eps)


@pytest.mark.parametrize("verb,method", [("train", None), ("distill", "kd")])
def test_training_under_torchrun_equals_one_process(tmp_path, verb, method, hang_cap):
    """Two processes, each half of every global batch, batch norm over the global batch: the same
    weights as one process with the same global batch, to rounding, whatever OMP_NUM_THREADS says. Both
    train in float64 (tests/float64_cli.py), where rounding cannot flip a ReLU: see TOLERANCE."""
    single_dir, multi_dir = tmp_path / "single", tmp_path / "multi"
    args = [*TINY, "epochs=2"]
    if verb == "distill":
        teacher_runs = tmp_path / "teacher"
        assert main(["train", "--model", "resnet8", "--runs-dir", str(teacher_runs), "--name", "t", *TINY]) == 0
        command = ["distill", "--teacher", str(teacher_runs / "t"), "--student", "resnet8", "--method", method,
                   "--name", "run"]
    else:
        command = ["train", "--model", "resnet8", "--name", "run"]
    single = subprocess.run([sys.executable, FLOAT64_CLI, *command, "--runs-dir", str(single_dir), *args],
                            capture_output=True, text=True, timeout=hang_cap.left())
    assert single.returncode == 0, single.stderr[-3000:]
    done = torchrun(FLOAT64_CLI, *command, "--runs-dir", str(multi_dir), *args, timeout=hang_cap.left())
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = _weights(single_dir / "run"), _weights(multi_dir / "run")
    assert one.keys() == two.keys()
    assert one["net.conv1.weight"].dtype == torch.float64
    for key in one:
        if one[key].is_floating_point():
            assert torch.allclose(one[key], two[key], atol=TOLERANCE, rtol=TOLERANCE), (
                key, float((one[key] - two[key]).abs().max()))
        else:
            assert torch.equal(one[key], two[key]), key
    summary_one = json.loads((single_dir / "run" / "summary.json").read_text())
    summary_two = json.loads((multi_dir / "run" / "summary.json").read_text())
    assert summary_two["processes"] == 2 and summary_one["processes"] == 1
    assert abs(summary_one["final_test_accuracy"] - summary_two["final_test_accuracy"]) <= 1 / 64
    if method == "kd":           # a method that calls the student again on part of a batch: refused, one line
        heda = torchrun("-m", "robust_kd.cli", "--", *command[:-4], "--method", "heda", "--name", "h",
                        "--runs-dir", str(multi_dir), *args, timeout=hang_cap.left())
        assert heda.returncode != 0 and "augment=none" in heda.stderr
    again = torchrun(FLOAT64_CLI, *command, "--runs-dir", str(multi_dir), *args, timeout=hang_cap.left())  # resumes
    assert again.returncode == 0, again.stderr[-3000:]
    assert all(torch.equal(t, _weights(multi_dir / "run")[k]) for k, t in two.items())
    metrics_one = [json.loads(line) for line in (single_dir / "run" / "metrics.jsonl").read_text().splitlines()]
    metrics_two = [json.loads(line) for line in (multi_dir / "run" / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(metrics_one, metrics_two):            # train metrics reduced over both ranks
        assert abs(a["train_accuracy"] - b["train_accuracy"]) <= 2 / 96


def test_batch_pooled_losses_see_the_global_batch(tmp_path):
    """CSKD/CSWT and R2KD take cosines over the batch and DTD its mean difficulty: a mean of the
    ranks' losses is not the single-process loss. With the logits gathered, the gradient DDP makes
    from two shares equals the whole batch's (float64, to rounding); without, it is off."""
    out = tmp_path / "gather.json"
    done = torchrun(str(Path(__file__).parent / "gather_worker.py"), str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    for method, diff in report.items():
        assert diff["gathered"] <= 1e-12 * diff["size"] + 1e-14, method
    for method in ("cskd", "cswt", "r2kd", "dtd"):              # they do pool: the gather matters
        assert report[method]["naive"] > 1e-3 * report[method]["size"], method
    for method in ("kd", "wttm", "dkd"):                        # per-sample losses: the same either way
        assert report[method]["naive"] <= 1e-12 * report[method]["size"] + 1e-14, method


def test_sharded_batches_split_each_global_batch_evenly():
    """Each rank gets every world-th image of each global batch with its single-process augmentation;
    a partial last batch drops its last (size mod world) images so that the shares stay equal."""
    import torch

    from robust_kd.data import Augment, BatchLoader

    images = torch.arange(10 * 3 * 8 * 8, dtype=torch.uint8).reshape(10, 3, 8, 8)
    loader = BatchLoader(images, torch.arange(10), batch_size=4, shuffle=True, augment=Augment(2, True), seed=1)
    whole = [b for b in loader.batches(3) if len(b.index) >= 3]      # batches 4, 4, 2: the last has no 3 images
    shards = [list(loader.batches(3, (rank, 3))) for rank in range(3)]
    assert [len(s) for s in shards] == [2, 2, 2]
    for step, batch in enumerate(whole):
        usable = len(batch.index) - len(batch.index) % 3
        for rank in range(3):
            part = shards[rank][step]
            assert len(part.index) == usable // 3
            assert torch.equal(part.index, batch.index[:usable][rank::3])
            assert torch.equal(part.images, batch.images[:usable][rank::3])      # same crop and flip
            assert torch.equal(part.view, batch.view[:usable][rank::3])


def test_under_torchrun_each_process_takes_its_own_gpu(monkeypatch):
    import torch

    from robust_kd.device import resolve_device
    from robust_kd.errors import UserError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cuda") == torch.device("cuda:1") == resolve_device("auto")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(UserError, match="CUDA_VISIBLE_DEVICES"):
        resolve_device("cuda:0")           # both processes on GPU 0: refused before NCCL fails
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("gpu")
    with pytest.raises(UserError, match="no cuda device number 2; this machine has: cpu, cuda:0 .*cuda:1"):
        resolve_device("cuda:2")


def _descendants(pid: int) -> list[int]:
    """Children, grandchildren, ... of ``pid``, from /proc (Linux)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def test_a_torchrun_training_killed_mid_run_resumes_to_the_same_weights(tmp_path, hang_cap):
    """SIGKILL to torchrun and both workers once the first epoch is written (driven by the metrics file,
    not by a clock; 2 epochs are left, far more than one poll); the rerun resumes from the last checkpoint
    and ends with the weights of an uninterrupted two-process run (the same processes and threads: the
    same sums in the same order)."""
    import os
    import signal

    def command(name: str) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "robust_kd.cli", "--", "train", "--model", "resnet8", "--runs-dir", str(tmp_path),
                "--name", name, "--data", "synthetic", "--device", "cpu", "epochs=3", "batch_size=32",
                "data.options.size=16", "data.options.train=1200", "data.options.test=64",
                "data.options.classes=4"]

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    whole = subprocess.run(command("whole"), env=env, capture_output=True, text=True, timeout=hang_cap.left())
    assert whole.returncode == 0, whole.stderr[-3000:]

    log = tmp_path / "killed.log"           # a file, not a pipe: a pipe nobody reads would stall a slow victim
    with open(log, "w") as output:
        victim = subprocess.Popen(command("killed"), env=env, stdout=output, stderr=subprocess.STDOUT)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    hang_cap.wait_for(lambda: epochs_written(metrics) >= 1, victim, "a first finished epoch", log)
    for pid in [victim.pid, *_descendants(victim.pid)]:     # torchrun starts each worker in a session of
        with contextlib.suppress(ProcessLookupError):       # its own: kill every process, as a power cut
            os.kill(pid, signal.SIGKILL)
    victim.wait(timeout=hang_cap.left())
    done = epochs_written(metrics)
    assert 1 <= done < 3 and not (tmp_path / "killed" / "summary.json").exists()

    resumed = subprocess.run(command("killed"), env=env, capture_output=True, text=True, timeout=hang_cap.left())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming after epoch {done}" in resumed.stderr
    assert resumed.stderr.count("resuming after epoch") == 1            # rank 0 alone says so
    one, two = _weights(tmp_path / "whole"), _weights(tmp_path / "killed")
    for key in one:
        assert torch.allclose(one[key].float(), two[key].float(), atol=1e-6), key
    assert metrics_history(tmp_path / "killed") == metrics_history(tmp_path / "whole")
