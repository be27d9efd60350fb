"""``robust-kd attack --save-examples``: the adversarial examples of an evaluation, as data and as a figure.

Per variant and eps, beside the results file:

    <stem>.<variant>.<eps>.examples.npz   every broken point: index, clean image, adversarial example
                                          (float32 in [0, 1]), label, prediction on the example, attack
    <stem>.<variant>.<eps>.examples.png   the first eight: clean, adversarial, stretched perturbation
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import attacks

from .fileio import atomic_open
from .rsa_study import predict_labels

FIGURE_POINTS = 8


def save_examples(result: attacks.EvaluationResult, x: torch.Tensor, class_names: tuple[str, ...], model: nn.Module,
                  device: torch.device, folder: Path, name: str, title: str) -> dict[str, Any]:
    """Write the broken points' examples of ``result`` (evaluated with ``keep_examples``) as
    ``folder/name.examples.npz`` and ``.png``; returns what the results JSON records of them."""
    broken_by = result.points["broken_by"]
    x_adv = result.x_adv.detach().to("cpu").float()
    broken = [i for i, b in enumerate(broken_by) if b not in (None, "clean")]
    # a broken point whose example is its clean image was broken by an earlier run that kept no examples
    # (the clean image is classified correctly, so it is never an example itself)
    index = [i for i in broken if not torch.equal(x_adv[i], x[i].float())]
    rows = torch.tensor(index, dtype=torch.long)
    clean, adversarial = x[rows].float(), x_adv[rows]
    labels = torch.tensor(result.points["label"], dtype=torch.long)[rows]
    predictions = predict_labels(model, adversarial, device, 256)
    arrays = {"index": rows.numpy(), "clean": clean.numpy(), "adversarial": adversarial.numpy(),
              "label": labels.numpy(), "prediction": predictions.numpy(),
              "attack": np.array([broken_by[i] for i in index], dtype=str),
              "class_names": np.array(class_names, dtype=str), "eps": np.float64(result.eps),
              "norm": np.array(result.norm)}
    data_file = folder / f"{name}.examples.npz"
    with atomic_open(data_file) as f:
        np.savez_compressed(f, **arrays)
    record: dict[str, Any] = {"examples": {"file": data_file.name, "points": len(index),
                                           "missing": len(broken) - len(index), "figure": None}}
    figure_file = folder / f"{name}.examples.png"
    figure_file.unlink(missing_ok=True)    # an earlier run's, which would not match these examples
    if index:
        from .report.figures import adversarial_examples

        def named(c: int) -> str:
            return class_names[c] if 0 <= c < len(class_names) else str(c)

        shown = slice(0, FIGURE_POINTS)
        captions = [f"#{i}: {named(int(label))} → {named(int(p))}\n{broken_by[i]}"
                    for i, label, p in zip(index[shown], labels[shown].tolist(), predictions[shown].tolist())]
        png = adversarial_examples(clean[shown].numpy(), adversarial[shown].numpy(), captions, title)
        with atomic_open(figure_file) as f:
            f.write(png)
        record["examples"]["figure"] = figure_file.name
    return record
