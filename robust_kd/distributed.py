"""Running under torchrun: the process group, which rank this is, and who writes.

``robust-kd`` verbs started by ``torchrun --nproc-per-node N -m robust_kd.cli ...`` join the group
that torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT): NCCL
on CUDA, gloo on the CPU. Only rank 0 prints and writes results; the verbs split the work (attack:
points by index; train and distill: each global batch, see :mod:`robust_kd.train.parallel`).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from typing import Callable, Iterator

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


class EveryRanksError(UserError):
    """Rank 0's error, raised on every rank so that all stop with it (see :func:`say_once`)."""


def say_once(err: UserError, say: Callable[[], None]) -> None:
    """``say()`` the error ``err``. An :class:`EveryRanksError` is said by rank 0 alone, and the
    other ranks return only once it has been: torchrun stops the remaining workers as soon as one
    exits, which could cut rank 0 off before its message."""
    if not isinstance(err, EveryRanksError) or world_size() == 1:
        say()
        return
    if is_main():
        say()
    barrier()


def _text_from_main(text: str) -> str:
    """Rank 0's ``text`` on every rank (a length, then UTF-8 bytes: no pickling)."""
    data = torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8)
    length = torch.tensor([len(data)], dtype=torch.int64)
    dist.broadcast(length, src=0)
    if not is_main():
        data = torch.zeros(int(length), dtype=torch.uint8)
    if int(length):
        dist.broadcast(data, src=0)
    return bytes(data.tolist()).decode("utf-8")


@contextlib.contextmanager
def entered_on_main(manager: contextlib.AbstractContextManager) -> Iterator[None]:
    """Enter ``manager`` on rank 0 only (e.g. a lock that one process takes for all), and hold it for
    the block. If entering it raises a UserError, every rank raises it before the block: the other
    ranks would otherwise wait for rank 0 at the next collective and fail there with a traceback."""
    with contextlib.ExitStack() as stack:
        refused = ""
        if is_main():
            try:
                stack.enter_context(manager)
            except UserError as err:
                if world_size() == 1:
                    raise
                refused = str(err) or type(err).__name__
        if world_size() > 1:
            refused = _text_from_main(refused)
            if refused:
                raise EveryRanksError(refused)
        yield


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
