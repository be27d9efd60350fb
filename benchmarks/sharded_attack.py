"""Sharded attack evaluation under torchrun against one process, in the same run.

One process (all the machine's threads) and `torchrun --nproc-per-node N` (one thread per process on
a CPU, one GPU per process on a GPU machine) evaluate the same model, points and suite; the script
checks that the per-point verdicts are equal and prints wall times, the speed-up and the scaling
efficiency (speed-up / N). On a CPU this shows the mechanics more than a gain: N processes share
the same cores.

    python benchmarks/sharded_attack.py [--model RUN] [--suite autoattack_quick] [--n 100] [--procs 2]

Without --model it trains a resnet8 for one epoch on the embedded data (about 15 s on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def robust_kd(*args: str, procs: int = 1) -> float:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs),
                "-m", "robust_kd.cli", "--"] if procs > 1 else [sys.executable, "-m", "robust_kd.cli"]
    start = time.perf_counter()
    subprocess.run([*launcher, *args], check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a run folder or checkpoint; default: train a resnet8 for one epoch")
    parser.add_argument("--suite", default="autoattack_quick")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            robust_kd("train", "--model", "resnet8", "--runs-dir", tmp, "--name", "bench", "epochs=1")
            model = str(Path(tmp) / "bench")
        attack = ["attack", "--model", model, "--suite", args.suite, "--n", str(args.n), "--device", args.device,
                  "--fresh", "--json"]
        single_s = robust_kd(*attack)
        files = sorted((Path(model) / "attacks").glob(f"{args.suite}-*n{args.n}-*.json"),
                       key=lambda p: p.stat().st_mtime)
        single = json.loads(files[-1].read_text())
        sharded_s = robust_kd(*attack, procs=args.procs)
        sharded = json.loads(files[-1].read_text())
    same = all(a["points"] == b["points"] for a, b in zip(single["evaluations"], sharded["evaluations"]))
    device = single["evaluations"][0]["device"]
    speedup = single_s / sharded_s
    print(f"sharded {args.suite}, {args.n} points, on {device}; torch {torch.__version__}; {time.strftime('%Y-%m-%d')}")
    print(f"{'processes':>10} {'wall s':>8}  verdicts")
    print(f"{1:>10} {single_s:>8.1f}  reference")
    print(f"{args.procs:>10} {sharded_s:>8.1f}  {'equal' if same else 'DIFFERENT'}")
    print(f"speed-up {speedup:.2f}x, scaling efficiency {100 * speedup / args.procs:.0f}% "
          f"(robust accuracy {single['evaluations'][0].get('robust_acc', single['evaluations'][0].get('autoattack_acc'))}%)")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
