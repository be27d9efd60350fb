"""The two real data sets shipped with ``neuro`` (see ``neuro/data/README.md`` for provenance and licences).

- ``load_rsa92()``: the 92 object images of Kriegeskorte et al. (2008) with the human-IT RDMs of 4
  subjects × 2 sessions, the group hIT and monkey-IT RDMs of the paper's figure 1, and the model RDMs
  distributed with them.
- ``load_haxby2001_sub1()``: BOLD time series of one slice of Haxby et al. (2001), subject 1: 12 runs,
  8 object categories and rest, TR 2.5 s, with a ventral-temporal mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .rdms import RDMs

DATA = Path(__file__).parent / "data"
RSA92_CITATION = ("Kriegeskorte, Mur, Ruff, Kiani, Bodurka, Esteky, Tanaka & Bandettini (2008). Matching categorical "
                  "object representations in inferior temporal cortex of man and monkey. Neuron 60(6).")
HAXBY_CITATION = ("Haxby, Gobbini, Furey, Ishai, Schouten & Pietrini (2001). Distributed and overlapping "
                  "representations of faces and objects in ventral temporal cortex. Science 293. CC BY-SA 3.0, "
                  "via the PyMVPA 2.6.5 example data.")
HAXBY_LABELS = ["rest", "face", "house", "shoe", "cat", "scissors", "scrambledpix", "bottle", "chair"]


@dataclass
class RSA92:
    images: np.ndarray                   # 92 × 175 × 175 × 3 uint8
    conditions: np.ndarray               # "01_human-bodypart", ...
    categories: dict[str, np.ndarray]    # per image: category, human, face, animal, natural, + the 12 label vectors
    hit_subjects: RDMs                   # 8 RDMs: subjects BE, KO, SN, TI × sessions 1, 2 ("BE_sess1", ...)
    hit: RDMs                            # group hIT RDM (figure 1)
    mit: RDMs                            # monkey IT RDM (figure 1)
    model_rdms: RDMs                     # animacy, FaceBodyManmadeNatobj, monkeyIT, EVA, HMAX, V1, Silhouette, RADON
    descriptors: dict[str, Any] = field(default_factory=dict)


def _load_mat(path: Path, **kwargs: Any) -> dict:
    from scipy.io import loadmat
    return loadmat(path, **kwargs)


def load_rsa92() -> RSA92:
    folder = DATA / "rsa92"
    supp = _load_mat(folder / "Kriegeskorte_Neuron2008_supplementalData.mat", simplify_cells=True)
    stimuli = supp["stimuli_92objs"]
    images = np.stack([np.asarray(s["image"], dtype=np.uint8) for s in stimuli])
    category = np.array([str(s["category"]) for s in stimuli])
    conditions = np.array([f"{i + 1:02d}_{c.replace(' ', '-')}" for i, c in enumerate(category)])
    categories: dict[str, np.ndarray] = {"category": category}
    for key in ("human", "face", "animal", "natural"):
        categories[key] = np.array([bool(s[key]) for s in stimuli])
    vectors = np.asarray(supp["categoryVectors"]).astype(bool)
    for j, label in enumerate(supp["categoryLabels"]):
        categories[str(label)] = vectors[:, j]
    desc = {"source": "rsa92 (neuro/data/rsa92)", "citation": RSA92_CITATION}

    figure = {str(r["name"]): np.asarray(r["RDM"], dtype=np.float64) for r in supp["RDMs_mIT_hIT_fig1"]}
    hit = RDMs(figure["hITvisStim_316vx"], conditions, "correlation (1 - r)", ["hIT_group"], dict(desc))
    mit = RDMs(figure["mIT_674neurons"], conditions, "correlation (1 - r)", ["mIT_group"], dict(desc))

    brain = _load_mat(folder / "92_brainRDMs.mat", squeeze_me=True, struct_as_record=False)["RDMs"]
    mats, names = [], []
    for entry in np.asarray(brain).ravel(order="C"):
        parts = [p.strip() for p in str(entry.name).split("|")]          # "hIT | BE | Session: 1"
        names.append(f"{parts[1]}_sess{parts[2].split(':')[-1].strip()}")
        mats.append(np.asarray(entry.RDM, dtype=np.float64))
    order = np.argsort(names, kind="stable")
    hit_subjects = RDMs.from_matrices(np.stack(mats)[order], conditions, "correlation (1 - r)",
                                      np.asarray(names)[order], **desc)

    models = _load_mat(folder / "92_modelRDMs.mat", squeeze_me=True, struct_as_record=False)["Models"]
    model_mats = [np.asarray(m.RDM, dtype=np.float64) for m in np.asarray(models).ravel()]
    model_names = [str(m.name) for m in np.asarray(models).ravel()]
    model_rdms = RDMs.from_matrices(np.stack(model_mats), conditions, "model", model_names,
                                    check_symmetric=False, **desc)
    return RSA92(images, conditions, categories, hit_subjects, hit, mit, model_rdms, desc)


@dataclass
class Haxby2001:
    bold_path: Path
    mask_path: Path
    labels: np.ndarray          # one label name per volume
    runs: np.ndarray            # run index per volume (0–11)
    tr: float = 2.5
    citation: str = HAXBY_CITATION


def load_haxby2001_sub1() -> Haxby2001:
    folder = DATA / "haxby2001_sub1"
    table = np.loadtxt(folder / "attributes.txt", dtype=int)
    labels = np.array([HAXBY_LABELS[k] for k in table[:, 0]])
    return Haxby2001(folder / "bold.nii.gz", folder / "mask.nii.gz", labels, table[:, 1])
