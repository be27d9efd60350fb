"""Re-derive the embedded Fashion-MNIST subset shipped in robust_kd/data/embedded/.

Reads Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist) and keeps,
per class, the first N images of a seeded random permutation of each split. Running it again gives
byte-identical files.

    python scripts/make_embedded_subset.py [--source /usr/share/datasets/fashion-mnist]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from robust_kd.data.idx import DEBIAN_FASHION_MNIST, EMBEDDED_FOLDER, SPLIT_FILES, find_idx_file, read_idx, write_idx

PER_CLASS = {"train": 800, "test": 200}
SEED = 20261123


def stratified_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    order = rng.permutation(len(labels))
    picked = [order[labels[order] == c][:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(picked))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=DEBIAN_FASHION_MNIST)
    args = parser.parse_args()
    source = Path(args.source)
    out = Path(__file__).resolve().parents[1] / "robust_kd" / "data" / "embedded" / EMBEDDED_FOLDER
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    for split, (images_stem, labels_stem) in SPLIT_FILES.items():
        images = read_idx(find_idx_file(source, images_stem))
        labels = read_idx(find_idx_file(source, labels_stem))
        keep = stratified_indices(labels, PER_CLASS[split], rng)
        write_idx(out / f"{images_stem}.gz", images[keep])
        write_idx(out / f"{labels_stem}.gz", labels[keep])
        np.savetxt(out / f"{split}-source-indices.txt", keep, fmt="%d")
        print(f"{split}: {len(keep)} images, {np.bincount(labels[keep]).tolist()} per class")


if __name__ == "__main__":
    main()
