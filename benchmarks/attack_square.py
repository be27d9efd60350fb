"""Square (Linf, 5000 queries, AutoAttack's settings): ``attacks.Square`` vs pyautoattack's
``SquareAttack`` on the same model, points and device, in the same run.

Square runs last in AutoAttack, on the points every white-box attack left robust, so the points
here are the ones our APGD-CE leaves robust (of the first ``--n`` test points). Ours runs twice:
with one proposal per point per forward pass, as the reference does, and with its default
speculative proposals (several per point in one pass while few points are left). The two search
the same way and should give the same adversarial images: the script prints on how many points
they differ (only a float32 near-tie that rounds differently in another batch size can do that;
the tests check equality in float64). The ratio of their times is what speculation buys here.
The reference draws other random windows, so its verdicts may
differ on a few points: both robust counts are printed.

    python benchmarks/attack_square.py --checkpoint CKPT [--n 100] [--eps 8/255] [--devices cpu,cuda]
"""

from __future__ import annotations

import argparse
import time
from fractions import Fraction

import torch

import attacks
from attacks.layout import channels_last
from attack_pgd import points, sync  # the script folder is on sys.path
from common import FLOAT32_WORDS, add_float32_option, float32_mode


def robust_points(model, x, y, eps: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The points APGD-CE leaves robust (clean-correct ones only)."""
    result = attacks.evaluate(model, x, y, {"name": "apgd-ce", "attacks": [{"attack": "apgd", "loss": "ce"}]},
                              eps=eps, sanity_checks=False)
    keep = torch.tensor(result.points["robust"])
    return x[keep].to(device), y[keep].to(device)


def timed(fn, device: torch.device):
    sync(device)
    started = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - started, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--eps", default="2/255")
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--checkpoint")
    add_float32_option(parser)
    args = parser.parse_args()
    from pyautoattack.square import SquareAttack

    eps = float(Fraction(args.eps))
    model, x, y, what = points(args.n, args.checkpoint)
    print(f"Square benchmark: {what}, first {len(y)} points, Linf eps {args.eps}, {args.queries} queries; "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; "
          f"{FLOAT32_WORDS[args.float32]}")
    print("| device | points | pyautoattack s | ours, 1 per pass s | ours s | ratio vs pyautoattack | "
          "speculation gain | robust pyautoattack | robust ours | images differing |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with float32_mode(args.float32):
        for device_name in args.devices.split(","):
            device = torch.device(device_name)
            model = model.to(device).eval()
            xr, yr = robust_points(model, x, y, eps, device)
            if len(yr) == 0:
                print(f"| {device_name} | 0 | APGD-CE left no point robust at {args.eps}: try a smaller --eps |")
                continue
            reference = SquareAttack(model, norm="Linf", n_queries=args.queries, eps=eps, p_init=0.8, n_restarts=1,
                                     seed=0, verbose=False, device=device, resc_schedule=False)
            t_ref, x_ref = timed(lambda: reference.perturb(xr, yr), device)
            with channels_last([model], device):  # what attacks.evaluate does for the length of an evaluation
                one = attacks.Square(eps=eps, queries=args.queries, forward_batch=1)
                t_one, x_one = timed(lambda: one(model, xr, yr), device)
                ours = attacks.Square(eps=eps, queries=args.queries)
                t_ours, x_ours = timed(lambda: ours(model, xr, yr), device)
            with torch.no_grad():
                robust_ref = int((model(x_ref).argmax(1) == yr).sum())
                robust_ours = int((model(x_ours).argmax(1) == yr).sum())
            differing = int((x_one != x_ours).flatten(1).any(dim=1).sum())
            print(f"| {device_name} | {len(yr)} | {t_ref:.1f} | {t_one:.1f} | {t_ours:.1f} | {t_ref / t_ours:.2f} | "
                  f"{t_one / t_ours:.2f} | {robust_ref} | {robust_ours} | {differing} |")
if __name__ == "__main__":
    main()
