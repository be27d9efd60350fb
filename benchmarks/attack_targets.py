"""APGD-T (9 targets, 100 steps, AutoAttack's settings): ``attacks.APGDT`` with the targets one
after another and side by side, against pyautoattack's ``APGDAttack_targeted``, on the same model,
points and device, in the same run.

APGD-T runs after APGD-CE in AutoAttack, on the points APGD-CE leaves robust, so the points here
are the first ``--points`` of those (of the first ``--n`` test points). Side by side needs all 9
targets of all points in one pass of ``rows_per_pass`` rows (36 on CPU: at most 4 points; 4096 on
CUDA: at most 455). Both of ours must leave the same points robust; the reference, whose random
starts differ, may differ on a few: all three robust counts are printed.

    python benchmarks/attack_targets.py [--points 4] [--n 40] [--eps 1/255] [--devices cpu,cuda] [--checkpoint CKPT]
"""

from __future__ import annotations

import argparse
from fractions import Fraction

import torch

import attacks
from attacks.layout import channels_last
from attacks.targets import AUTO_ROWS_PER_PASS
from attack_pgd import points  # the script folder is on sys.path
from common import FLOAT32_WORDS, add_float32_option, float32_mode
from attack_square import robust_points, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--points", type=int, default=0, help="0: as many as fit side by side on the device")
    parser.add_argument("--eps", default="1/255")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--checkpoint")
    add_float32_option(parser)
    args = parser.parse_args()
    from pyautoattack.autopgd_base import APGDAttack_targeted

    eps = float(Fraction(args.eps))
    model, x, y, what = points(args.n, args.checkpoint)
    print(f"APGD-T benchmark: {what}, APGD-CE survivors of the first {len(y)} points, Linf eps {args.eps}, "
          f"9 targets × {args.steps} steps; torch {torch.__version__}, {torch.get_num_threads()} CPU threads; "
          f"{FLOAT32_WORDS[args.float32]}")
    print("| device | points | pyautoattack s | ours, in order s | ours, side by side s | ratio vs pyautoattack | "
          "side-by-side gain | robust pyautoattack | robust in order | robust side by side |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with float32_mode(args.float32):
        for device_name in args.devices.split(","):
            device = torch.device(device_name)
            model = model.to(device).eval()
            xr, yr = robust_points(model, x, y, eps, device)
            take = args.points or AUTO_ROWS_PER_PASS.get(device.type, 1) // 9
            xr, yr = xr[:take], yr[:take]
            if len(yr) == 0:
                print(f"| {device_name} | 0 | APGD-CE left no point robust at {args.eps}: try a smaller --eps |")
                continue
            reference = APGDAttack_targeted(model, n_iter=args.steps, norm="Linf", n_restarts=1, eps=eps, seed=0,
                                            n_target_classes=9, device=device)
            t_ref, x_ref = timed(lambda: reference.perturb(xr, yr), device)
            with channels_last([model], device):  # what attacks.evaluate does for the length of an evaluation
                in_order = attacks.APGDT(eps=eps, steps=args.steps, rows_per_pass=1)
                t_order, x_order = timed(lambda: in_order(model, xr, yr), device)
                together = attacks.APGDT(eps=eps, steps=args.steps, rows_per_pass=9 * len(yr))
                t_together, x_together = timed(lambda: together(model, xr, yr), device)
            with torch.no_grad():
                robust = [int((model(adv).argmax(1) == yr).sum()) for adv in (x_ref, x_order, x_together)]
            print(f"| {device_name} | {len(yr)} | {t_ref:.1f} | {t_order:.1f} | {t_together:.1f} | "
                  f"{t_ref / t_together:.2f} | {t_order / t_together:.2f} | {robust[0]} | {robust[1]} | {robust[2]} |")
if __name__ == "__main__":
    main()
