"""Training under torchrun: DistributedDataParallel, batch statistics shared across processes, and
the epoch's sums reduced over ranks.

Each global batch (``batch_size`` images, the same ones a single process would draw) is split
across the ranks in equal shares (see :meth:`robust_kd.data.BatchLoader.batches`); DDP averages the
gradients, so a step is the single-process step for losses that are means over the batch. Batch
norm must then see the whole global batch too: on CUDA that is PyTorch's SyncBatchNorm; PyTorch's
has no CPU path, so on the CPU (gloo) :class:`GlobalBatchNorm2d` does the same with one
differentiable all-reduce of the per-channel sums. Losses that pool over the batch see it whole
through :func:`global_batch`.
"""

from __future__ import annotations

import inspect

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..distributed import world_size


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) that gradients flow through: every rank's output is the sum of the inputs, so
    the gradient of an input is the sum of the output gradients of all ranks."""

    @staticmethod
    def forward(ctx, values: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        total = values.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        total = grad.clone()
        dist.all_reduce(total)
        return total


def sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over the processes (PyTorch's own, torch.distributed.nn, is deprecated)."""
    return _SumOverRanks.apply(values)


class _GatherRows(torch.autograd.Function):
    """The global batch from every rank's share, in single-process order (rank r holds rows r, r+N, …
    of each global batch). Every rank then computes the same loss on the whole batch; its gradient
    reaches this rank's rows only, times N, which DDP's average over the N ranks undoes."""

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        ctx.rank, ctx.world = dist.get_rank(), dist.get_world_size()
        return _interleaved_gather(local)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        mine = grad.unflatten(0, (-1, ctx.world))[:, ctx.rank]
        return mine * ctx.world


def _interleaved_gather(local: torch.Tensor) -> torch.Tensor:
    """Every rank's rows, row k of rank r at position k·N + r (single-process order)."""
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local.contiguous())
    return torch.stack(parts, dim=1).flatten(0, 1)


def global_batch(local: torch.Tensor) -> torch.Tensor:
    """Rows of all ranks in single-process order; differentiable for this rank's rows (see
    :class:`_GatherRows`). Unchanged outside a process group of several ranks."""
    if world_size() == 1:
        return local
    return _GatherRows.apply(local) if local.requires_grad else _interleaved_gather(local)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch over all processes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        channels = x.shape[1]
        # two passes, as BatchNorm computes them (E[x²] − E[x]² loses the variance to cancellation), in
        # float64 so that summing over ranks in another order than one process costs no precision
        wide = x.double()
        count = torch.tensor([x.numel() / channels], dtype=torch.float64, device=x.device)
        sums = sum_over_ranks(torch.cat([wide.sum(dim=(0, 2, 3)), count]))
        total = sums[-1]
        mean = sums[:channels] / total
        centred = wide - mean.view(1, channels, 1, 1)
        var = sum_over_ranks((centred * centred).sum(dim=(0, 2, 3))) / total
        mean, var = mean.to(x.dtype), var.to(x.dtype)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * total / (total - 1).clamp_min(1)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean)
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased)
        shape = (1, channels, 1, 1)
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def _to_global_bn(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlobalBatchNorm2d):
        replacement = GlobalBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                        module.track_running_stats)
        replacement.load_state_dict(module.state_dict())
        replacement.train(module.training)
        return replacement
    for name, child in module.named_children():
        setattr(module, name, _to_global_bn(child))
    return module


def share_batch_statistics(model: nn.Module, device: torch.device) -> nn.Module:
    """Batch norm over the global batch: SyncBatchNorm on CUDA, GlobalBatchNorm2d elsewhere. The state
    dict keys stay those of plain BatchNorm2d, so checkpoints load into the plain model."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _to_global_bn(model)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The module the training step calls: DDP around ``model`` (parameters and buffers start from
    rank 0's). ``static_graph`` lets a distiller call the student twice in one step."""
    # buffers (batch-norm running statistics) are not re-broadcast at every forward: each rank updates
    # them from the same global statistics. Newer PyTorch names that flag forward_sync_buffers.
    no_buffer_sync = ({"forward_sync_buffers": False}
                      if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                      else {"broadcast_buffers": False})
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   static_graph=True, **no_buffer_sync)


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        values = values.clone()
        dist.all_reduce(values)
    return values
