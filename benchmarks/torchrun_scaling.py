"""Training and attack evaluation under torchrun against one process, in the same run.

One process (all the machine's threads) and `torchrun --nproc-per-node N` (one thread per process on
a CPU, one GPU per process on a GPU machine) do the same job: train a model for one epoch (the same
global batches; the script checks that the weights agree) and evaluate it with a suite (the script
checks that the per-point verdicts are equal). It prints wall times, the speed-up and the scaling
efficiency (speed-up / N). On one CPU machine this shows the mechanics more than a gain: the N
processes share the cores the single process already used.

    python benchmarks/torchrun_scaling.py [--model resnet8] [--suite autoattack_quick] [--n 100] [--procs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def robust_kd(*args: str, procs: int = 1, threads: int | None = None) -> float:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs),
                "-m", "robust_kd.cli", "--"] if procs > 1 else [sys.executable, "-m", "robust_kd.cli"]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    start = time.perf_counter()
    subprocess.run([*launcher, *args], check=True, capture_output=True, text=True, env=env)
    return time.perf_counter() - start


def _weights(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet8", help="architecture trained for one epoch on the embedded data")
    parser.add_argument("--suite", default="autoattack_quick")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        train = ["train", "--model", args.model, "--device", args.device, "epochs=1"]
        train_1 = robust_kd(*train, "--runs-dir", f"{tmp}/one", "--name", "run")
        train_n = robust_kd(*train, "--runs-dir", f"{tmp}/many", "--name", "run", procs=args.procs)
        robust_kd(*train, "--runs-dir", f"{tmp}/one_thread", "--name", "run", threads=1)
        one, many = _weights(Path(tmp) / "one" / "run"), _weights(Path(tmp) / "many" / "run")
        one_thread = _weights(Path(tmp) / "one_thread" / "run")

        def gap(a: dict, b: dict) -> float:
            return max(float((a[k].float() - b[k].float()).abs().max()) for k in a
                       if a[k].is_floating_point() and "running" not in k)

        # training amplifies float rounding: the reference gap is one process with 1 thread vs 2 threads
        rows.append(("train 1 epoch", train_1, train_n, f"max weight difference {gap(one, many):.1e} "
                     f"(1 process, 1 vs all threads: {gap(one, one_thread):.1e})"))

        model = str(Path(tmp) / "one" / "run")
        attack = ["attack", "--model", model, "--suite", args.suite, "--n", str(args.n), "--device", args.device,
                  "--fresh", "--json"]
        attack_1 = robust_kd(*attack)
        result_file = next((Path(model) / "attacks").glob(f"{args.suite}-*n{args.n}-*.json"))
        single = json.loads(result_file.read_text())
        attack_n = robust_kd(*attack, procs=args.procs)
        sharded = json.loads(result_file.read_text())
        same = all(a["points"] == b["points"] for a, b in zip(single["evaluations"], sharded["evaluations"]))
        rows.append((f"{args.suite}, {args.n} points", attack_1, attack_n,
                     "verdicts equal" if same else "verdicts DIFFERENT"))
    device = single["evaluations"][0]["device"]
    print(f"torchrun --nproc-per-node {args.procs} vs one process; {args.model} on the embedded data; {device}; "
          f"torch {torch.__version__}; {time.strftime('%Y-%m-%d')}")
    print(f"{'job':<28} {'1 process s':>12} {f'{args.procs} processes s':>15} {'speed-up':>9} "
          f"{'efficiency':>11}  check")
    for job, t1, tn, check in rows:
        print(f"{job:<28} {t1:>12.1f} {tn:>15.1f} {t1 / tn:>8.2f}x {100 * t1 / tn / args.procs:>10.0f}%  {check}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
