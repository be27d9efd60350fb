"""`robust-kd` with training in float64: for tests that compare two computations of one training whose
sums run in different orders (one process against two under torchrun, other thread counts).

In float32 no tolerance decides such a comparison. Rounding moves an activation by ~1e-6; about one in
10⁶ batch-normalised activations lies that close to a ReLU's kink, and a few steps of a small network
compute millions, so some ReLU derivative flips between 0 and 1 on one side only, and that step's
gradient changes by a whole term, not by a rounding error (seen with OMP_NUM_THREADS=1: one flip among
the 131,072 activations of one layer at the second step changed the weight gradient of the layer before
it by 1%, and the weights after 6 steps by 1.3e-3). In float64 a flip needs an activation within
~1e-15 of the kink: about one chance in 10⁹ per such run.

Usage, as ``python -m robust_kd.cli``: ``python tests/float64_cli.py train ...`` (also as torchrun's script).
"""

from __future__ import annotations

import sys

import torch

torch.set_default_dtype(torch.float64)    # before the models are built: their parameters and buffers

from robust_kd.cli import main  # noqa: E402
from robust_kd.data.loader import BatchLoader  # noqa: E402

BatchLoader.__init__.__kwdefaults__["dtype"] = torch.float64    # the batches (the trainer leaves the default)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
