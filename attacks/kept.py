"""The adversarial examples an evaluation keeps (``keep_examples``), saved beside its state file.

The state file holds verdicts, not images. So that a resumed evaluation's ``x_adv`` is as whole as
an uninterrupted one's, each finished batch's broken points and their examples go to one small file
in ``<state>.examples/`` (a :mod:`attacks.store` file) before the state counts the batch as done;
a rerun puts them back, from the batches its state counts, for the points it says are broken. A
file of another evaluation (its key differs) is ignored, a damaged one is said and ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .store import Store

STORE = Store("examples", version=1, encoding="torch")


class KeptExamples:
    def __init__(self, state_path: Path | None, key: dict[str, Any], kept: torch.Tensor | None) -> None:
        self.kept = kept
        self.folder = None if state_path is None or kept is None else state_path.with_suffix(".examples")
        # the ranks of a sharded evaluation share every field of the key but their shard
        self.key = {k: v for k, v in key.items() if k != "shard"}
        self.damaged: list[str] = []      # files found that could not be read (they are not used)

    def restore(self, family: list[Path], broken: list[bool], counted: set[str] | None = None) -> int:
        """Put back the examples saved by earlier runs (in this state's folder or those of the other
        state files of the evaluation, ``family``) of the points ``broken`` marks; returns how many.
        ``counted``: the parts (see :meth:`add`) of the batches the state counts; a file of a batch it
        never counted (a kill between the examples and the state's next save) is left out, so each
        point gets the example of the batch its verdict came from."""
        if self.folder is None:
            return 0
        restored = 0
        folders = dict.fromkeys([self.folder, *(p.with_suffix(".examples") for p in family)])
        for folder in folders:
            for path in sorted(folder.glob("*.pt")) if folder.is_dir() else []:
                if counted is not None and path.stem not in counted:
                    continue
                data = self._read(path)
                if data is None:
                    continue
                index = data["index"]
                wanted = torch.tensor([broken[i] for i in index.tolist()], dtype=torch.bool)
                self.kept[index[wanted].to(self.kept.device)] = data["x"][wanted].to(self.kept)
                restored += int(wanted.sum())
        return restored

    def _read(self, path: Path) -> dict[str, Any] | None:
        found = STORE.read(path, self.key, ("index", "x"))
        if found.problem == "version":
            self.damaged.append(f"'{path}' was written by another version of robust-kd: its examples are not used")
            return None
        if found.problem == "damaged" or (found.data is not None and not self._fits(found.data)):
            self.damaged.append(f"'{path}' is damaged ({found.error or 'ValueError'}): its examples are not used")
            return None
        return found.data     # None for another evaluation's (e.g. left beside a state deleted to start over)

    def _fits(self, data: dict[str, Any]) -> bool:
        """Whether the file holds examples of points of this evaluation."""
        index, x = data["index"], data["x"]
        assert self.kept is not None
        return isinstance(index, torch.Tensor) and isinstance(x, torch.Tensor) and index.dtype == torch.int64 and \
            index.dim() == 1 and tuple(x.shape) == (len(index), *self.kept.shape[1:]) and \
            (len(index) == 0 or 0 <= int(index.min()) <= int(index.max()) < len(self.kept))

    @staticmethod
    def part(step_number: int, first: int) -> str:
        """The name of one batch's file: the step's number in the suite and the batch's first point."""
        return f"{step_number:03d}-{first:08d}"

    def add(self, part: str, index: torch.Tensor, x_adv: torch.Tensor) -> None:
        """Save the examples ``x_adv`` of the points ``index`` broken in one batch (``part``: its
        :meth:`part` name)."""
        if self.folder is None or len(index) == 0:
            return
        STORE.write(self.folder / f"{part}.pt", self.key,
                    {"index": index.to("cpu", torch.int64), "x": x_adv.detach().to("cpu")})
