"""AutoAttack standard: our ``autoattack`` suite vs pyautoattack (version 'standard') on the same
model, points and device, in the same run. Prints both wall times, the ratio, and the per-point
verdicts compared (how many points each leaves robust, and how many verdicts differ).

Default: the AutoAttack package's CIFAR-10 ResNet-18 on the 20 shipped CIFAR-10 test images
(+ their horizontal flips, repeated to ``--n``), at each eps of ``--eps``; or ``--checkpoint``.

    python benchmarks/attack_autoattack.py [--devices cpu,cuda] [--n 40] [--eps 8/255,1/255] [--norm Linf|L2|L1]
        [--unfolded] [--bf16]

``--norm L2 --eps 0.5`` and ``--norm L1 --eps 12`` compare the L2 and L1 versions (pyautoattack's
``norm`` argument; in L1 its APGD runs with ``use_largereps`` and ours with ``shrinking_eps``).

``--unfolded`` also times ours without folding the batch norms into the convolutions
(``fold_batchnorm=False``) and compares its verdicts with the folded run's. ``--bf16`` also times
ours with the attacks in bf16 (``precision="bf16"``, verdicts in fp32) and compares its verdicts
with the reference's and with our fp32 run's.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import time
from fractions import Fraction

import torch

import attacks
from attack_pgd import points, sync  # the script folder is on sys.path
from common import FLOAT32_WORDS, add_float32_option, float32_mode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--eps", default="8/255,1/255")
    parser.add_argument("--norm", default="Linf")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--checkpoint")
    parser.add_argument("--unfolded", action="store_true", help="also time ours with fold_batchnorm=False")
    parser.add_argument("--bf16", action="store_true", help="also time ours with precision='bf16'")
    add_float32_option(parser)
    args = parser.parse_args()
    from pyautoattack import AutoAttack

    logging.getLogger("auto-attack").setLevel(logging.WARNING)
    model, x, y, what = points(args.n, args.checkpoint)
    print(f"AutoAttack standard benchmark: {what}, {len(y)} points, {args.norm}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads; "
          f"{FLOAT32_WORDS[args.float32]}")
    extra = " ours unfolded s | fold gain | verdicts differing folded vs unfolded |" if args.unfolded else ""
    if args.bf16:
        extra += (" ours bf16 s | ratio vs pyautoattack | robust ours bf16 | verdicts differing bf16 vs pyautoattack |"
                  " bf16 vs ours fp32 |")
    print("| device | eps | pyautoattack s | ours s | ratio | robust pyautoattack | robust ours | verdicts differing |"
          + extra)
    print("|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if args.unfolded else "")
          + ("---:|---:|---:|---:|---:|" if args.bf16 else ""))
    with float32_mode(args.float32):
        for device_name in args.devices.split(","):
            device = torch.device(device_name)
            model = model.to(device).eval()
            xd, yd = x.to(device), y.to(device)
            if device.type != "cpu":   # CUDA context, cuDNN handles and kernels: paid once, not by the first tool timed
                with contextlib.redirect_stdout(io.StringIO()):
                    AutoAttack(model, norm=args.norm, eps=8 / 255, version="standard", seed=0,
                               device=device).run_standard_evaluation(xd[:4], yd[:4], batch_size=4)
                attacks.evaluate(model, x[:4], y[:4], "autoattack", eps=8 / 255, norm=args.norm, sanity_checks=False)
            for eps_text in args.eps.split(","):
                eps = float(Fraction(eps_text))
                reference = AutoAttack(model, norm=args.norm, eps=eps, version="standard", seed=0, device=device)
                sync(device)
                started = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    x_ref, _ = reference.run_standard_evaluation(xd, yd, batch_size=args.batch_size)
                sync(device)
                t_ref = time.perf_counter() - started
                with torch.no_grad():
                    robust_ref = (model(x_ref).argmax(1) == yd).cpu()

                def ours(fold: bool, precision: str = "fp32") -> tuple[float, torch.Tensor]:
                    started = time.perf_counter()
                    result = attacks.evaluate(model, x, y, "autoattack", eps=eps, norm=args.norm,
                                              batch_size=args.batch_size, sanity_checks=False, fold_batchnorm=fold,
                                              precision=precision)
                    sync(device)
                    return time.perf_counter() - started, torch.tensor(result.points["robust"])

                t_ours, robust_ours = ours(True)
                differing = int((robust_ours != robust_ref).sum())
                row = (f"| {device_name} | {eps_text} | {t_ref:.1f} | {t_ours:.1f} | {t_ref / t_ours:.2f} | "
                       f"{int(robust_ref.sum())} | {int(robust_ours.sum())} | {differing} |")
                if args.unfolded:
                    t_plain, robust_plain = ours(False)
                    row += f" {t_plain:.1f} | {t_plain / t_ours:.2f} | {int((robust_plain != robust_ours).sum())} |"
                if args.bf16:
                    t_bf16, robust_bf16 = ours(True, "bf16")
                    row += (f" {t_bf16:.1f} | {t_ref / t_bf16:.2f} | {int(robust_bf16.sum())} | "
                            f"{int((robust_bf16 != robust_ref).sum())} | {int((robust_bf16 != robust_ours).sum())} |")
                print(row)
if __name__ == "__main__":
    main()
