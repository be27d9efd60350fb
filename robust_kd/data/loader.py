"""Batches straight from uint8 tensors on the model's device, with augmentation as tensor ops.

The whole split is copied to the device once. Each epoch draws its permutation, crop offsets and
flips in one go from a generator seeded by (seed, epoch), so an epoch's batches depend on nothing
but those two numbers: a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, NamedTuple

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    """Random crop after zero padding, and a random horizontal flip (each with probability ½)."""

    crop_padding: int = 4
    hflip: bool = True

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.hflip


def crop_and_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor | None,
                  padding: int) -> torch.Tensor:
    """Crop each padded image at its (row, col) offset and mirror the flagged ones, as one gather.

    ``images`` is B×C×H×W (any dtype), ``offsets`` B×2 integers in [0, 2·padding], ``flips`` B bools.
    The result is B×C×H×W laid out channels-last, which is what convolutions on GPU prefer.
    """
    batch, _, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding)) if padding > 0 else images
    rows = torch.arange(height, device=device)[None, :] + offsets[:, :1]
    cols = torch.arange(width, device=device)[None, :] + offsets[:, 1:]
    if flips is not None:
        cols = torch.where(flips[:, None], cols.flip(1), cols)
    index = torch.arange(batch, device=device)[:, None, None]
    # advanced indices around a slice put the batch/row/col dims first: B×H×W×C
    out = padded[index, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)


class Batch(NamedTuple):
    """One batch: images in [0, 1], labels, each sample's index in the split, and its augmentation
    view (which crop offset and flip it got, as one integer; None without augmentation)."""

    images: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor
    view: torch.Tensor | None


def epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + 17) % (2**63 - 1)


class BatchLoader:
    """Iterate (images in [0, 1] as float, labels) over uint8 data held on ``device``."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        device: torch.device | str = "cpu",
        shuffle: bool = False,
        augment: Augment | None = None,
        drop_last: bool = False,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.augment = augment if augment is not None and augment.active else None
        self.drop_last = drop_last
        self.seed = seed
        self.dtype = dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    @property
    def num_samples(self) -> int:
        return int(self.images.shape[0])

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    @property
    def num_views(self) -> int:
        """How many distinct augmented versions of one image the loader can produce."""
        if self.augment is None:
            return 1
        side = 2 * self.augment.crop_padding + 1
        return side * side * (2 if self.augment.hflip else 1)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) pairs of ``epoch``."""
        for batch in self.batches(epoch):
            yield batch.images, batch.labels

    def batches(self, epoch: int, shard: tuple[int, int] = (0, 1)) -> Iterator[Batch]:
        """The batches of ``epoch`` with sample indices and view ids. With ``shard`` = (rank, world
        size), this rank's share of each global batch: every world-th image from the rank-th on, with
        the augmentation it would get in one process. All shares have the same size (DDP averages the
        ranks' mean losses): a last, partial global batch drops its last ``size mod world`` images."""
        n = self.num_samples
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        offsets = flips = None
        if self.augment is not None:
            pad = self.augment.crop_padding
            offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator).to(self.device)
            if self.augment.hflip:
                flips = (torch.rand(n, generator=generator) < 0.5).to(self.device)
        order = order.to(self.device)
        views = None
        if offsets is not None:
            side = 2 * self.augment.crop_padding + 1  # type: ignore[union-attr]
            views = (offsets[:, 0] * side + offsets[:, 1]) * (2 if flips is not None else 1)
            if flips is not None:
                views = views + flips.long()
        stop = (n // self.batch_size) * self.batch_size if self.drop_last else n
        rank, world = shard
        for start in range(0, stop, self.batch_size):
            window: slice | torch.Tensor = slice(start, start + self.batch_size)
            if world > 1:
                size = min(self.batch_size, stop - start)
                size -= size % world
                if size == 0:
                    continue
                window = torch.arange(start, start + size, device=self.device)[rank::world]
            index = order[window]
            images = self.images[index]
            if offsets is not None:
                batch_flips = flips[window] if flips is not None else None
                images = crop_and_flip(images, offsets[window], batch_flips,
                                       self.augment.crop_padding)  # type: ignore[union-attr]
            images = images.to(self.dtype).div_(255.0).contiguous(memory_format=self.memory_format)
            yield Batch(images, self.labels[index], index, views[window] if views is not None else None)
