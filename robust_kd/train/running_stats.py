"""The training epoch's running loss terms and accuracy."""

from __future__ import annotations

import torch

from . import parallel


class RunningStats:
    """Sums kept on the device; read (one sync) only when the progress display refreshes."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.terms: dict[str, torch.Tensor] = {}
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.seen = 0

    def add(self, logits: torch.Tensor, labels: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        n = labels.shape[0]
        for name, value in terms.items():
            weighted = value.detach().float() * n
            self.terms[name] = self.terms[name] + weighted if name in self.terms else weighted
        self.correct += (logits.detach().argmax(dim=1) == labels).sum()
        self.seen += n

    def reduce(self) -> None:
        """Sum over the processes of a torchrun group (every rank then reads the global numbers)."""
        names = sorted(self.terms)
        packed = torch.stack([self.terms[n].float() for n in names]
                             + [self.correct.float(), torch.tensor(float(self.seen), device=self.device)])
        packed = parallel.all_reduce_sum(packed)
        self.terms = {n: packed[i] for i, n in enumerate(names)}
        self.correct = packed[-2].round().long()
        self.seen = int(packed[-1].round())

    def read(self) -> tuple[dict[str, float], float]:
        terms = {k: float(v) / max(self.seen, 1) for k, v in self.terms.items()}
        return terms, int(self.correct) / max(self.seen, 1)
