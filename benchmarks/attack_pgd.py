"""PGD-10 and PGD-50 throughput: ``attacks.PGD`` vs ``torchattacks.PGD`` on the same model, points
and device, in the same run; prints images/s, the ratio and both robust accuracies.

Default model: the AutoAttack package's CIFAR-10 ResNet-18 (``autoattack_resnet18_cifar10``) on the
20 shipped CIFAR-10 test images, repeated with horizontal flips to ``--n`` points; or
``--checkpoint`` with the test split of its own data set. Both attacks start from the clean image
(``random_start=False``), so their iterates are the same until ours retires a broken point:
equal robust accuracy is required (±0.2 points) and checked.

Ours is timed three times: as ``attacks.PGD`` is when called directly; inside
``attacks.layout.channels_last`` (channels-last convolutions); and as ``attacks.evaluate`` runs it,
on a copy with the batch norms folded into the convolutions (``attacks.fold``), channels-last.

    python benchmarks/attack_pgd.py [--devices cpu,cuda] [--n 64] [--eps 8/255]
"""

from __future__ import annotations

import argparse
import platform
import time
from fractions import Fraction

import torch
import torchattacks

import attacks
import attacks.layout
from attacks.fold import PROBE_POINTS, fold_for_evaluation
from robust_kd.data import load_dataset
from robust_kd.models.pretrained import load_pretrained

from common import FLOAT32_WORDS, add_float32_option, float32_mode  # the script folder is on sys.path


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def points(n: int, checkpoint: str | None) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, str]:
    if checkpoint:
        from robust_kd.targets import resolve_model

        target = resolve_model(checkpoint)
        data = load_dataset(target.data or "embedded", target.data_root, **target.data_options)
        return target.model, data.test_images[:n].float() / 255, data.test_labels[:n], f"{target.arch} on {data.name}"
    data = load_dataset("cifar10-samples")
    x = data.test_images.float() / 255
    x = torch.cat([x, x.flip(-1)])
    y = torch.cat([data.test_labels, data.test_labels])
    reps = -(-n // len(y))
    return (load_pretrained("autoattack_resnet18_cifar10"), x.repeat(reps, 1, 1, 1)[:n], y.repeat(reps)[:n],
            "autoattack_resnet18_cifar10 on cifar10-samples (+flips)")


def timed(fn, device: torch.device, repeats: int) -> tuple[float, torch.Tensor]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        sync(device)
        started = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2], out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--eps", default="8/255")
    parser.add_argument("--steps", default="10,50")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--checkpoint")
    add_float32_option(parser)
    args = parser.parse_args()
    eps = float(Fraction(args.eps))
    model, x, y, what = points(args.n, args.checkpoint)
    print(f"PGD benchmark: {what}, {len(y)} points, Linf eps {args.eps}, step eps/4, no random start; "
          f"torch {torch.__version__}, "
          f"torchattacks {torchattacks.__version__ if hasattr(torchattacks, '__version__') else '3.5.x'}, "
          f"{platform.machine()}, {torch.get_num_threads()} CPU threads; "
          f"{FLOAT32_WORDS[args.float32]}")
    print("| device | steps | torchattacks img/s | ours img/s | ratio | ours channels-last img/s | ratio "
          "| ours folded + channels-last img/s | ratio "
          "| robust acc torchattacks | robust acc ours | ours channels-last | ours folded + channels-last |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with float32_mode(args.float32):
        for device_name in args.devices.split(","):
            device = torch.device(device_name)
            model = model.to(device).eval()
            xd, yd = x.to(device), y.to(device)
            (folded,) = fold_for_evaluation([model], xd[:PROBE_POINTS])
            folded_norms = sum(isinstance(m, attacks.fold.FoldedNorm) for m in folded.modules())
            print(f"{device_name}: {folded_norms} batch norms folded" if folded is not model else
                  f"{device_name}: NOT folded (the folded copy was rejected): the folded column times the model "
                  "as it is")
            for steps in (int(s) for s in args.steps.split(",")):
                reference = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=steps, random_start=False)
                ours = attacks.PGD(eps=eps, steps=steps, alpha=eps / 4, random_start=False)

                def run_reference():
                    return torch.cat([reference(xb, yb)
                                      for xb, yb in zip(xd.split(args.batch_size), yd.split(args.batch_size))])

                def run_ours(attacked=model):
                    return torch.cat([ours(attacked, xb, yb)
                                      for xb, yb in zip(xd.split(args.batch_size), yd.split(args.batch_size))])

                t_ref, adv_ref = timed(run_reference, device, args.repeats)
                t_ours, adv_ours = timed(run_ours, device, args.repeats)
                with attacks.layout.channels_last([model], device, True):
                    t_fast, adv_fast = timed(run_ours, device, args.repeats)
                with attacks.layout.channels_last([folded], device, True):
                    t_fold, adv_fold = timed(lambda: run_ours(folded), device, args.repeats)
                with torch.no_grad():
                    acc_ref, acc_ours, acc_fast, acc_fold = (100 * float((model(adv).argmax(1) == yd).float().mean())
                                                             for adv in (adv_ref, adv_ours, adv_fast, adv_fold))

                def shown(acc: float) -> str:
                    return f"{acc:.2f}" + ("" if abs(acc - acc_ref) <= 0.2 else " (DIFFERENT)")

                print(f"| {device_name} | {steps} | {len(y) / t_ref:.1f} | {len(y) / t_ours:.1f} | "
                      f"{t_ref / t_ours:.2f} | "
                      f"{len(y) / t_fast:.1f} | {t_ref / t_fast:.2f} | {len(y) / t_fold:.1f} | {t_ref / t_fold:.2f} | "
                      f"{acc_ref:.2f} | {shown(acc_ours)} | {shown(acc_fast)} | {shown(acc_fold)} |")
if __name__ == "__main__":
    main()
