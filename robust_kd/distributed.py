"""Running under torchrun: the process group, which rank this is, and who writes.

``robust-kd`` verbs started by ``torchrun --nproc-per-node N -m robust_kd.cli ...`` join the group
that torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT): NCCL
on CUDA, gloo on the CPU. Only rank 0 prints and writes results; the verbs split the work (attack:
points by index; train and distill: each global batch, see :mod:`robust_kd.train.parallel`).
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from .errors import UserError

COLLECTIVE_TIMEOUT_HOURS = 4


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env() -> tuple[int, int]:
    """Join torchrun's process group (once); returns (rank, world size); (0, 1) outside torchrun."""
    if not launched_by_torchrun():
        return (0, 1)
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank())
            backend = "cpu:gloo,cuda:nccl"       # CPU tensors (e.g. --device cpu) through gloo, CUDA ones NCCL
        else:
            backend = "gloo"
        try:
            # ranks wait for each other at the end of an evaluation, whose shards can take uneven times
            dist.init_process_group(backend, timeout=datetime.timedelta(hours=COLLECTIVE_TIMEOUT_HOURS))
        except (RuntimeError, ValueError) as err:
            raise UserError(f"could not join torchrun's process group ({backend}): {err}") from None
    return (dist.get_rank(), dist.get_world_size())


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
