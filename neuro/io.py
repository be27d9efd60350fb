"""Reading brain data with nibabel: ROI masks, beta images, BOLD time series, pre-computed RDMs.

Images and masks must share shape and affine: nothing is resampled silently (resample beforehand,
e.g. with nilearn's ``resample_to_img``, if they differ). Every function takes paths or nibabel images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import NeuroError
from .patterns import Patterns
from .rdms import RDMs

AFFINE_TOLERANCE = 1e-3


def _nib():
    import nibabel
    return nibabel


def _name(img: Any, fallback: str) -> str:
    if isinstance(img, (str, Path)):
        name = Path(img).name
        for suffix in (".nii.gz", ".nii", ".mgz", ".img", ".hdr"):
            if name.endswith(suffix):
                return name[: -len(suffix)]
        return Path(img).stem
    return fallback


def load_image(img: Any) -> Any:
    """A nibabel image from a path or an image; one-line errors for missing or unreadable files."""
    nib = _nib()
    if isinstance(img, (str, Path)):
        path = Path(img)
        if not path.is_file():
            raise NeuroError(f"image file {path} does not exist")
        try:
            return nib.load(str(path))
        except Exception as exc:  # nibabel raises many types for foreign files
            raise NeuroError(f"cannot read {path} as a NIfTI/Analyze image ({type(exc).__name__}); "
                             "give a .nii or .nii.gz file") from None
    if hasattr(img, "get_fdata") and hasattr(img, "affine"):
        return img
    raise NeuroError(f"expected an image path or a nibabel image, got {type(img).__name__}")


def _check_same_space(img: Any, mask_shape: tuple, mask_affine: np.ndarray, what: str) -> None:
    shape = tuple(img.shape[:3])
    if shape != tuple(mask_shape):
        raise NeuroError(f"{what} has shape {shape} but the mask has {tuple(mask_shape)}; resample one to the "
                         "other first (no silent resampling)")
    if not np.allclose(img.affine, mask_affine, atol=AFFINE_TOLERANCE):
        raise NeuroError(f"{what} and the mask have different affines (voxel-to-world mappings); resample one to "
                         "the other first")


def load_mask(mask: Any | Sequence[Any], labels: Mapping[int, str] | Sequence[str] | None = None
              ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """ROIs as boolean 3-D arrays, with the affine.

    A binary image gives one ROI named after its file; a label image (integers) one ROI per non-zero
    label, named by ``labels`` (a mapping label → name, or names in label order) or ``label_<k>``;
    a list of binary images gives one ROI each.
    """
    if isinstance(mask, (list, tuple)):
        rois: dict[str, np.ndarray] = {}
        affine = None
        for i, m in enumerate(mask):
            got, aff = load_mask(m)
            if affine is not None and (not np.allclose(aff, affine, atol=AFFINE_TOLERANCE)
                                       or next(iter(got.values())).shape != next(iter(rois.values())).shape):
                raise NeuroError(f"mask {_name(m, str(i))} is not in the same space as the first mask")
            affine = aff
            for name, roi in got.items():
                rois[name if name not in rois else f"{name}_{i}"] = roi
        if not rois:
            raise NeuroError("no masks given")
        return rois, affine  # type: ignore[return-value]
    img = load_image(mask)
    data = np.asarray(img.get_fdata())
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise NeuroError(f"a mask must be a 3-D image, got shape {data.shape}")
    if not np.isfinite(data).all():
        raise NeuroError("the mask holds NaN values; a mask must be 0/1 or integer labels")
    values = np.unique(data)
    if not np.allclose(values, np.round(values)):
        raise NeuroError("the mask holds non-integer values; give a binary mask or an integer label image")
    values = np.round(values).astype(int)
    nonzero = [v for v in values if v != 0]
    if not nonzero:
        raise NeuroError(f"the mask {_name(mask, 'given')} is empty (no non-zero voxels)")
    base = _name(mask, "roi")
    if len(nonzero) == 1 and labels is None:
        return {base: data != 0}, np.asarray(img.affine)
    names: dict[int, str] = {}
    if labels is None:
        names = {v: f"label_{v}" for v in nonzero}
    elif isinstance(labels, Mapping):
        names = {int(k): str(v) for k, v in labels.items()}
    else:
        names = {v: str(n) for v, n in zip(sorted(nonzero), labels)}
    rois = {}
    for v in nonzero:
        if v not in names:
            continue
        roi = np.round(data).astype(int) == v
        rois[names[v]] = roi
    missing = [n for v, n in names.items() if v not in nonzero]
    if missing:
        raise NeuroError(f"ROIs {missing[:5]} have no voxels in the label image (empty ROI)")
    return rois, np.asarray(img.affine)


def _read_labels(conditions: Any, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Condition labels (and runs) for the volumes of a 4-D image: a list, or a text file with
    ``label`` or ``label run`` per line."""
    if isinstance(conditions, (str, Path)):
        path = Path(conditions)
        if not path.is_file():
            raise NeuroError(f"conditions file {path} does not exist")
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        if any(len(r) not in (1, 2) for r in rows) or len({len(r) for r in rows}) > 1:
            raise NeuroError(f"{path}: each line must hold 'label' or 'label run'")
        labels = np.array([r[0] for r in rows])
        runs = np.array([r[1] for r in rows]) if rows and len(rows[0]) == 2 else None
    else:
        labels, runs = np.array([str(c) for c in conditions]), None
    if len(labels) != n:
        raise NeuroError(f"{len(labels)} condition labels for {n} volumes; give one label per volume")
    return labels, runs


def _masked_rows(data4d: np.ndarray, roi: np.ndarray) -> np.ndarray:
    return data4d[roi].T                                       # volumes × voxels


def _apply_nan_policy(rows: np.ndarray, nan: str, what: str) -> tuple[np.ndarray, int]:
    bad = ~np.isfinite(rows).all(axis=0)
    if not bad.any():
        return rows, 0
    if nan == "error":
        raise NeuroError(f"{what}: {int(bad.sum())} voxels hold NaN/inf; pass nan='drop' to leave them out, "
                         "or fix the images")
    if nan != "drop":
        raise NeuroError(f"nan must be 'error' or 'drop', not {nan!r}")
    if bad.all():
        raise NeuroError(f"{what}: every voxel holds NaN/inf")
    return rows[:, ~bad], int(bad.sum())


def _stack_images(images: Any) -> tuple[np.ndarray, Any, list[str]]:
    """A 4-D array (x, y, z, volume) from one 4-D image or a list of 3-D images in the same space."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise NeuroError("no images given")
        loaded = [load_image(i) for i in images]
        first = loaded[0]
        vols = []
        for src, img in zip(images, loaded):
            if tuple(img.shape[:3]) != tuple(first.shape[:3]) or not np.allclose(img.affine, first.affine,
                                                                                 atol=AFFINE_TOLERANCE):
                raise NeuroError(f"{_name(src, 'an image')} is not in the same space as {_name(images[0], 'the first')}")
            d = np.asarray(img.get_fdata(dtype=np.float64))
            if d.ndim == 4 and d.shape[3] == 1:
                d = d[..., 0]
            if d.ndim != 3:
                raise NeuroError(f"{_name(src, 'an image')} is not 3-D (shape {d.shape}); give one 3-D beta per "
                                 "condition, or one 4-D image with conditions")
            vols.append(d)
        return np.stack(vols, axis=-1), first, [_name(i, str(k)) for k, i in enumerate(images)]
    img = load_image(images)
    d = np.asarray(img.get_fdata(dtype=np.float64))
    if d.ndim == 3:
        d = d[..., None]
    if d.ndim != 4:
        raise NeuroError(f"expected a 3-D or 4-D image, got shape {d.shape}")
    return d, img, [_name(images, "image")]


def load_betas(images: Any, mask: Any, conditions: Any = None, runs: Sequence | None = None, nan: str = "error",
               labels: Mapping[int, str] | Sequence[str] | None = None) -> dict[str, Patterns]:
    """Condition patterns per ROI: ``{roi: Patterns}`` (rows = images/volumes, columns = ROI voxels).

    ``images``: a list of 3-D beta images (conditions default to the file names) or one 4-D image with
    ``conditions`` (a list, or a text file with ``label`` or ``label run`` per line). ``runs``: a run
    per row, for cross-validated RDMs. ``nan``: "error" or "drop" (voxels NaN in any image).
    """
    data, ref, names = _stack_images(images)
    rois, affine = load_mask(mask, labels)
    first_roi = next(iter(rois.values()))
    _check_same_space(ref, first_roi.shape, affine, "the beta images")
    n = data.shape[3]
    if conditions is None:
        if not isinstance(images, (list, tuple)):
            raise NeuroError("a 4-D image needs conditions: one label per volume (a list or a text file)")
        cond = np.array(names)
        file_runs = None
    else:
        cond, file_runs = _read_labels(conditions, n)
    run_labels = np.asarray(runs) if runs is not None else file_runs
    if run_labels is not None and len(run_labels) != n:
        raise NeuroError(f"{len(run_labels)} run labels for {n} volumes")
    out = {}
    for roi_name, roi in rois.items():
        if not roi.any():
            raise NeuroError(f"ROI {roi_name!r} is empty")
        rows, dropped = _apply_nan_policy(_masked_rows(data, roi), nan, f"ROI {roi_name!r}")
        out[roi_name] = Patterns(rows, cond, run_labels, {
            "roi": roi_name, "n_voxels": int(rows.shape[1]), "dropped_voxels": dropped,
            "sources": names[:50]})
    return out


def load_bold(bold: Any, mask: Any, nan: str = "error",
              labels: Mapping[int, str] | Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Time × voxel arrays per ROI from a 4-D BOLD image."""
    data, ref, _ = _stack_images(bold)
    rois, affine = load_mask(mask, labels)
    _check_same_space(ref, next(iter(rois.values())).shape, affine, "the BOLD image")
    return {name: _apply_nan_policy(_masked_rows(data, roi), nan, f"ROI {name!r}")[0] for name, roi in rois.items()}


# ------------------------------------------------------------------------------------ RDM files
def _rdms_from_array(a: np.ndarray, conditions: Sequence | None, measure: str, names: Sequence | None,
                     source: str) -> RDMs:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        n = _n_from_pairs(len(a))
        return RDMs(a, conditions if conditions is not None else [str(i) for i in range(n)], measure, names,
                    {"source": source})
    if a.ndim == 2 and a.shape[0] != a.shape[1]:
        raise NeuroError(f"{source}: a {a.shape} array is not a square RDM")
    rdms = RDMs.from_matrices(a, conditions, measure, names, source=source)
    return rdms


def _n_from_pairs(n_pairs: int) -> int:
    from .rdms import n_conditions_from_pairs
    return n_conditions_from_pairs(n_pairs)


def load_rdm(path: str | Path, conditions: Sequence | None = None, measure: str = "unknown",
             key: str | None = None) -> RDMs:
    """RDMs from ``.npy`` (n×n, k×n×n or an upper-triangle vector), ``.csv`` (square, optional header of
    condition names), ``.mat`` (a numeric variable, or struct arrays with ``RDM``/``name`` fields) or an
    ``.npz`` written by ``RDMs.save``."""
    path = Path(path)
    if not path.is_file():
        raise NeuroError(f"RDM file {path} does not exist")
    suffix = path.suffix.lower()
    source = str(path)
    if suffix == ".npz":
        return RDMs.load(path)
    if suffix == ".npy":
        try:
            a = np.load(path, allow_pickle=False)
        except ValueError:
            raise NeuroError(f"{path} is not a plain numeric .npy array (object arrays are refused)") from None
        return _rdms_from_array(a, conditions, measure, None, source)
    if suffix == ".csv":
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        first = [c.strip() for c in lines[0].split(",")]
        try:
            [float(c) for c in first]
            header = None
        except ValueError:
            header, lines = first, lines[1:]
        try:
            a = np.array([[float(c) for c in ln.split(",")] for ln in lines])
        except ValueError:
            raise NeuroError(f"{path}: every row after the header must be numbers separated by commas") from None
        return _rdms_from_array(a, conditions if conditions is not None else header, measure, None, source)
    if suffix == ".mat":
        from scipy.io import loadmat
        try:
            content = loadmat(path, squeeze_me=True, struct_as_record=False)
        except Exception as exc:
            raise NeuroError(f"cannot read {path} as a MATLAB file ({type(exc).__name__})") from None
        variables = {k: v for k, v in content.items() if not k.startswith("__")}
        if key is not None:
            if key not in variables:
                raise NeuroError(f"{path} has no variable {key!r}; it has {sorted(variables)}")
            variables = {key: variables[key]}
        for name, value in variables.items():
            arr = np.asarray(value)
            if arr.dtype == object and arr.size and hasattr(arr.ravel()[0], "RDM"):
                entries = arr.ravel()
                mats = np.stack([np.asarray(e.RDM, dtype=np.float64) for e in entries])
                names = [str(getattr(e, "name", i)) for i, e in enumerate(entries)]
                return _rdms_from_array(mats, conditions, measure, names, source)
            if arr.dtype.kind in "fiu" and arr.ndim in (1, 2, 3):
                return _rdms_from_array(arr, conditions, measure, None, source)
        raise NeuroError(f"{path} holds no numeric RDM variable (found {sorted(variables)}); name one with key=")
    raise NeuroError(f"unknown RDM file type {suffix!r}; use .npy, .csv, .mat or .npz")
