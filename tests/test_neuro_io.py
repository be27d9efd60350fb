"""neuro.io, neuro.glm and neuro.datasets on real files: nibabel's own NIfTI test images, files written
here, the vendored rsa92 RDMs and the Haxby et al. (2001) BOLD slice."""

from __future__ import annotations

import math
from contextlib import contextmanager
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import scipy.io

from neuro import NeuroError, Patterns, RDMs
from neuro.datasets import load_haxby2001_sub1, load_rsa92
from neuro.glm import condition_patterns, spm_hrf
from neuro.io import load_betas, load_bold, load_mask, load_rdm

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"
EXAMPLE4D = NIBABEL_DATA / "example4d.nii.gz"          # (128, 96, 24, 2), oblique affine
FUNCTIONAL = NIBABEL_DATA / "functional.nii"           # (17, 21, 3, 20)
ANATOMICAL = NIBABEL_DATA / "anatomical.nii"           # (33, 41, 25)
RSA92_DIR = Path(__file__).resolve().parents[1] / "neuro" / "data" / "rsa92"


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))
    return path


@contextmanager
def _raises(match: str):
    """pytest.raises for a NeuroError whose message is one line."""
    with pytest.raises(NeuroError, match=match) as info:
        yield info
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------- masks
def test_load_mask_binary_label_and_list(tmp_path):
    labels = np.zeros((6, 5, 4), np.int16)
    labels[1:3, 1:3, 1] = 1
    labels[3:6, 0:2, 2] = 4
    path = _save(tmp_path / "atlas.nii.gz", labels, np.diag([2.0, 2.0, 3.0, 1.0]))
    rois, affine = load_mask(path)
    assert sorted(rois) == ["label_1", "label_4"]
    np.testing.assert_array_equal(affine, np.diag([2.0, 2.0, 3.0, 1.0]))
    assert rois["label_4"].dtype == bool and rois["label_4"].sum() == 6
    assert sorted(load_mask(path, labels=["V1", "IT"])[0]) == ["IT", "V1"]
    only_it, _ = load_mask(path, labels={4: "IT"})                 # a dict may select a subset
    assert list(only_it) == ["IT"] and only_it["IT"].sum() == 6

    binary = _save(tmp_path / "vt_left.nii.gz", (labels == 1).astype(np.uint8))
    assert list(load_mask(binary)[0]) == ["vt_left"]
    assert list(load_mask(nib.Nifti1Image((labels == 1).astype(np.uint8), np.eye(4)))[0]) == ["roi"]
    assert list(load_mask(nib.load(str(binary)))[0]) == ["vt_left"]  # loaded images keep their file name
    other = _save(tmp_path / "vt_right.nii.gz", (labels == 4).astype(np.uint8))
    several, _ = load_mask([binary, other])
    assert list(several) == ["vt_left", "vt_right"] and several["vt_right"].sum() == 6


def test_load_mask_errors(tmp_path):
    with _raises("empty"):
        load_mask(_save(tmp_path / "zeros.nii.gz", np.zeros((4, 4, 2), np.uint8)))
    with _raises("non-integer"):
        load_mask(_save(tmp_path / "prob.nii.gz", np.full((4, 4, 2), 0.5, np.float32)))
    with _raises("3-D"):
        load_mask(_save(tmp_path / "four.nii.gz", np.ones((4, 4, 2, 3), np.uint8)))
    with _raises("4-D|3-D"):
        load_mask(EXAMPLE4D)
    labels = np.zeros((4, 4, 2), np.uint8)
    labels[0, 0, 0], labels[1, 1, 1] = 1, 2
    atlas = _save(tmp_path / "atlas.nii.gz", labels)
    with _raises(r"empty ROI"):
        load_mask(atlas, labels={1: "V1", 3: "MT"})
    with _raises("one name per non-zero label"):
        load_mask(atlas, labels=["V1"])
    with _raises("label image"):
        load_mask([atlas, atlas])
    shifted = np.eye(4)
    shifted[1, 3] = 3.0
    with _raises("different affines"):
        load_mask([_save(tmp_path / "a.nii.gz", (labels == 1).astype(np.uint8)),
                   _save(tmp_path / "b.nii.gz", (labels == 2).astype(np.uint8), shifted)])
    with _raises("does not exist"):
        load_mask(tmp_path / "nope.nii.gz")
    (tmp_path / "junk.nii.gz").write_bytes(b"not an image")
    with _raises("cannot read"):
        load_mask(tmp_path / "junk.nii.gz")


# ------------------------------------------------------------------------------------ BOLD, betas
def test_load_bold_on_nibabels_real_4d_image(tmp_path):
    img = nib.load(str(EXAMPLE4D))
    data = np.asarray(img.get_fdata())
    labels = np.zeros(img.shape[:3], np.int16)
    labels[40:60, 30:50, 10:12] = 1
    labels[70:80, 50:60, 5] = 2
    atlas = _save(tmp_path / "atlas.nii.gz", labels, img.affine)   # same (oblique) affine as the data
    series = load_bold(EXAMPLE4D, atlas, labels={1: "A", 2: "B"})
    assert sorted(series) == ["A", "B"]
    np.testing.assert_array_equal(series["A"], data[labels == 1].T)
    assert series["B"].shape == (2, 100) and series["A"].shape == (2, 800)
    from_objects = load_bold(img, nib.load(str(atlas)), labels=["A", "B"])   # nibabel images work as paths do
    np.testing.assert_array_equal(from_objects["B"], series["B"])


def test_load_betas_from_3d_files_and_from_4d_with_a_condition_file(tmp_path):
    func = nib.load(str(FUNCTIONAL))
    data = np.asarray(func.get_fdata())
    mask = np.zeros(func.shape[:3], np.uint8)
    mask[4:12, 6:15, 1] = 1
    mask_path = _save(tmp_path / "vt.nii.gz", mask, func.affine)
    names = ["face", "house", "cat", "chair"]
    files = [_save(tmp_path / f"{n}.nii.gz", data[..., i].astype(np.float32), func.affine)
             for i, n in enumerate(names)]
    from_files = load_betas([str(f) for f in files], mask_path)
    assert list(from_files) == ["vt"]
    p = from_files["vt"]
    assert list(p.conditions) == names and p.runs is None
    np.testing.assert_allclose(p.data, data[..., :4][mask == 1].T, rtol=1e-6)
    assert p.descriptors["roi"] == "vt" and p.descriptors["n_voxels"] == 72
    assert p.descriptors["sources"] == names and p.descriptors["dropped_voxels"] == 0

    (tmp_path / "conds.txt").write_text("".join(f"c{i % 5} {i // 5}\n" for i in range(20)))
    from_4d = load_betas(FUNCTIONAL, mask_path, conditions=tmp_path / "conds.txt")["vt"]
    assert from_4d.data.shape == (20, 72)
    np.testing.assert_allclose(from_4d.data, data[mask == 1].T)
    assert list(from_4d.conditions[:6]) == ["c0", "c1", "c2", "c3", "c4", "c0"]
    assert list(from_4d.runs[::5]) == ["0", "1", "2", "3"]
    (tmp_path / "labels.txt").write_text("# one label per volume\n" + "\n".join(f"c{i % 5}" for i in range(20)))
    one_column = load_betas(FUNCTIONAL, mask_path, conditions=tmp_path / "labels.txt", runs=np.arange(20) // 10)["vt"]
    assert list(one_column.conditions) == list(from_4d.conditions) and list(one_column.runs) == [0] * 10 + [1] * 10
    as_list = load_betas(func, mask_path, conditions=[f"c{i % 5}" for i in range(20)])["vt"]
    np.testing.assert_array_equal(as_list.data, from_4d.data)
    # a CSV (comma or tab) is a label and a run per line, as with spaces; a header line is named as the likely cause
    (tmp_path / "conds.csv").write_text("".join(f"c{i % 5},{i // 5}\n" for i in range(20)))
    from_csv = load_betas(FUNCTIONAL, mask_path, conditions=tmp_path / "conds.csv")["vt"]
    assert list(from_csv.conditions) == list(from_4d.conditions) and list(from_csv.runs) == list(from_4d.runs)
    (tmp_path / "header.csv").write_text("condition\n" + "".join(f"c{i % 5}\n" for i in range(20)))
    with pytest.raises(NeuroError,
                       match="21 condition labels for 20 volumes .is the first line, 'condition', a header"):
        load_betas(FUNCTIONAL, mask_path, conditions=tmp_path / "header.csv")


def test_space_mismatch_is_an_error_naming_both_and_never_resampled(tmp_path):
    func = nib.load(str(FUNCTIONAL))
    conds = [str(i) for i in range(20)]
    anat_mask = _save(tmp_path / "anat_mask.nii.gz", np.ones((33, 41, 25), np.uint8), nib.load(str(ANATOMICAL)).affine)
    with _raises(r"\(17, 21, 3\).*\(33, 41, 25\)"):
        load_betas(FUNCTIONAL, anat_mask, conditions=conds)
    with _raises(r"\(33, 41, 25\).*\(17, 21, 3\)"):
        load_bold(ANATOMICAL, _save(tmp_path / "f.nii.gz", np.ones(func.shape[:3], np.uint8), func.affine))
    moved = func.affine.copy()
    moved[0, 3] += 0.01                                      # 10 µm: beyond the 1e-3 tolerance
    with _raises(r"different affines .*\[-4,0,0,32; .* vs \[-4,0,0,32\.01; "):
        load_betas(FUNCTIONAL, _save(tmp_path / "m1.nii.gz", np.ones(func.shape[:3], np.uint8), moved),
                   conditions=conds)
    moved[0, 3] = func.affine[0, 3] + 1e-4                  # within tolerance: accepted
    ok = load_betas(FUNCTIONAL, _save(tmp_path / "m2.nii.gz", np.ones(func.shape[:3], np.uint8), moved),
                    conditions=conds)
    assert ok["m2"].n_channels == 17 * 21 * 3
    a = _save(tmp_path / "a.nii.gz", np.zeros((4, 4, 2), np.float32))
    b = _save(tmp_path / "b.nii.gz", np.zeros((4, 5, 2), np.float32))
    with _raises(r"b has shape \(4, 5, 2\) but a has shape \(4, 4, 2\)"):
        load_betas([a, b], _save(tmp_path / "m3.nii.gz", np.ones((4, 4, 2), np.uint8)))
    with _raises("needs conditions"):
        load_betas(FUNCTIONAL, tmp_path / "m2.nii.gz")
    with _raises("one label per volume"):
        load_betas(FUNCTIONAL, tmp_path / "m2.nii.gz", conditions=["a", "b"])
    with _raises("one run per volume"):
        load_betas(FUNCTIONAL, tmp_path / "m2.nii.gz", conditions=conds, runs=[0, 1])
    with _raises("nan must be"):
        load_betas(FUNCTIONAL, tmp_path / "m2.nii.gz", conditions=conds, nan="ignore")


def test_nan_voxels_error_with_count_or_are_dropped(tmp_path):
    data = np.random.default_rng(0).standard_normal((5, 4, 2, 3)).astype(np.float32)
    data[1, 1, 0, 2] = np.nan
    data[2, 3, 1, 0] = np.inf
    data[0, 0, 0, :] = np.nan                              # outside the mask: harmless
    mask = np.ones((5, 4, 2), np.uint8)
    mask[0, 0, 0] = 0
    betas = _save(tmp_path / "betas.nii.gz", data)
    mask_path = _save(tmp_path / "m.nii.gz", mask)
    with _raises("2 voxels hold NaN"):
        load_betas(betas, mask_path, conditions=["a", "b", "c"])
    kept = load_betas(betas, mask_path, conditions=["a", "b", "c"], nan="drop")["m"]
    assert kept.n_channels == 39 - 2 and kept.descriptors["dropped_voxels"] == 2
    assert kept.descriptors["n_voxels"] == 37 and np.isfinite(kept.data).all()
    assert load_bold(betas, mask_path, nan="drop")["m"].shape == (3, 37)
    with _raises("2 voxels hold NaN"):
        load_bold(betas, mask_path)


# ------------------------------------------------------------------------------------- RDM files
def _rdm(n: int = 5, seed: int = 1) -> np.ndarray:
    """A correlation-distance RDM with an exact zero diagonal."""
    m = 1 - np.corrcoef(np.random.default_rng(seed).standard_normal((n, 12)))
    np.fill_diagonal(m, 0.0)
    return m


def test_rdm_files_round_trip(tmp_path):
    m, m2 = _rdm(5, 1), _rdm(5, 2)
    iu = np.triu_indices(5, 1)
    np.save(tmp_path / "m.npy", m)
    np.testing.assert_allclose(load_rdm(tmp_path / "m.npy").vectors[0], m[iu])
    np.save(tmp_path / "stack.npy", np.stack([m, m2]))
    stack = load_rdm(tmp_path / "stack.npy", conditions=list("abcde"), measure="correlation")
    assert stack.n_rdm == 2 and stack.measure == "correlation" and list(stack.conditions) == list("abcde")
    np.testing.assert_allclose(stack.matrices(), np.stack([m, m2]))
    np.save(tmp_path / "vec.npy", m[iu])
    np.testing.assert_allclose(load_rdm(tmp_path / "vec.npy").matrices()[0], m)

    rows = "\n".join(",".join(f"{v:.17g}" for v in row) for row in m)
    (tmp_path / "head.csv").write_text("face,house,cat,dog,car\n" + rows + "\n")
    head = load_rdm(tmp_path / "head.csv")
    assert list(head.conditions) == ["face", "house", "cat", "dog", "car"]
    np.testing.assert_allclose(head.matrices()[0], m)
    (tmp_path / "plain.csv").write_text(rows)
    assert list(load_rdm(tmp_path / "plain.csv").conditions) == ["0", "1", "2", "3", "4"]
    named_rows = "\n".join(f"{c}," + ",".join(f"{v:.17g}" for v in row) for c, row in zip("vwxyz", m))
    (tmp_path / "rownames.csv").write_text(",v,w,x,y,z\n" + named_rows)
    assert list(load_rdm(tmp_path / "rownames.csv").conditions) == list("vwxyz")

    scipy.io.savemat(tmp_path / "one.mat", {"rdm": m})
    np.testing.assert_allclose(load_rdm(tmp_path / "one.mat").matrices()[0], m)
    scipy.io.savemat(tmp_path / "matlab_stack.mat", {"rdms": np.stack([m, m2], axis=2)})   # n × n × k
    np.testing.assert_allclose(load_rdm(tmp_path / "matlab_stack.mat").matrices(), np.stack([m, m2]))
    structs = np.zeros((2,), dtype=[("RDM", object), ("name", object)])
    structs[0], structs[1] = (m, "subj1"), (m2, "subj2")
    scipy.io.savemat(tmp_path / "structs.mat", {"RDMs": structs, "note": "two subjects"})
    from_structs = load_rdm(tmp_path / "structs.mat")
    assert list(from_structs.names) == ["subj1", "subj2"]
    np.testing.assert_allclose(from_structs.matrices(), np.stack([m, m2]))
    scipy.io.savemat(tmp_path / "two.mat", {"first": m, "second": m2})
    with _raises("key="):
        load_rdm(tmp_path / "two.mat")
    np.testing.assert_allclose(load_rdm(tmp_path / "two.mat", key="second").matrices()[0], m2)
    with _raises("no variable 'third'"):
        load_rdm(tmp_path / "two.mat", key="third")

    saved = RDMs.from_matrices(np.stack([m, m2]), list("abcde"), "euclidean", ["s1", "s2"], study="x")
    back = load_rdm(saved.save(tmp_path / "r.npz"))
    assert back.measure == "euclidean" and list(back.names) == ["s1", "s2"] and back.descriptors["study"] == "x"
    np.testing.assert_array_equal(back.vectors, saved.vectors)


def test_rdm_file_errors(tmp_path):
    m = _rdm(4)
    with _raises("does not exist"):
        load_rdm(tmp_path / "missing.npy")
    (tmp_path / "r.txt").write_text("0 1\n1 0\n")
    with _raises("unknown RDM file type '.txt'"):
        load_rdm(tmp_path / "r.txt")
    np.save(tmp_path / "rect.npy", np.zeros((3, 4)))
    with _raises("not a square RDM"):
        load_rdm(tmp_path / "rect.npy")
    (tmp_path / "rect.csv").write_text("0,1,2\n1,0,3\n")
    with _raises("not a square RDM"):
        load_rdm(tmp_path / "rect.csv")
    asym = m.copy()
    asym[0, 1] += 0.5
    np.save(tmp_path / "asym.npy", asym)
    with _raises("not symmetric"):
        load_rdm(tmp_path / "asym.npy")
    (tmp_path / "asym.csv").write_text("\n".join(",".join(str(v) for v in row) for row in asym))
    with _raises("not symmetric"):
        load_rdm(tmp_path / "asym.csv")
    np.save(tmp_path / "similarity.npy", 1 - m)                # ones on the diagonal
    with _raises("diagonal is not zero"):
        load_rdm(tmp_path / "similarity.npy")
    np.save(tmp_path / "vec.npy", np.arange(5.0))
    with _raises("not the upper triangle"):
        load_rdm(tmp_path / "vec.npy")
    np.save(tmp_path / "ok.npy", m)
    with _raises("3 condition names for an RDM over 4 conditions"):
        load_rdm(tmp_path / "ok.npy", conditions=list("abc"))
    scipy.io.savemat(tmp_path / "none.mat", {"labels": np.array(["a", "b"]), "x": np.zeros((2, 3))})
    with _raises("holds no RDM"):
        load_rdm(tmp_path / "none.mat")
    (tmp_path / "bad.mat").write_bytes(b"not a MATLAB file at all" * 10)
    with _raises("cannot read"):
        load_rdm(tmp_path / "bad.mat")


# -------------------------------------------------------------------------------------------- rsa92
@pytest.fixture(scope="module")
def rsa92():
    return load_rsa92()


def test_rsa92_contents(rsa92):
    assert rsa92.images.shape[0] == 92 and rsa92.images.shape[3] == 3 and rsa92.images.dtype == np.uint8
    assert len(set(rsa92.conditions)) == 92 and rsa92.conditions[0] == "01_human_bodypart"
    assert rsa92.conditions[12] == "13_human_face" and rsa92.conditions[-1] == "92_artificial_inanimate"
    cats = rsa92.categories
    assert cats["face"].sum() == 24 and cats["animal"].sum() == 48 and cats["human"].sum() == 24
    assert np.array_equal(cats["animate"], cats["animal"])
    assert rsa92.hit_subjects.n_rdm == 8 and rsa92.hit_subjects.n_cond == 92
    assert [n.split("_")[1] for n in rsa92.hit_subjects.names] == ["sess1", "sess2"] * 4
    assert len({n.split("_")[0] for n in rsa92.hit_subjects.names}) == 4
    assert list(rsa92.model_rdms.names[:2]) == ["animacy", "FaceBodyManmadeNatobj"]
    for rdms in (rsa92.hit_subjects, rsa92.hit, rsa92.mit, rsa92.model_rdms):
        assert list(rdms.conditions) == list(rsa92.conditions)
        assert "Kriegeskorte" in rdms.descriptors["citation"] and "rsatoolbox" in rdms.descriptors["source"]
        assert np.isfinite(rdms.vectors).all()


def test_rsa92_subject_rdms_match_the_file_and_the_group_rdm(rsa92):
    raw = scipy.io.loadmat(RSA92_DIR / "92_brainRDMs.mat", simplify_cells=True)["RDMs"]
    by_name = {}
    for entry in raw.ravel():
        _, subject, session = [p.strip() for p in entry.name.split("|")]
        by_name[f"{subject}_sess{session.split(':')[1].strip()}"] = np.asarray(entry.RDM, dtype=np.float64)
    assert sorted(by_name) == list(rsa92.hit_subjects.names)
    for name, matrix in zip(rsa92.hit_subjects.names, rsa92.hit_subjects.matrices()):
        np.testing.assert_allclose(matrix, by_name[name])            # the file's matrices, in the named order
        np.testing.assert_array_equal(by_name[name], by_name[name].T)  # symmetric on disk
        assert np.all(np.diag(by_name[name]) == 0)
    mean_subject = rsa92.hit_subjects.vectors.mean(0)
    assert np.corrcoef(mean_subject, rsa92.hit.vectors[0])[0, 1] > 0.9
    assert np.corrcoef(rsa92.hit.vectors[0], rsa92.mit.vectors[0])[0, 1] > 0.2   # man and monkey IT agree
    single = np.corrcoef(rsa92.hit_subjects.vectors)[np.triu_indices(8, 1)]
    assert single.mean() > 0                                  # sessions and subjects share structure
    via_io = load_rdm(RSA92_DIR / "92_brainRDMs.mat")          # the generic struct-array reader agrees
    assert via_io.n_rdm == 8 and str(via_io.names[0]) == "hIT | BE | Session: 1"
    np.testing.assert_allclose(via_io.vectors.mean(0), mean_subject)


# ----------------------------------------------------------------------------------------- GLM
def test_spm_hrf_is_the_canonical_double_gamma():
    tr, ov = 2.0, 16
    h = spm_hrf(tr, ov)
    dt = tr / ov
    t = np.arange(len(h)) * dt
    assert len(h) == int(round(32 / dt)) + 1 and abs(h.sum() - 1) < 1e-12
    # the closed form, independent of scipy: t^5 e^-t / 5! - t^15 e^-t / (15! · 6)
    ref = t ** 5 * np.exp(-t) / math.factorial(5) - t ** 15 * np.exp(-t) / (math.factorial(15) * 6)
    np.testing.assert_allclose(h, ref / ref.sum(), rtol=1e-10, atol=1e-15)
    assert abs(t[np.argmax(h)] - 5.0) <= dt and 12 < t[np.argmin(h)] < 17 and h.min() < 0
    with _raises("tr must be positive"):
        spm_hrf(0)


def _boxcar_regressor(on: np.ndarray, tr: float, ov: int = 16) -> np.ndarray:
    """Written independently of neuro.glm: the fine boxcar convolved with the HRF, read mid-volume."""
    fine = np.repeat(on.astype(float), ov)
    full = np.convolve(fine, spm_hrf(tr, ov))
    return np.array([full[i * ov + ov // 2] for i in range(len(on))])


def test_glm_recovers_planted_betas_exactly_on_noise_free_data():
    rng = np.random.default_rng(5)
    tr, n_runs, n_vox = 2.5, 3, 7
    block = ["rest"] * 5 + ["a"] * 4 + ["rest"] * 5 + ["b"] * 4 + ["rest"] * 4 + ["c"] * 4 + ["rest"] * 6
    labels, runs, bold, planted = [], [], [], []
    for r in range(n_runs):
        order = rng.permutation(["a", "b", "c"])               # conditions in different orders per run
        lab = np.array([{"a": order[0], "b": order[1], "c": order[2]}.get(x, x) for x in block])
        betas = rng.standard_normal((3, n_vox))
        x = np.column_stack([_boxcar_regressor(lab == c, tr) for c in "abc"])
        t = np.linspace(-1, 1, len(lab))
        drift = 100 + rng.standard_normal(n_vox) + np.outer(t, rng.standard_normal(n_vox))
        bold.append(x @ betas + drift)
        labels.extend(lab)
        runs.extend([f"run{r}"] * len(lab))
        planted.append(betas)
    labels = np.array(labels)
    patterns, residuals, dof = condition_patterns(np.concatenate(bold), labels, runs, tr, drift_order=1)
    first = list(dict.fromkeys(c for c in labels if c != "rest"))
    assert list(patterns.conditions) == first * n_runs
    assert list(patterns.runs) == [f"run{r}" for r in range(n_runs) for _ in range(3)]
    expected = np.concatenate([b[["abc".index(c) for c in first]] for b in planted])
    np.testing.assert_allclose(patterns.data, expected, atol=1e-8)
    assert dof == [len(block) - 5] * n_runs                       # 3 conditions + constant + linear drift
    assert max(np.abs(r).max() for r in residuals) < 1e-8 and residuals[0].shape == (len(block), n_vox)


def test_glm_errors():
    labels = np.array(["rest", "a", "a", "rest", "b", "b"] * 4)
    runs = np.repeat([0, 1], 12)
    bold = np.random.default_rng(0).standard_normal((24, 3))
    with _raises(r"run 1 has no volumes of \['b'\]"):
        condition_patterns(bold, np.where((runs == 1) & (labels == "b"), "rest", labels), runs, 2.0)
    with _raises("one label and one run per volume"):
        condition_patterns(bold[:-1], labels, runs, 2.0)
    with _raises("rank deficient"):
        condition_patterns(bold, labels, runs, 2.0, drift_order=11)
    with _raises("no conditions left"):
        condition_patterns(bold, np.full(24, "rest"), runs, 2.0)


# ---------------------------------------------------------------------------------------- haxby
def test_haxby_glm_gives_reliable_category_patterns():
    h = load_haxby2001_sub1()
    assert h.tr == 2.5 and "Haxby" in h.citation and len(set(h.runs)) == 12
    assert set(h.labels) == {"rest", "face", "house", "shoe", "cat", "scissors", "scrambledpix", "bottle", "chair"}
    bold = load_bold(h.bold_path, h.mask_path)
    assert list(bold) == ["mask"] and bold["mask"].shape == (1452, 530)
    patterns, residuals, dof = condition_patterns(bold["mask"], h.labels, h.runs, h.tr)
    assert patterns.data.shape == (12 * 8, 530) and len(residuals) == 12 and len(dof) == 12
    assert sorted(set(patterns.conditions)) == sorted(h.categories) and len(h.categories) == 8
    halves = []
    for parity in (0, 1):                                       # odd vs even runs: independent data
        sel = patterns.runs % 2 == parity
        means, _ = Patterns(patterns.data[sel], patterns.conditions[sel]).condition_means(order=h.categories)
        halves.append(means)
    off = ~np.eye(8, dtype=bool)
    r = np.corrcoef(halves[0], halves[1])[:8, 8:]
    assert np.diag(r).mean() > r[off].mean() + 0.1              # measured: 0.62 within vs 0.46 between
    # without the response shared by all categories the contrast is sharper (measured: 0.29 vs -0.04)
    centred = np.corrcoef(halves[0] - halves[0].mean(0), halves[1] - halves[1].mean(0))[:8, 8:]
    assert np.diag(centred).mean() > centred[off].mean() + 0.2


def test_damaged_files_of_every_kind_are_one_clear_error(tmp_path):
    """Seeded junk, half of it behind a valid-looking file header: every loader answers NeuroError
    (numpy, zipfile, csv, scipy and nibabel each raise their own exception types)."""
    import random

    rng = random.Random(0)
    mask = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((3, 3, 3), dtype=np.uint8), np.eye(4)), str(mask))
    heads = {".npy": b"\x93NUMPY\x01\x00", ".npz": b"PK\x03\x04", ".mat": b"MATLAB 5.0 MAT-file", ".csv": b"1,2\n",
             ".nii.gz": b"\x1f\x8b\x08"}
    for trial in range(40):
        for suffix, head in heads.items():
            junk = tmp_path / f"junk{suffix}"
            junk.write_bytes((head if trial % 2 else b"") + rng.randbytes(rng.choice([8, 200, 3000])))
            with pytest.raises(NeuroError):
                load_betas(junk, mask) if suffix == ".nii.gz" else load_rdm(junk)
            if suffix == ".npz":
                with pytest.raises(NeuroError):
                    RDMs.load(junk)
