"""The adversarial examples an evaluation keeps (``keep_examples``), saved beside its state file.

The state file holds verdicts, not images. So that a resumed evaluation's ``x_adv`` is as whole as
an uninterrupted one's, each finished batch's broken points and their examples go to one small file
in ``<state>.examples/`` (written atomically, read with ``weights_only=True``) before the state
counts the batch as done; a rerun puts them back, from the batches its state counts, for the
points it says are broken. A file of another evaluation (its key differs) is ignored, a damaged
one is said and ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .atomic import write_atomically


class KeptExamples:
    def __init__(self, state_path: Path | None, key: dict[str, Any], kept: torch.Tensor | None) -> None:
        self.kept = kept
        self.folder = None if state_path is None or kept is None else state_path.with_suffix(".examples")
        # the ranks of a sharded evaluation share every field of the key but their shard
        self.key = json.dumps({k: v for k, v in key.items() if k != "shard"}, sort_keys=True, default=str)
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
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            if data["key"] != self.key:
                return None     # another evaluation's (e.g. left beside a state file deleted to start over)
            index, x = data["index"], data["x"]
            if not (index.dtype == torch.int64 and index.dim() == 1 and
                    tuple(x.shape) == (len(index), *self.kept.shape[1:]) and
                    (len(index) == 0 or 0 <= int(index.min()) <= int(index.max()) < len(self.kept))):
                raise ValueError("not examples of these points")
        except Exception as err:    # a truncated or foreign file: torch.load raises several kinds
            self.damaged.append(f"'{path}' is damaged ({type(err).__name__}): its examples are not used")
            return None
        return data

    @staticmethod
    def part(step_number: int, first: int) -> str:
        """The name of one batch's file: the step's number in the suite and the batch's first point."""
        return f"{step_number:03d}-{first:08d}"

    def add(self, part: str, index: torch.Tensor, x_adv: torch.Tensor) -> None:
        """Save the examples ``x_adv`` of the points ``index`` broken in one batch (``part``: its
        :meth:`part` name)."""
        if self.folder is None or len(index) == 0:
            return
        data = {"key": self.key, "index": index.to("cpu", torch.int64), "x": x_adv.detach().to("cpu")}
        write_atomically(self.folder / f"{part}.pt", lambda f: torch.save(data, f))
