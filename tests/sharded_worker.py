"""Started by tests/test_distributed.py under torchrun (gloo): evaluate the shared case, sharded over
the process group, and write rank 0's result to the path given."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))

import attacks  # noqa: E402
from sharded_case import EPS, SUITE, make_case  # noqa: E402


def main() -> None:
    dist.init_process_group("gloo")
    model, x, y = make_case()
    results = attacks.evaluate(model, x, y, SUITE, eps=[EPS / 2, EPS], seed=3, batch_size=8, sanity_checks=False)
    if dist.get_rank() == 0:
        Path(sys.argv[1]).write_text(json.dumps([r.to_dict() for r in results]))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
