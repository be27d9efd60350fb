"""How close an attack's passes come to what the device can compute: GFLOP/s of one forward and
input-gradient pass (what every white-box attack step costs), as ``attacks.evaluate`` runs it
(batch norms folded, channels-last, parameters frozen), against a large matrix product on the same
device, in fp32 and in bf16 autocast, in the same run.

The ratio "pass / matmul" says how much a faster implementation of the same passes could still
gain: near 1, the passes are compute-bound at the device's peak, and only fewer passes or cheaper
arithmetic (bf16) can make an evaluation faster.

    python benchmarks/attack_roofline.py [--model resnet8x4] [--batches 1,9,36,135] [--devices cpu,cuda]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from attacks.fold import folded_copy
from robust_kd.models import create_model

from common import FLOAT32_WORDS, add_float32_option, float32_mode, sync  # the script folder is on sys.path


def best_seconds(fn, device: torch.device, repeats: int, rounds: int = 3) -> float:
    fn()
    fn()
    sync(device)
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(repeats):
            fn()
        sync(device)
        best = min(best, (time.perf_counter() - started) / repeats)
    return best


def matmul_gflops(device: torch.device, dtype: torch.dtype, size: int) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    return 2 * size ** 3 / best_seconds(lambda: a @ b, device, 5) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="resnet8x4")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--size", type=int, default=28, help="image side in pixels (28: the embedded data)")
    parser.add_argument("--batches", default="1,9,36,135")
    add_float32_option(parser)
    args = parser.parse_args()
    print(f"Roofline of an attack pass: {args.model}, {args.channels}×{args.size}×{args.size}; torch "
          f"{torch.__version__}, {torch.get_num_threads()} CPU threads; "
          f"{FLOAT32_WORDS[args.float32]}")
    print("| device | precision | batch | MFLOP/image | pass GFLOP/s | matmul GFLOP/s | pass / matmul | ms/image |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    with float32_mode(args.float32):
        for device_name in args.devices.split(","):
            device = torch.device(device_name)
            torch.manual_seed(0)
            model = create_model(args.model, 10, in_channels=args.channels, image_size=args.size).eval()
            model = folded_copy(model).to(device).to(memory_format=torch.channels_last)
            for parameter in model.parameters():
                parameter.requires_grad_(False)
            matmul_size = 2048 if device.type == "cpu" else 8192
            for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
                peak = matmul_gflops(device, dtype, matmul_size)
                for batch in (int(b) for b in args.batches.split(",")):
                    x = torch.rand(batch, args.channels, args.size, args.size, device=device)
                    x = x.contiguous(memory_format=torch.channels_last)
                    y = torch.randint(0, 10, (batch,), device=device)

                    def attack_pass() -> torch.Tensor:
                        points = x.detach().requires_grad_(True)
                        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                            logits = model(points)
                        loss = F.cross_entropy(logits.float(), y, reduction="sum")
                        (grad,) = torch.autograd.grad(loss, points)
                        return grad

                    counted = x.detach().requires_grad_(True)
                    with FlopCounterMode(display=False) as counter:   # the same pass, counted (weights frozen)
                        F.cross_entropy(model(counted), y, reduction="sum").backward()
                    flops = counter.get_total_flops()
                    seconds = best_seconds(attack_pass, device, max(3, 200 // batch))
                    rate = flops / seconds / 1e9
                    print(f"| {device_name} | {precision} | {batch} | {flops / batch / 1e6:.0f} | {rate:.0f} | "
                          f"{peak:.0f} | {rate / peak:.2f} | {1e3 * seconds / batch:.2f} |", flush=True)
if __name__ == "__main__":
    main()
