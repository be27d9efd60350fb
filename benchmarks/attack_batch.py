"""The batch size of ``attacks.evaluate`` on one device: the default suite (``fast``: PGD-20 then
FGSM) run with each batch size in turn on the same model and points, in the same run, against
``torchattacks.PGD`` (20 steps) at the largest and the smallest of those batch sizes.

Points are attacked in batches of at most ``batch_size``, and every random choice is tied to a
point's index, so the batch size must not change a single verdict: the script checks it (the last
column). What it may change is the speed, and how much an interrupted evaluation loses (the batch in
flight). On a CPU, large passes can be slower per image than small ones (caches); this measures by
how much, to choose the default per device (``attacks.evaluate.AUTO_BATCH_SIZE``).

    python benchmarks/attack_batch.py [--devices cpu,cuda] [--n 256] [--eps 1/255] [--batch-sizes 32,64,256]
"""

from __future__ import annotations

import argparse
import platform
from fractions import Fraction

import torch
import torchattacks

import attacks
from attack_pgd import points  # the script folder is on sys.path
from attack_square import timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--eps", default="1/255")
    parser.add_argument("--batch-sizes", default="32,64,256")
    parser.add_argument("--checkpoint")
    args = parser.parse_args()
    eps = float(Fraction(args.eps))
    sizes = sorted({int(b) for b in args.batch_sizes.split(",")})
    model, x, y, what = points(args.n, args.checkpoint)
    print(f"evaluate batch-size benchmark: {what}, {len(y)} points, suite fast (PGD-20, FGSM), Linf eps {args.eps}; "
          f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} CPU threads")
    print("| device | batch | torchattacks PGD-20 s | ours (evaluate, fast) s | ratio vs torchattacks at this batch "
          "| ours vs ours at the largest batch | robust ours | verdicts differing from the largest batch |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for device_name in args.devices.split(","):
        device = torch.device(device_name)
        model = model.to(device).eval()
        xd, yd = x.to(device), y.to(device)
        rows = {}
        for batch in reversed(sizes):      # the largest first: the others are compared with it
            reference = torchattacks.PGD(model, eps=eps, alpha=eps * 0.125, steps=20, random_start=True)
            t_ref = None
            if batch in (sizes[0], sizes[-1]):
                t_ref, _ = timed(lambda: torch.cat([reference(xb, yb) for xb, yb in
                                                    zip(xd.split(batch), yd.split(batch))]), device)
            t_ours, result = timed(lambda: attacks.evaluate(model, x, y, "fast", eps=eps, batch_size=batch,
                                                            sanity_checks=False), device)
            rows[batch] = (t_ref, t_ours, result.points["robust"])
        largest = rows[sizes[-1]]
        for batch in sizes:
            t_ref, t_ours, robust = rows[batch]
            differing = sum(a != b for a, b in zip(robust, largest[2]))
            reference_cells = ("-", "-") if t_ref is None else (f"{t_ref:.1f}", f"{t_ref / t_ours:.2f}")
            print(f"| {device_name} | {batch} | {reference_cells[0]} | {t_ours:.1f} | {reference_cells[1]} | "
                  f"{largest[1] / t_ours:.2f} | {sum(robust)} | {differing} |")


if __name__ == "__main__":
    main()
