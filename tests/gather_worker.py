"""Started by tests/test_distributed.py under torchrun (gloo, 2 processes): for several distillation
methods, the gradient that DDP would produce from each rank's share of a batch, with the loss on the
gathered global batch, against the single-process gradient of the whole batch. Writes, per method,
the largest difference with the gather and without it (a mean of the per-rank losses)."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from robust_kd.distill import StepContext, create_distiller
from robust_kd.train.parallel import global_batch

METHODS = ["kd", "cskd", "cswt", "dtd", "r2kd", "wttm", "dkd"]
OPTIONS = {"r2kd": {"augment": "none"}}


def gradient(method: str, rows: slice, gather: bool) -> torch.Tensor:
    torch.manual_seed(0)
    features = torch.randn(16, 6, dtype=torch.float64)
    weight = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    teacher = 2.0 * torch.randn(16, 5, dtype=torch.float64)
    labels = torch.randint(0, 5, (16,))
    student = features[rows] @ weight
    teacher, labels = teacher[rows], labels[rows]
    if gather:
        student, teacher, labels = global_batch(student), global_batch(teacher), global_batch(labels)
    distiller = create_distiller(method, OPTIONS.get(method, {}))
    context = StepContext(images=torch.zeros(len(labels), 3, 8, 8), labels=labels, progress=50.0,
                          student=lambda x: None, teacher=lambda x: None, generator=torch.Generator().manual_seed(0))
    loss = sum(distiller.loss(student, distiller.adjust_teacher(teacher, labels), labels, context).values())
    (grad,) = torch.autograd.grad(loss, weight)
    if dist.is_initialized():
        dist.all_reduce(grad)            # DDP: the mean of the ranks' gradients
        grad /= dist.get_world_size()
    return grad


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    share = slice(rank, None, world)
    found = {}
    for method in METHODS:
        gathered, naive = gradient(method, share, True), gradient(method, share, False)
        dist.barrier()
        found[method] = [gathered, naive]
    dist.destroy_process_group()
    if rank == 0:
        report = {}
        for method, (gathered, naive) in found.items():
            single = gradient(method, slice(None), False)
            report[method] = {"gathered": float((gathered - single).abs().max()),
                              "naive": float((naive - single).abs().max()), "size": float(single.abs().max())}
        with open(sys.argv[1], "w") as out:
            json.dump(report, out)


if __name__ == "__main__":
    main()
