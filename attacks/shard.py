"""Evaluation points split across the processes of a ``torch.distributed`` group (e.g. under torchrun).

Point ``i`` belongs to rank ``i mod world``. Every random choice of an attack is tied to the point's
index (:mod:`attacks.rng`), so a point gets the same attack on whichever rank, in whichever batch,
and the gathered verdicts equal those of one process.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist

from .errors import AttackError

Shard = tuple[int, int]          # (rank, world size)


def resolve_shard(shard: Shard | str | None) -> Shard:
    """``"auto"``: the initialised default process group, if it has several processes; None: no sharding."""
    if shard is None:
        return (0, 1)
    if shard == "auto":
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return (dist.get_rank(), dist.get_world_size())
        return (0, 1)
    if isinstance(shard, str):
        raise AttackError(f"shard must be 'auto', None or (rank, world size), got '{shard}'")
    rank, world = (int(v) for v in shard)
    if world < 1 or not 0 <= rank < world:
        raise AttackError(f"shard (rank, world size) must satisfy 0 <= rank < world size, got {shard}")
    if world > 1 and not (dist.is_available() and dist.is_initialized() and dist.get_world_size() == world):
        raise AttackError(f"sharding over {world} processes needs an initialised process group of that size "
                          "(torch.distributed.init_process_group, as torchrun sets up)")
    return (rank, world)


def owns(index: int, shard: Shard) -> bool:
    return index % shard[1] == shard[0]


def gather(obj: Any, shard: Shard) -> list[Any]:
    """Every rank's ``obj``, in rank order (a list of one without sharding)."""
    if shard[1] == 1:
        return [obj]
    parts: list[Any] = [None] * shard[1]
    dist.all_gather_object(parts, obj)
    return parts
