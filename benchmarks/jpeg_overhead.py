"""Cost of JPEG-DL's layer in training: step time of jpegdl_<arch> / step time of <arch>, one run.

Both models train with the same bare loop (SGD, cross-entropy) on the same synthetic images
already on the device; the only difference is the JPEG layer (soft quantizer) in front. Goal on
a CUDA GPU: ≤ 1.15× for jpegdl_resnet18 / resnet18 at batch 512. A grey row (1×28×28, the
Fashion-MNIST shape) shows the luma-only path.

    python benchmarks/jpeg_overhead.py                  # CPU, and CUDA when there is a GPU
    python benchmarks/jpeg_overhead.py --models resnet8x4 --steps 2 --json
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from common import bare_loop_images_per_s

from robust_kd.data import load_dataset
from robust_kd.device import device_name
from robust_kd.models import create_model


def images_per_s(arch: str, channels: int, size: int, batch: int, steps: int, device: torch.device) -> float:
    data = load_dataset("synthetic", channels=channels, size=size, classes=10, train=batch * steps, test=1)
    torch.manual_seed(0)
    model = create_model(arch, 10, in_channels=channels, image_size=size, mean=data.mean, std=data.std)
    return bare_loop_images_per_s(model, data.train_images.float() / 255, data.train_labels, batch, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 3 on CPU, 50 on GPU)")
    parser.add_argument("--repeats", type=int, default=2, help="alternate plain/jpegdl this often; medians")
    parser.add_argument("--devices", default=None, help="comma list; default: cpu, plus cuda when available")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for name in devices:
        device = torch.device(name)
        steps = args.steps or (50 if device.type == "cuda" else 3)
        for arch in args.models.split(","):
            for channels, size in ((3, 32), (1, 28)):
                plain, jpeg = [], []
                for _ in range(args.repeats):
                    plain.append(images_per_s(arch, channels, size, args.batch, steps, device))
                    jpeg.append(images_per_s(f"jpegdl_{arch}", channels, size, args.batch, steps, device))
                row = {
                    "device": device_name(device), "model": arch, "input": f"{channels}x{size}x{size}",
                    "batch": args.batch, "steps": steps,
                    "plain_images_per_s": round(statistics.median(plain), 1),
                    "jpegdl_images_per_s": round(statistics.median(jpeg), 1),
                }
                row["step_time_ratio"] = round(row["plain_images_per_s"] / row["jpegdl_images_per_s"], 3)
                rows.append(row)
                if not args.json:
                    print(f"{row['device']:<28} {arch:<10} {row['input']:<8} batch {args.batch}: "
                          f"plain {row['plain_images_per_s']:>8.1f} img/s  "
                          f"jpegdl {row['jpegdl_images_per_s']:>8.1f} img/s  "
                          f"step time jpegdl/plain {row['step_time_ratio']:.3f}", flush=True)
    if args.json:
        print(json.dumps({"torch": str(torch.__version__), "results": rows}, indent=2))


if __name__ == "__main__":
    main()
