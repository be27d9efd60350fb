"""Cost of distillation: step time of a KD step / step time of plain training, in one run.

resnet32x4 → resnet8x4 (the benchmark's flagship pair), both through robust-kd's Trainer on the
same synthetic 3×32×32 images:

- live: KD with the teacher run every step (inference mode, bf16 on CUDA), standard crop+flip,
  against plain training (the student alone, cross-entropy) with the same augmentation;
- cached: KD whose teacher outputs all come from the teacher cache (augmentation off, second
  epoch), against plain training without augmentation: the floor that caching can reach.

Goal on a CUDA GPU: ≤ 1.3× for the distillation a user runs.

    python benchmarks/distill_overhead.py                     # CPU, and CUDA when there is a GPU
    python benchmarks/distill_overhead.py --batches 64 --steps 4 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile

import torch

from robust_kd.config import build
from robust_kd.data import load_dataset
from robust_kd.device import device_name, resolve_device
from robust_kd.distill import create_distiller
from robust_kd.distill.objective import DistillationObjective
from robust_kd.distill.setup import DistillConfig
from robust_kd.models import create_model
from robust_kd.train import RunFolder, Trainer


def images_per_s(kind: str, teacher_arch: str, student_arch: str, batch: int, steps: int,
                 device: torch.device) -> float:
    data = load_dataset("synthetic", channels=3, size=32, classes=100, train=batch * steps, test=batch)
    augmented = kind in ("plain", "live")
    augment = {"crop_padding": 4, "hflip": True} if augmented else {"crop_padding": 0, "hflip": False}
    config = build(DistillConfig, {
        "model": student_arch, "epochs": 2, "batch_size": batch, "device": str(device), "recipe": "benchmark",
        "schedule": {"name": "cosine"}, "augment": augment,
        "distill": {"method": "kd", "teacher_cache": "always" if kind == "cached" else "never"},
    })
    torch.manual_seed(0)
    student = create_model(student_arch, 100, mean=data.mean, std=data.std)
    objective = None
    if kind in ("live", "cached"):
        teacher = create_model(teacher_arch, 100, mean=data.mean, std=data.std)
        objective = DistillationObjective(create_distiller("kd"), teacher, device=device, teacher_arch=teacher_arch,
                                          student_arch=student_arch, cache=config.distill.teacher_cache)
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(config, student, data, RunFolder(folder), objective=objective)
        trainer.train_epoch(0)  # warm-up; fills the cache for 'cached'
        return trainer.train_epoch(1)["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument("--batches", default="64,512")
    parser.add_argument("--steps", type=int, default=None, help="steps per epoch (default: 3 on CPU, 50 on GPU)")
    parser.add_argument("--repeats", type=int, default=1, help="repeat the three measurements; medians")
    parser.add_argument("--devices", default=None, help="comma list; default: cpu, plus cuda when available")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for name in devices:
        device = resolve_device(name)
        steps = args.steps or (50 if device.type == "cuda" else 3)
        for batch in (int(b) for b in args.batches.split(",")):
            speeds: dict[str, list[float]] = {"plain": [], "live": [], "plain_noaug": [], "cached": []}
            for _ in range(args.repeats):
                for kind in speeds:
                    speeds[kind].append(images_per_s(kind, args.teacher, args.student, batch, steps, device))
            median = {k: statistics.median(v) for k, v in speeds.items()}
            row = {
                "device": device_name(device), "pair": f"{args.teacher}->{args.student}", "batch": batch,
                "steps": steps,
                **{f"{k}_images_per_s": round(v, 1) for k, v in median.items()},
                "live_step_ratio": round(median["plain"] / median["live"], 3),
                "cached_step_ratio": round(median["plain_noaug"] / median["cached"], 3),
            }
            rows.append(row)
            if not args.json:
                print(f"{row['device']:<28} {row['pair']} batch {batch:>4}: "
                      f"plain {row['plain_images_per_s']:>8.1f} img/s  "
                      f"KD live {row['live_images_per_s']:>8.1f} ({row['live_step_ratio']:.2f}×)  "
                      f"| no augmentation: plain {row['plain_noaug_images_per_s']:>8.1f}  KD cached "
                      f"{row['cached_images_per_s']:>8.1f} ({row['cached_step_ratio']:.2f}×)", flush=True)
    if args.json:
        print(json.dumps({"torch": str(torch.__version__), "results": rows}, indent=2))


if __name__ == "__main__":
    main()
