"""Training throughput of robust-kd's trainer against a bare forward+backward loop, in one run.

The reference is the least any training loop can do: the same model, optimizer and loss on
batches that already sit on the device as float in the model's memory format. Both sides get one
warm-up pass of the same length before the measured one.
Ours is `Trainer.train_epoch`: batches drawn from uint8 data on the device, random crop and flip
as tensor ops, the LR schedule, loss bookkeeping and divergence checks. The ratio ours/reference
is the share of the reference speed the whole pipeline keeps (goal: ≥ 0.90, i.e. the pipeline
costs ≤ 10%).

    python benchmarks/train_throughput.py                 # CPU, and CUDA when there is a GPU
    python benchmarks/train_throughput.py --models resnet8x4 --batches 128 --steps 5 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile

import torch
from common import bare_loop_images_per_s

from robust_kd.config import build
from robust_kd.data import ImageDataset, load_dataset
from robust_kd.device import device_name
from robust_kd.models import create_model
from robust_kd.train import RunFolder, Trainer, TrainConfig


def benchmark_data(batch: int, steps: int) -> ImageDataset:
    return load_dataset("synthetic", channels=3, size=32, classes=10, train=batch * steps, test=batch)


def reference_images_per_s(arch: str, data: ImageDataset, batch: int, device: torch.device) -> float:
    """The same images as the trainer sees, already float in [0, 1] on the device.

    (CPU convolution speed depends on the pixel values: uniform noise trains ~15% slower than
    these images, so the reference must use the very same data.)
    """
    torch.manual_seed(0)
    model = create_model(arch, 10, mean=data.mean, std=data.std)
    return bare_loop_images_per_s(model, data.train_images.float() / 255, data.train_labels, batch, device)


def trainer_images_per_s(arch: str, data: ImageDataset, batch: int, device: torch.device) -> float:
    config = build(TrainConfig, {
        "model": arch, "epochs": 2, "batch_size": batch, "device": str(device), "recipe": "benchmark",
        "optimizer": {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True},
        "schedule": {"name": "cosine"}, "augment": {"crop_padding": 4, "hflip": True},
    })
    torch.manual_seed(0)
    model = create_model(arch, 10, mean=data.mean, std=data.std)
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(config, model, data, RunFolder(folder))
        first = trainer.train_epoch(0)  # warm-up epoch
        del first
        record = trainer.train_epoch(1)
    return record["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet8x4,resnet18")
    parser.add_argument("--batches", default="128,512")
    parser.add_argument("--steps", type=int, default=None,
                        help="measured steps per point (default: 4 on CPU, 50 on GPU)")
    parser.add_argument("--repeats", type=int, default=2, help="alternate ours/reference this often; report medians")
    parser.add_argument("--devices", default=None, help="comma list; default: cpu, plus cuda when available")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for name in devices:
        device = torch.device(name)
        steps = args.steps or (50 if device.type == "cuda" else 4)
        for arch in args.models.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                data = benchmark_data(batch, steps)
                ours, reference = [], []
                for _ in range(args.repeats):
                    reference.append(reference_images_per_s(arch, data, batch, device))
                    ours.append(trainer_images_per_s(arch, data, batch, device))
                row = {
                    "device": device_name(device), "model": arch, "batch": batch, "steps": steps,
                    "reference_images_per_s": round(statistics.median(reference), 1),
                    "trainer_images_per_s": round(statistics.median(ours), 1),
                }
                row["ratio"] = round(row["trainer_images_per_s"] / row["reference_images_per_s"], 3)
                rows.append(row)
                if not args.json:
                    print(f"{row['device']:<32} {arch:<10} batch {batch:>4}: "
                          f"reference {row['reference_images_per_s']:>9.1f} img/s  "
                          f"trainer {row['trainer_images_per_s']:>9.1f} img/s  ratio {row['ratio']:.3f}", flush=True)
    if args.json:
        print(json.dumps({"torch": str(torch.__version__), "results": rows}, indent=2))


if __name__ == "__main__":
    main()
