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

from .errors import NeuroError
from .rdms import RDMs

DATA = Path(__file__).parent / "data"
RSA92_CITATION = ("Kriegeskorte, Mur, Ruff, Kiani, Bodurka, Esteky, Tanaka & Bandettini (2008). Matching categorical "
                  "object representations in inferior temporal cortex of man and monkey. Neuron 60(6).")
RSA92_SOURCE = ("neuro/data/rsa92: the authors' supplementary data as distributed in demos/92imageData of "
                "rsatoolbox (rsagroup/rsatoolbox, MIT licence)")
HAXBY_CITATION = ("Haxby, Gobbini, Furey, Ishai, Schouten & Pietrini (2001). Distributed and overlapping "
                  "representations of faces and objects in ventral temporal cortex. Science 293. CC BY-SA 3.0, "
                  "via the PyMVPA 2.6.5 example data.")
HAXBY_LABELS = ["rest", "face", "house", "shoe", "cat", "scissors", "scrambledpix", "bottle", "chair"]
RSA92_MEASURE = "correlation (1 - r)"


def _data_file(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.is_file():
        raise NeuroError(f"neuro's data file {path} is missing; reinstall the package with its data "
                         "(package-data neuro/data/**)")
    return path


def _loadmat(path: Path) -> dict[str, Any]:
    from scipy.io import loadmat
    return {k: v for k, v in loadmat(str(path), simplify_cells=True).items() if not k.startswith("__")}


def _fields(entry: Any) -> dict[str, Any]:
    """A MATLAB struct entry as a dict (``simplify_cells`` leaves ``mat_struct`` inside 2-D struct arrays)."""
    return entry if isinstance(entry, dict) else {f: getattr(entry, f) for f in entry._fieldnames}


def _entries(value: Any) -> list[dict[str, Any]]:
    items = value if isinstance(value, list) else list(np.asarray(value, dtype=object).ravel())
    return [_fields(e) for e in items]


# --------------------------------------------------------------------------------------------- rsa92
@dataclass
class RSA92:
    images: np.ndarray                   # 92 × 175 × 175 × 3 uint8
    conditions: np.ndarray               # "01_human_bodypart", ..., "92_artificial_inanimate"
    categories: dict[str, np.ndarray]    # per image: category, human, face, animal, natural + 12 label vectors
    hit_subjects: RDMs                   # 8 RDMs: subjects BE, KO, SN, TI × sessions 1, 2 ("BE_sess1", ...)
    hit: RDMs                            # group hIT RDM (figure 1; the mean of the 8 subject RDMs)
    mit: RDMs                            # monkey IT RDM (figure 1)
    model_rdms: RDMs                     # animacy, FaceBodyManmadeNatobj, monkeyIT, EVA, HMAX, V1, Silhouette, RADON
    descriptors: dict[str, Any] = field(default_factory=dict)


def _rsa92_stimuli(supp: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Images, condition names ("<index>_<category>") and per-image category fields."""
    stimuli = supp["stimuli_92objs"]
    images = np.stack([np.asarray(s["image"], dtype=np.uint8) for s in stimuli])
    category = np.array([str(s["category"]) for s in stimuli])
    conditions = np.array([f"{i + 1:02d}_{c.strip().replace(' ', '_')}" for i, c in enumerate(category)])
    categories: dict[str, np.ndarray] = {"category": category}
    for key in ("human", "face", "animal", "natural"):
        categories[key] = np.array([bool(s[key]) for s in stimuli])
    vectors = np.asarray(supp["categoryVectors"]).astype(bool)
    for j, label in enumerate(supp["categoryLabels"]):
        key = str(label)
        if key in categories and not np.array_equal(categories[key], vectors[:, j]):
            key = f"{key}_vector"                  # never overwrite a per-image field with a differing label
        categories[key] = vectors[:, j]
    return images, conditions, categories


def _subject_name(raw: str) -> str:
    """ "hIT | BE | Session: 1" → "BE_sess1"."""
    parts = [p.strip() for p in raw.split("|")]
    if len(parts) != 3:
        raise NeuroError(f"unexpected RDM name {raw!r} in 92_brainRDMs.mat; the data file is not the shipped one")
    return f"{parts[1]}_sess{parts[2].split(':')[-1].strip()}"


def _rsa92_subjects(conditions: np.ndarray, desc: dict[str, Any]) -> RDMs:
    entries = _entries(_loadmat(_data_file("rsa92", "92_brainRDMs.mat"))["RDMs"])
    names = [_subject_name(str(e["name"])) for e in entries]
    mats = np.stack([np.asarray(e["RDM"], dtype=np.float64) for e in entries])
    order = np.argsort(names, kind="stable")
    subjects = sorted({n.split("_")[0] for n in names})
    return RDMs.from_matrices(mats[order], conditions, RSA92_MEASURE, np.asarray(names)[order],
                              **desc, subjects=subjects, sessions=[1, 2],
                              file="92_brainRDMs.mat", roi="hIT (human inferior temporal cortex, fMRI)")


def _rsa92_models(conditions: np.ndarray, desc: dict[str, Any]) -> RDMs:
    entries = _entries(_loadmat(_data_file("rsa92", "92_modelRDMs.mat"))["Models"])
    mats = np.stack([np.asarray(e["RDM"], dtype=np.float64) for e in entries])
    return RDMs.from_matrices(mats, conditions, "model", [str(e["name"]) for e in entries], **desc,
                              file="92_modelRDMs.mat")


def load_rsa92() -> RSA92:
    """The 92-image set: images, category fields, subject and group brain RDMs, model RDMs.

    All RDMs share ``conditions`` (the image order of the files) and carry ``source`` and ``citation``
    in their descriptors. The brain RDMs are 1 - Pearson r between response patterns."""
    desc = {"source": RSA92_SOURCE, "citation": RSA92_CITATION}
    supp = _loadmat(_data_file("rsa92", "Kriegeskorte_Neuron2008_supplementalData.mat"))
    images, conditions, categories = _rsa92_stimuli(supp)
    figure = {str(e["name"]): np.asarray(e["RDM"], dtype=np.float64) for e in _entries(supp["RDMs_mIT_hIT_fig1"])}
    fig_desc = dict(desc, file="Kriegeskorte_Neuron2008_supplementalData.mat")
    hit = RDMs(figure["hITvisStim_316vx"], conditions, RSA92_MEASURE, ["hIT_group"],
               dict(fig_desc, roi="hIT, 316 visually responsive voxels, 4 subjects averaged"))
    mit = RDMs(figure["mIT_674neurons"], conditions, RSA92_MEASURE, ["mIT_group"],
               dict(fig_desc, roi="monkey IT, 674 neurons"))
    return RSA92(images, conditions, categories, _rsa92_subjects(conditions, desc), hit, mit,
                 _rsa92_models(conditions, desc), dict(desc))


# -------------------------------------------------------------------------------------------- haxby
@dataclass
class Haxby2001:
    bold_path: Path             # 4-D BOLD, (40, 20, 1, 1452)
    mask_path: Path             # ventral-temporal mask, 530 voxels
    labels: np.ndarray          # one label name per volume ("rest", "face", "house", ...)
    runs: np.ndarray            # run index per volume (0–11)
    tr: float = 2.5
    citation: str = HAXBY_CITATION

    @property
    def categories(self) -> list[str]:
        """The 8 object categories (rest excluded), in order of first appearance."""
        return [c for c in dict.fromkeys(self.labels.tolist()) if c != "rest"]


def load_haxby2001_sub1() -> Haxby2001:
    """Paths to the BOLD and mask images, with the label and run of each volume."""
    table = np.loadtxt(_data_file("haxby2001_sub1", "attributes.txt"), dtype=int, ndmin=2)
    labels = np.array([HAXBY_LABELS[k] for k in table[:, 0]])
    return Haxby2001(_data_file("haxby2001_sub1", "bold.nii.gz"), _data_file("haxby2001_sub1", "mask.nii.gz"),
                     labels, table[:, 1])
