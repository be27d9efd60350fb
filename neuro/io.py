"""Reading brain data with nibabel: ROI masks, beta images, BOLD time series, pre-computed RDMs.

Images and masks must share shape and affine (within ``AFFINE_TOLERANCE``): nothing is resampled
silently, because resampling a mask or betas changes which voxels enter an RDM. Resample beforehand
(e.g. nilearn's ``resample_to_img``) if they differ. Every function takes paths or nibabel images.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import NeuroError
from .patterns import Patterns
from .rdms import RDMs, n_conditions_from_pairs

AFFINE_TOLERANCE = 1e-3
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mgz", ".img", ".hdr")
NAN_POLICIES = ("error", "drop")

Labels = Mapping[int, str] | Sequence[str] | None


# ------------------------------------------------------------------------------------------ images
def _is_path(x: Any) -> bool:
    return isinstance(x, (str, Path))


def image_name(img: Any, fallback: str) -> str:
    """A readable name for an image: its file name without the NIfTI suffix, else ``fallback``.

    Images loaded by nibabel remember their file, so they are named like the path they came from."""
    if not _is_path(img):
        filename = img.get_filename() if hasattr(img, "get_filename") else None
        if not filename:
            return fallback
        img = filename
    name = Path(img).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(img).stem


def load_image(img: Any) -> Any:
    """A nibabel image from a path or an image; one-line errors for missing or unreadable files."""
    import nibabel
    if _is_path(img):
        path = Path(img)
        if not path.is_file():
            raise NeuroError(f"image file {path} does not exist")
        try:
            return nibabel.load(str(path))
        except Exception as exc:  # nibabel raises many exception types for foreign files
            raise NeuroError(f"cannot read {path} as a NIfTI/Analyze/MGH image ({type(exc).__name__}); "
                             "give a .nii or .nii.gz file") from None
    if hasattr(img, "get_fdata") and hasattr(img, "affine") and hasattr(img, "shape"):
        return img
    raise NeuroError(f"expected an image path or a nibabel image, got {type(img).__name__}")


def _fmt_affine(affine: np.ndarray) -> str:
    rows = (",".join(f"{v:.4g}" for v in row) for row in np.asarray(affine)[:3])
    return "[" + "; ".join(rows) + "]"


def check_same_space(shape: tuple, affine: np.ndarray, what: str,
                     ref_shape: tuple, ref_affine: np.ndarray, ref_what: str) -> None:
    """Raise unless two images share their 3-D grid: same shape and affines equal within 1e-3."""
    shape, ref_shape = tuple(int(s) for s in shape[:3]), tuple(int(s) for s in ref_shape[:3])
    if shape != ref_shape:
        raise NeuroError(f"{what} has shape {shape} but {ref_what} has shape {ref_shape}; resample one to the "
                         "other first (neuro never resamples silently)")
    gap = float(np.max(np.abs(np.asarray(affine, float) - np.asarray(ref_affine, float))))
    if gap > AFFINE_TOLERANCE:
        raise NeuroError(f"{what} and {ref_what} have different affines (max difference {gap:.3g} > "
                         f"{AFFINE_TOLERANCE:g}): {_fmt_affine(affine)} vs {_fmt_affine(ref_affine)}; resample one "
                         "to the other first (neuro never resamples silently)")


def _squeeze_single_volume(data: np.ndarray) -> np.ndarray:
    """A 4-D image with one volume is a 3-D image (SPM writes betas that way)."""
    return data[..., 0] if data.ndim == 4 and data.shape[3] == 1 else data


# -------------------------------------------------------------------------------------------- masks
def _integer_values(data: np.ndarray, what: str) -> np.ndarray:
    if not np.isfinite(data).all():
        raise NeuroError(f"the mask {what} holds NaN/inf values; a mask must hold 0/1 or integer labels")
    if not np.array_equal(data, np.round(data)):
        raise NeuroError(f"the mask {what} holds non-integer values; give a binary mask or an integer label "
                         "image (threshold a probabilistic map first)")
    return np.round(data).astype(np.int64)


def _label_names(present: list[int], labels: Labels, what: str) -> dict[int, str]:
    """Label value → ROI name. A mapping may select a subset of the labels; a list names them all."""
    if labels is None:
        return {v: f"label_{v}" for v in present}
    if isinstance(labels, Mapping):
        names = {int(k): str(v) for k, v in labels.items()}
        absent = [f"{k} ({n})" for k, n in names.items() if k not in present]
        if absent:
            raise NeuroError(f"ROIs {absent[:5]} have no voxels in the label image {what} (empty ROI); it holds "
                             f"labels {present[:10]}")
        return names
    labels = [str(n) for n in labels]
    if len(labels) != len(present):
        raise NeuroError(f"{len(labels)} names for the {len(present)} labels {present[:10]} of {what}; give one "
                         "name per non-zero label (in increasing order) or a dict label → name")
    return dict(zip(present, labels))


def _rois_from_image(mask: Any, labels: Labels) -> tuple[dict[str, np.ndarray], np.ndarray]:
    img = load_image(mask)
    what = image_name(mask, "given")
    data = _squeeze_single_volume(np.asarray(img.get_fdata()))
    if data.ndim != 3:
        raise NeuroError(f"a mask must be a 3-D image, but {what} has shape {data.shape}; pick one volume")
    values = _integer_values(data, what)
    present = [int(v) for v in np.unique(values) if v != 0]
    if not present:
        raise NeuroError(f"the mask {what} is empty (no non-zero voxels); check the file or the threshold")
    if len(present) == 1 and labels is None:
        return {image_name(mask, "roi"): values != 0}, np.asarray(img.affine, dtype=np.float64)
    names = _label_names(present, labels, what)
    return {name: values == v for v, name in names.items()}, np.asarray(img.affine, dtype=np.float64)


def _unique_name(name: str, taken: Mapping[str, Any]) -> str:
    k, out = 2, name
    while out in taken:
        out, k = f"{name}_{k}", k + 1
    return out


def _rois_from_list(masks: Sequence[Any], labels: Labels) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Several binary masks in one space: one ROI each, named by ``labels`` (a list) or the file names."""
    if not masks:
        raise NeuroError("no masks given; pass a mask image or a list of mask images")
    if labels is not None and (isinstance(labels, Mapping) or len(labels) != len(masks)):
        raise NeuroError(f"with a list of {len(masks)} masks, labels must be a list of {len(masks)} ROI names")
    rois: dict[str, np.ndarray] = {}
    ref = None
    for i, m in enumerate(masks):
        got, affine = _rois_from_image(m, None)
        if len(got) != 1:
            raise NeuroError(f"mask {image_name(m, str(i))} is a label image; pass it alone (with labels=) "
                             "rather than in a list of binary masks")
        roi = next(iter(got.values()))
        if ref is None:
            ref = (roi.shape, affine, image_name(m, "the first mask"))
        else:
            check_same_space(roi.shape, affine, f"mask {image_name(m, str(i))}", *ref)
        name = str(labels[i]) if labels is not None else image_name(m, "roi")
        rois[_unique_name(name, rois)] = roi
    return rois, ref[1]  # type: ignore[index]


def load_mask(mask: Any, labels: Labels = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """ROIs as boolean 3-D arrays, with the mask's affine: ``({name: roi}, affine)``.

    - a binary image (one non-zero value): one ROI named after the file (``"roi"`` for an in-memory image);
    - a label image (several non-zero integers): one ROI per label, named by ``labels`` (a dict
      label → name, which may select a subset, or a list of names in increasing label order) or
      ``label_<k>``;
    - a list of binary images in one space: one ROI each, named after the files (or ``labels``, a list).
    """
    if isinstance(mask, (list, tuple)):
        return _rois_from_list(mask, labels)
    return _rois_from_image(mask, labels)


# ---------------------------------------------------------------------------------- beta/BOLD data
def _stack_images(images: Any) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(x, y, z, volume) data, the affine and the source names, from one 3-/4-D image or a list of
    3-D images that share one space."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise NeuroError("no images given; pass a list of 3-D images or one 4-D image")
        vols, names, ref = [], [], None
        for i, src in enumerate(images):
            img = load_image(src)
            name = image_name(src, f"image {i}")
            data = _squeeze_single_volume(np.asarray(img.get_fdata(dtype=np.float64)))
            if data.ndim != 3:
                raise NeuroError(f"{name} is not 3-D (shape {data.shape}); give one 3-D image per condition, "
                                 "or one 4-D image with conditions")
            if ref is None:
                ref = (data.shape, np.asarray(img.affine, dtype=np.float64), name)
            else:
                check_same_space(data.shape, img.affine, name, *ref)
            vols.append(data)
            names.append(name)
        return np.stack(vols, axis=-1), ref[1], names  # type: ignore[index]
    img = load_image(images)
    data = np.asarray(img.get_fdata(dtype=np.float64))
    if data.ndim == 3:
        data = data[..., None]
    if data.ndim != 4:
        raise NeuroError(f"expected a 3-D or 4-D image, got shape {data.shape}")
    return data, np.asarray(img.affine, dtype=np.float64), [image_name(images, "image")]


def _read_table(path: Path, what: str) -> list[list[str]]:
    if not path.is_file():
        raise NeuroError(f"{what} file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise NeuroError(f"{what} file {path} is not readable text ({type(exc).__name__}); give one entry per "
                         "line") from None
    # entries apart by spaces, tabs or commas (a CSV's "face,1" is a label and its run, not one label)
    rows = [[e for e in re.split(r"[,\s]+", line.split("#")[0]) if e] for line in text.splitlines()]
    return [r for r in rows if r]


def read_conditions(conditions: Any, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Condition labels (and runs, when given) for ``n`` volumes: a list, or a text file with
    ``label`` or ``label run`` per line (``#`` starts a comment)."""
    runs = None
    if _is_path(conditions):
        path = Path(conditions)
        rows = _read_table(path, "conditions")
        widths = {len(r) for r in rows}
        if not widths or not widths <= {1, 2} or len(widths) > 1:
            raise NeuroError(f"{path}: every line must hold 'label' or 'label run' (the same for all lines)")
        labels = np.array([r[0] for r in rows])
        if widths == {2}:
            runs = np.array([r[1] for r in rows])
    else:
        labels = np.array([str(c) for c in np.atleast_1d(np.asarray(conditions, dtype=object))])
    if len(labels) != n:
        header = _is_path(conditions) and len(labels) == n + 1 and \
            str(labels[0]).lower() in ("condition", "conditions", "label", "labels", "trial_type", "stimulus")
        hint = f" (is the first line, '{labels[0]}', a header? remove it)" if header else ""
        raise NeuroError(f"{len(labels)} condition labels for {n} volumes{hint}; give one label per volume")
    return labels, runs


def _read_runs(runs: Any, n: int) -> np.ndarray:
    if _is_path(runs):
        rows = _read_table(Path(runs), "runs")
        if any(len(r) != 1 for r in rows):
            raise NeuroError(f"{runs}: give one run label per line")
        runs = [r[0] for r in rows]
    runs = np.asarray(runs)
    if runs.shape != (n,):
        raise NeuroError(f"{runs.size} run labels for {n} volumes; give one run per volume")
    return runs


def _check_nan_policy(nan: str) -> None:
    if nan not in NAN_POLICIES:
        raise NeuroError(f"nan must be 'error' or 'drop', not {nan!r}")


def _apply_nan_policy(rows: np.ndarray, nan: str, what: str) -> tuple[np.ndarray, int]:
    """Rows (volumes × voxels) without the voxels that are NaN/inf in any volume, and their count."""
    bad = ~np.isfinite(rows).all(axis=0)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return rows, 0
    if nan == "error":
        raise NeuroError(f"{what}: {n_bad} voxels hold NaN/inf; pass nan='drop' to leave them out, or fix the "
                         "images")
    if bad.all():
        raise NeuroError(f"{what}: every voxel holds NaN/inf in some image; nothing is left")
    return rows[:, ~bad], n_bad


def _extract(images: Any, mask: Any, labels: Labels, what: str
             ) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
    """The stacked image data, the ROIs, and the source names, after checking that they share one space."""
    data, affine, names = _stack_images(images)
    rois, mask_affine = load_mask(mask, labels)
    mask_name = "the mask" if isinstance(mask, (list, tuple)) else f"the mask {image_name(mask, '')}".strip()
    check_same_space(data.shape, affine, what, next(iter(rois.values())).shape, mask_affine, mask_name)
    return data, rois, names


def load_betas(images: Any, mask: Any, conditions: Any = None, runs: Any = None, nan: str = "error",
               labels: Labels = None) -> dict[str, Patterns]:
    """Condition patterns per ROI: ``{roi: Patterns}`` (rows = images/volumes, columns = ROI voxels).

    ``images``: a list of 3-D beta images (conditions default to the file names) or one 4-D image with
    ``conditions`` (a list, or a text file with ``label`` or ``label run`` per line). ``runs``: a run per
    row (a list or a file with one per line; it overrides runs from the conditions file), needed for
    cross-validated RDMs. ``nan``: "error", or "drop" to leave out voxels that are NaN in any image
    (counted in ``descriptors["dropped_voxels"]``). ``labels``: ROI names, see ``load_mask``.
    """
    _check_nan_policy(nan)
    data, rois, sources = _extract(images, mask, labels, "the beta images")
    n = data.shape[3]
    if conditions is None:
        if n != len(sources):
            raise NeuroError(f"a 4-D image of {n} volumes needs conditions: one label per volume (a list or a "
                             "text file)")
        cond, file_runs = np.array(sources), None
    else:
        cond, file_runs = read_conditions(conditions, n)
    run_labels = _read_runs(runs, n) if runs is not None else file_runs
    out = {}
    for roi_name, roi in rois.items():
        rows, dropped = _apply_nan_policy(data[roi].T, nan, f"ROI {roi_name!r}")
        out[roi_name] = Patterns(rows, cond, run_labels, {
            "roi": roi_name, "n_voxels": int(rows.shape[1]), "dropped_voxels": dropped,
            "mask": image_name(mask, "mask") if not isinstance(mask, (list, tuple)) else roi_name,
            "sources": sources})
    return out


def load_bold(bold: Any, mask: Any, nan: str = "error", labels: Labels = None) -> dict[str, np.ndarray]:
    """Time × voxel arrays per ROI from a 4-D BOLD image (or a list of 3-D volumes), same checks as
    ``load_betas``."""
    _check_nan_policy(nan)
    data, rois, _ = _extract(bold, mask, labels, "the BOLD image")
    return {name: _apply_nan_policy(data[roi].T, nan, f"ROI {name!r}")[0] for name, roi in rois.items()}


# ---------------------------------------------------------------------------------------- RDM files
def _as_stack(a: np.ndarray, source: str, matlab: bool) -> np.ndarray:
    """k × n × n matrices from an n×n matrix or a 3-D stack (k×n×n, or MATLAB's n×n×k)."""
    if a.ndim == 2:
        if a.shape[0] != a.shape[1]:
            raise NeuroError(f"{source}: a {a.shape[0]}×{a.shape[1]} array is not a square RDM; give an n×n "
                             "matrix, a k×n×n stack or an upper-triangle vector")
        return a[None]
    square_last, square_first = a.shape[1] == a.shape[2], a.shape[0] == a.shape[1]
    if square_first and (matlab or not square_last):
        return np.moveaxis(a, 2, 0)
    if square_last:
        return a
    raise NeuroError(f"{source}: a {a.shape} array is not a stack of square RDMs (k×n×n or n×n×k)")


def _check_diagonal(stack: np.ndarray, source: str) -> None:
    """A dissimilarity of a condition to itself is 0; a diagonal of ones means a similarity matrix."""
    diag = np.diagonal(stack, axis1=1, axis2=2)
    diag = diag[np.isfinite(diag)]
    scale = max(1.0, float(np.nanmax(np.abs(stack)))) if np.isfinite(stack).any() else 1.0
    if diag.size and np.abs(diag).max() > 1e-6 * scale:
        raise NeuroError(f"{source}: the diagonal is not zero (max {np.abs(diag).max():.3g}); an RDM holds "
                         "dissimilarities (convert a similarity matrix S with 1 - S)")


def _rdms_from_array(a: Any, conditions: Sequence | None, measure: str, names: Sequence | None,
                     source: str, matlab: bool = False) -> RDMs:
    try:
        a = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):
        raise NeuroError(f"{source}: the RDM is not numeric") from None
    if a.size == 0:
        raise NeuroError(f"{source}: the RDM is empty")
    if a.ndim == 1:
        try:
            n = n_conditions_from_pairs(len(a))
        except NeuroError:
            raise NeuroError(f"{source}: a vector of {len(a)} values is not the upper triangle of a square "
                             "RDM (n(n-1)/2 values)") from None
        conds = [str(i) for i in range(n)] if conditions is None else conditions
        return RDMs(a, conds, measure, names, {"source": source})
    if a.ndim not in (2, 3):
        raise NeuroError(f"{source}: a {a.ndim}-D array is not an RDM; give n×n, k×n×n or a vector")
    stack = _as_stack(a, source, matlab)
    if conditions is not None and len(conditions) != stack.shape[1]:
        raise NeuroError(f"{len(conditions)} condition names for an RDM over {stack.shape[1]} conditions in "
                         f"{source}")
    try:
        rdms = RDMs.from_matrices(stack, conditions, measure, names, check_symmetric=True, source=source)
    except NeuroError as err:
        raise NeuroError(f"{source}: {err}") from None
    _check_diagonal(stack, source)
    return rdms


def _parse_csv(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """A square matrix from a CSV with an optional header row of names (and optional row names)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = [[c.strip() for c in r] for r in csv.reader(f) if any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise NeuroError(f"{path} is not a text CSV file ({exc}); save the RDM as comma-separated numbers") from None
    if not rows:
        raise NeuroError(f"{path} is empty")

    def numeric(cell: str) -> bool:
        try:
            float(cell)
            return True
        except ValueError:
            return False

    header = None
    if not all(numeric(c) for c in rows[0]):
        header, rows = rows[0], rows[1:]
    if rows and all(r and not numeric(r[0]) for r in rows):      # a first column of row names
        row_names = [r[0] for r in rows]
        rows = [r[1:] for r in rows]
        header = header[1:] if header is not None and len(header) == len(rows[0]) + 1 else (header or row_names)
    elif header is not None and rows and len(header) == len(rows[0]) + 1 and header[0] == "":
        header = header[1:]
    try:
        matrix = np.array([[float(c) for c in r] for r in rows], dtype=np.float64)
    except ValueError:
        raise NeuroError(f"{path}: every row after the header must hold numbers separated by commas, all rows "
                         "the same length") from None
    if header is not None and matrix.ndim == 2 and len(header) != matrix.shape[1]:
        raise NeuroError(f"{path}: the header names {len(header)} conditions but the rows hold {matrix.shape[1]} "
                         "values")
    return matrix, header


def _struct_entries(value: Any) -> list[dict] | None:
    """The entries of a MATLAB struct (array) with an ``RDM`` field, as dicts; None for other values.

    ``loadmat(simplify_cells=True)`` gives dicts for 1-D struct arrays but leaves ``mat_struct``
    objects inside 2-D ones (as in 92_brainRDMs.mat, 4 subjects × 2 sessions); both are handled,
    in row-major order."""
    if isinstance(value, dict):
        items = [value]
    elif isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.dtype == object):
        items = list(np.asarray(value, dtype=object).ravel()) if isinstance(value, np.ndarray) else list(value)
    else:
        return None
    entries = []
    for item in items:
        if hasattr(item, "_fieldnames"):
            item = {f: getattr(item, f) for f in item._fieldnames}
        if not isinstance(item, dict) or "RDM" not in item:
            return None
        entries.append(item)
    return entries or None


def _rdm_shaped(value: Any) -> bool:
    """A numeric variable that can hold RDMs: a triangular-length vector, a square matrix or a stack."""
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu" or value.size < 1:
        return False
    if value.ndim == 1:
        m = (1 + np.sqrt(1 + 8 * value.size)) / 2
        return value.size > 1 and m == int(m)
    if value.ndim == 2:
        return value.shape[0] == value.shape[1] > 1
    return value.ndim == 3 and (value.shape[0] == value.shape[1] or value.shape[1] == value.shape[2])


def _load_mat(path: Path, conditions: Sequence | None, measure: str, key: str | None) -> RDMs:
    from scipy.io import loadmat
    try:
        content = loadmat(str(path), simplify_cells=True)
    except Exception as exc:  # scipy raises several types for non-MATLAB or v7.3 (HDF5) files
        raise NeuroError(f"cannot read {path} as a MATLAB v5 file ({type(exc).__name__}); save it with "
                         "save(..., '-v7') or as .npy") from None
    variables = {k: v for k, v in content.items() if not k.startswith("__")}
    if key is not None:
        if key not in variables:
            raise NeuroError(f"{path} has no variable {key!r}; it has {sorted(variables)}")
        variables = {key: variables[key]}
    candidates = {k: v for k, v in variables.items() if _struct_entries(v) is not None or _rdm_shaped(v)}
    if not candidates:
        raise NeuroError(f"{path} holds no RDM (a numeric n×n, k×n×n or n×n×k variable, or a struct array "
                         f"with an RDM field); it has {sorted(variables)}")
    if len(candidates) > 1:
        raise NeuroError(f"{path} holds several RDM variables {sorted(candidates)}; choose one with key=")
    name, value = next(iter(candidates.items()))
    source = f"{path}:{name}"
    entries = _struct_entries(value)
    if entries is None:
        return _rdms_from_array(value, conditions, measure, None, source, matlab=True)
    vectors = []
    for entry in entries:
        rdm = np.asarray(entry["RDM"], dtype=np.float64)
        one = _rdms_from_array(rdm, conditions, measure, None, source, matlab=True)
        if one.n_rdm != 1:
            raise NeuroError(f"{source}: each struct entry must hold one RDM, got {one.n_rdm}")
        vectors.append(one)
    if len({v.n_cond for v in vectors}) > 1:
        raise NeuroError(f"{source}: the struct entries hold RDMs over different numbers of conditions")
    names = [str(e.get("name", f"{name}_{i}")) for i, e in enumerate(entries)]
    return RDMs(np.concatenate([v.vectors for v in vectors]), vectors[0].conditions, measure, names,
                {"source": source})


def load_rdm(path: str | Path, conditions: Sequence | None = None, measure: str = "unknown",
             key: str | None = None) -> RDMs:
    """RDMs from a file.

    - ``.npy``: an n×n matrix, a k×n×n stack or an upper-triangle vector (row-major, as ``squareform``);
    - ``.csv``: a square matrix with an optional header row of condition names (and optional row names);
    - ``.mat`` (MATLAB v5): the one numeric RDM variable (n×n, or n×n×k as MATLAB stacks them) or the one
      named by ``key``; a struct array with ``RDM`` and ``name`` fields (rsatoolbox's MATLAB format,
      as in the rsa92 files) gives one RDM per entry named by ``name``;
    - ``.npz``: written by ``RDMs.save``.

    Matrices must be symmetric with a zero diagonal. ``conditions`` names the conditions (default: the
    header, else 0..n-1); ``measure`` is recorded.
    """
    path = Path(path)
    if not path.is_file():
        raise NeuroError(f"RDM file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        rdms = RDMs.load(path)
        if conditions is not None:
            rdms = RDMs(rdms.vectors, conditions, rdms.measure, rdms.names, rdms.descriptors)
        if measure != "unknown":
            rdms.measure = measure
        return rdms
    if suffix == ".npy":
        try:
            a = np.load(path, allow_pickle=False)
        except Exception:  # noqa: BLE001  numpy raises ValueError, EOFError, OSError... for damaged files
            raise NeuroError(f"{path} is not a readable numeric .npy array (damaged, or an object array, "
                             "which is refused); save it with numpy.save") from None
        return _rdms_from_array(a, conditions, measure, None, str(path))
    if suffix == ".csv":
        matrix, header = _parse_csv(path)
        return _rdms_from_array(matrix, conditions if conditions is not None else header, measure, None, str(path))
    if suffix == ".mat":
        return _load_mat(path, conditions, measure, key)
    raise NeuroError(f"unknown RDM file type {suffix or '(none)'!r} for {path.name}; use .npy, .csv, .mat or .npz")
