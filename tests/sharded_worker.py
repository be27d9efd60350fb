"""Started by tests/test_distributed.py under torchrun (gloo): evaluate the shared case, sharded over
the process group, and write rank 0's results and the images all ranks' models saw to the path given.
A second argument is a state path to resume from."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))

import attacks  # noqa: E402
from sharded_case import EPS, SUITE, make_case  # noqa: E402


def main() -> None:
    dist.init_process_group("gloo")
    model, x, y = make_case()
    state = sys.argv[2] if len(sys.argv) > 2 else None
    results = attacks.evaluate(model, x, y, SUITE, eps=[EPS / 2, EPS], seed=3, batch_size=8, sanity_checks=False,
                               state_path=state)
    images = torch.tensor(model.images)
    dist.all_reduce(images)
    if dist.get_rank() == 0:
        Path(sys.argv[1]).write_text(json.dumps({"results": [r.to_dict() for r in results], "images": int(images)}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
