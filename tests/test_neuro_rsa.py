"""neuro's RDMs, comparisons and inference against rsatoolbox (a test dependency) and by construction."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rsatoolbox
from rsatoolbox.data import Dataset
from rsatoolbox.data.noise import cov_from_residuals
from rsatoolbox.inference import boot_noise_ceiling, eval_bootstrap_pattern, eval_bootstrap_rdm
from rsatoolbox.model import ModelFixed
from rsatoolbox.rdm import calc_rdm
from rsatoolbox.rdm import compare as rsatoolbox_compare
from scipy.spatial.distance import pdist
from scipy.stats import false_discovery_control

import neuro
from neuro import NeuroError, Patterns, RDMs, compare, compute_rdm, rsa
from neuro.inference import bootstrap, fdr, noise_ceiling, permutation_test
from neuro.noise import noise_from_patterns, noise_from_residuals

# our comparator name -> rsatoolbox's
COMPARATOR_PAIRS = [("pearson", "corr"), ("spearman", "spearman"), ("rho-a", "rho-a"), ("cosine", "cosine"),
                    ("kendall-tau-a", "tau-a"), ("kendall-tau-b", "kendall"),
                    ("whitened-cosine", "cosine_cov"), ("whitened-pearson", "corr_cov")]
BOOTSTRAPPABLE = [p for p in COMPARATOR_PAIRS if not p[0].startswith("whitened") and p[0] != "kendall-tau-b"]


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _runs_data(rng, n_run=4, n_cond=10, n_vox=30):
    signal = rng.standard_normal((n_cond, n_vox))
    y = np.concatenate([signal + rng.standard_normal((n_cond, n_vox)) for _ in range(n_run)])
    cond = np.tile(np.arange(n_cond), n_run)
    run = np.repeat(np.arange(n_run), n_cond)
    return y, cond, run


def _group(rng, n_cond=25, n_subj=5, noise=1.5):
    true = rng.standard_normal((n_cond, 40))
    data = rsatoolbox.rdm.concat([calc_rdm(Dataset(true + noise * rng.standard_normal(true.shape)),
                                           method="correlation") for _ in range(n_subj)])
    model = calc_rdm(Dataset(true), method="correlation")
    names = [f"{i:03d}" for i in range(n_cond)]
    return model, data, RDMs(model.get_vectors(), names, "correlation", ["truth"]), \
        RDMs(data.get_vectors(), names, "correlation")


# --------------------------------------------------------------------------------------------- RDMs
@pytest.mark.parametrize("method", ["euclidean", "correlation"])
def test_rdm_methods_equal_rsatoolbox(method):
    x = np.random.default_rng(0).standard_normal((20, 50))
    ref = calc_rdm(Dataset(x), method=method).get_vectors()
    np.testing.assert_allclose(compute_rdm(x, method).vectors, ref, atol=1e-10)


def test_cosine_rdm_equals_scipy():
    x = np.random.default_rng(1).standard_normal((12, 30))
    np.testing.assert_allclose(compute_rdm(x, "cosine").vectors[0], pdist(x, "cosine"), atol=1e-12)


def test_repeated_observations_are_averaged_like_rsatoolbox():
    rng = np.random.default_rng(2)
    y, cond, run = _runs_data(rng)
    ref = calc_rdm(Dataset(y, obs_descriptors={"cond": cond}), method="correlation", descriptor="cond")
    ours = compute_rdm(Patterns(y, [f"{c:02d}" for c in cond]), "correlation")
    np.testing.assert_allclose(ours.vectors, ref.get_vectors(), atol=1e-10)


@pytest.mark.parametrize("noise_method", [None, "diag", "shrinkage_diag", "shrinkage_eye", "full"])
def test_crossnobis_equals_rsatoolbox(noise_method):
    rng = np.random.default_rng(3)
    y, cond, run = _runs_data(rng)
    ds = Dataset(y, obs_descriptors={"cond": cond, "run": run})
    residuals = rng.standard_normal((60, y.shape[1]))
    if noise_method is None:
        ours_noise, prec = None, None
    else:
        ours_noise = noise_from_residuals(residuals, noise_method)
        ref_cov = cov_from_residuals(residuals, method=noise_method)
        got = np.diag(ours_noise.covariance) if ours_noise.is_diagonal else ours_noise.covariance
        np.testing.assert_allclose(got, ref_cov, atol=1e-12)
        prec = np.linalg.inv(ref_cov)
    ref = calc_rdm(ds, method="crossnobis", descriptor="cond", cv_descriptor="run", noise=prec)
    ours = compute_rdm(Patterns(y, [str(c) for c in cond], run), "crossnobis", noise=ours_noise)
    np.testing.assert_allclose(ours.vectors, ref.get_vectors(), atol=1e-10)
    # a diagonal noise model stays a vector: no channel × channel matrix is built
    if noise_method == "diag":
        assert ours_noise.covariance.ndim == 1


def test_mahalanobis_equals_rsatoolbox():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((10, 20))
    noise = noise_from_residuals(rng.standard_normal((50, 20)), "shrinkage_diag")
    ref = calc_rdm(Dataset(x), method="mahalanobis", noise=noise.precision())
    np.testing.assert_allclose(compute_rdm(x, "mahalanobis", noise=noise).vectors, ref.get_vectors(), atol=1e-10)


def test_crossnobis_is_unbiased_for_pure_noise():
    rng = np.random.default_rng(5)
    n_run, n_cond, n_vox = 8, 6, 100
    y = rng.standard_normal((n_run * n_cond, n_vox))
    p = Patterns(y, np.tile([f"c{i}" for i in range(n_cond)], n_run), np.repeat(np.arange(n_run), n_cond))
    cross = compute_rdm(p, "crossnobis").vectors
    plain = compute_rdm(p, "euclidean").vectors
    assert abs(cross.mean()) < 0.05 < plain.mean()          # no positive bias without signal
    noise = noise_from_patterns(p, "diag")
    assert noise.dof == n_run * n_cond - n_cond


def test_crossnobis_needs_runs_and_balanced_design():
    y = np.zeros((6, 4)) + np.arange(24).reshape(6, 4)
    with pytest.raises(NeuroError, match="runs"):
        compute_rdm(Patterns(y, list("abcabc")), "crossnobis")
    with pytest.raises(NeuroError, match="lacks conditions"):
        compute_rdm(Patterns(y, list("abcabd"), [0, 0, 0, 1, 1, 1]), "crossnobis")


def test_bad_inputs_raise_one_line_errors():
    with pytest.raises(NeuroError, match="unknown RDM method"):
        compute_rdm(np.ones((3, 3)), "bogus")
    with pytest.raises(NeuroError, match="NaN"):
        Patterns(np.array([[1.0, np.nan], [0.0, 1.0]]), ["a", "b"])
    with pytest.raises(NeuroError, match="constant pattern"):
        compute_rdm(np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 2.0]]), "correlation")
    with pytest.raises(NeuroError, match="not symmetric"):
        RDMs.from_matrices(np.array([[0, 1, 2], [3, 0, 1], [2, 1, 0.0]]))
    with pytest.raises(NeuroError, match="unknown comparison"):
        compare(np.ones(3), np.ones(3), "bogus")
    with pytest.raises(NeuroError, match="different numbers of conditions"):
        compare(np.ones(3), np.ones(6), "pearson")


def test_rdms_save_load_subset(tmp_path):
    rdm = compute_rdm(np.random.default_rng(6).standard_normal((5, 8)), "correlation",
                      conditions=list("abcde"), simulated=True)
    path = rdm.save(tmp_path / "r.npz")
    back = RDMs.load(path)
    np.testing.assert_array_equal(back.vectors, rdm.vectors)
    assert list(back.conditions) == list("abcde") and back.descriptors["simulated"] is True
    sub = rdm.subset_conditions(["e", "a"])
    assert sub.matrices()[0, 0, 1] == rdm.matrices()[0, 4, 0]
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(NeuroError, match="not an RDM file"):
        RDMs.load(tmp_path / "bad.npz")


# ---------------------------------------------------------------------------------------- comparisons
@pytest.mark.parametrize("ours,theirs", COMPARATOR_PAIRS)
def test_comparisons_equal_rsatoolbox(ours, theirs):
    rng = np.random.default_rng(7)
    a = calc_rdm(Dataset(rng.standard_normal((15, 5))), method="euclidean")
    b = rsatoolbox.rdm.concat([calc_rdm(Dataset(rng.standard_normal((15, 5))), method="euclidean")
                               for _ in range(3)])
    np.testing.assert_allclose(compare(a.get_vectors(), b.get_vectors(), ours), rsatoolbox_compare(a, b, theirs),
                               atol=1e-10)


@pytest.mark.parametrize("ours,theirs", [p for p in COMPARATOR_PAIRS if not p[0].startswith("whitened")])
def test_comparisons_with_ties_and_nans_equal_rsatoolbox(ours, theirs):
    rng = np.random.default_rng(8)
    a = np.round(rng.uniform(size=(2, 45)) * 4) / 4          # categorical-like model RDMs with many ties
    b = rng.uniform(size=(3, 45))
    a[:, [3, 17]] = np.nan
    b[:, [3, 17]] = np.nan
    ref = rsatoolbox_compare(rsatoolbox.rdm.RDMs(a), rsatoolbox.rdm.RDMs(b), theirs)
    np.testing.assert_allclose(compare(a, b, ours), ref, atol=1e-10)


# ------------------------------------------------------------------------------------ noise ceiling
@pytest.mark.parametrize("ours,theirs", [p for p in COMPARATOR_PAIRS if p[0] != "kendall-tau-b"])
def test_noise_ceiling_equals_rsatoolbox(ours, theirs):
    _, data, _, brain = _group(np.random.default_rng(9))
    ref = np.array(boot_noise_ceiling(data, method=theirs))
    # rsatoolbox normalises RDMs for whitened pooling with an iterative solver (scipy cg, rtol 1e-5);
    # we use the exact closed form, so those two agree only to the solver's tolerance
    tol = 1e-3 if ours.startswith("whitened") else 1e-10
    np.testing.assert_allclose(noise_ceiling(brain, ours), ref, atol=tol)


def test_whitened_pooling_norm_is_the_exact_whitened_norm():
    from rsatoolbox.util.matrix import get_v
    from neuro.compare import double_centred
    _, data, _, brain = _group(np.random.default_rng(10), n_cond=12)
    v = get_v(12, None).toarray()
    exact = np.sqrt(np.einsum("ij,ij->i", brain.vectors, np.linalg.solve(v, brain.vectors.T).T))
    ours = np.linalg.norm(double_centred(brain.vectors), axis=1)
    ratio = ours / exact
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-9)   # proportional: the same normalisation


# ---------------------------------------------------------------------------------------- bootstrap
@pytest.mark.parametrize("ours,theirs", BOOTSTRAPPABLE)
def test_condition_bootstrap_replays_rsatoolbox_exactly(ours, theirs):
    model, data, model_ours, brain = _group(np.random.default_rng(11))
    np.random.seed(3)
    ref = eval_bootstrap_pattern(ModelFixed("truth", model), data, method=theirs, N=15)
    np.random.seed(3)                                          # the same draws rsatoolbox made
    idx = np.stack([np.random.randint(0, brain.n_cond, size=brain.n_cond) for _ in range(15)])
    got = bootstrap(model_ours, brain, ours, condition_indices=idx)
    np.testing.assert_allclose(got.samples[:, 0], ref.evaluations[:, 0], atol=1e-10)
    np.testing.assert_allclose(got.ceiling, ref.noise_ceiling.T, atol=1e-10)


def test_subject_bootstrap_replays_rsatoolbox_exactly():
    model, data, model_ours, brain = _group(np.random.default_rng(12))
    np.random.seed(4)
    ref = eval_bootstrap_rdm(ModelFixed("truth", model), data, method="corr", N=15)
    np.random.seed(4)
    idx = np.stack([np.random.randint(0, brain.n_rdm, size=brain.n_rdm) for _ in range(15)])
    got = bootstrap(model_ours, brain, "pearson", over="subjects", subject_indices=idx)
    np.testing.assert_allclose(got.samples[:, 0], ref.evaluations[:, 0], atol=1e-10)
    np.testing.assert_allclose(got.ceiling, ref.noise_ceiling.T, atol=1e-10)


def test_bootstrap_distribution_matches_rsatoolbox_within_monte_carlo_error():
    model, data, model_ours, brain = _group(np.random.default_rng(13), n_cond=30)
    np.random.seed(0)
    ref = eval_bootstrap_pattern(ModelFixed("truth", model), data, method="spearman", N=300,
                                 boot_noise_ceil=False).evaluations[:, 0]
    got = bootstrap(model_ours, brain, "spearman", n=300, seed=1, ceiling=False).samples[:, 0]
    # sd of a sd estimate from 300 draws is about 4 %; means differ by about sd/sqrt(150)
    assert 0.85 < np.nanstd(got) / np.nanstd(ref) < 1.18
    assert abs(np.nanmean(got) - np.nanmean(ref)) < 0.25 * np.nanstd(ref)


@pytest.mark.parametrize("method", ["spearman", "rho-a", "pearson"])
def test_condition_bootstrap_with_missing_pairs_equals_each_sample_computed_directly(method):
    """A NaN pair (a missing condition pair, in one subject or in the model) is left out of every
    comparison of the sample; the rank-based comparators used to crash on it."""
    _, _, model, brain = _group(np.random.default_rng(14), n_cond=10, n_subj=3)
    brain = RDMs(brain.vectors.copy(), brain.conditions, "correlation")
    model = RDMs(model.vectors.copy(), model.conditions, "correlation", ["truth"])
    brain.vectors[1, 5] = np.nan
    model.vectors[0, 20] = np.nan
    idx = np.random.default_rng(2).integers(0, 10, size=(6, 10))
    got = bootstrap(model, brain, method, condition_indices=idx, ceiling=False).samples[:, 0]
    iu = np.triu_indices(10, 1)
    for k, ci in enumerate(idx):
        a, b = ci[iu[0]], ci[iu[1]]
        x, ys = model.matrices()[0][a, b], brain.matrices()[:, a, b]
        keep = (a != b) & np.isfinite(x) & np.isfinite(ys).all(0)
        expected = compare(x[None, keep], ys[:, keep], method).mean()
        assert got[k] == pytest.approx(expected, abs=1e-10), k


def test_bootstrap_rejects_whitened_condition_resampling_clearly():
    _, _, model, brain = _group(np.random.default_rng(14), n_cond=10)
    with pytest.raises(NeuroError, match="over='subjects'"):
        bootstrap(model, brain, "whitened-cosine", n=5)
    got = bootstrap(model, brain, "whitened-cosine", n=5, over="subjects")
    assert np.isfinite(got.samples).all()


# ------------------------------------------------------------------------------- permutation and FDR
def test_permutation_test_separates_true_and_random_models():
    rng = np.random.default_rng(15)
    _, _, model, brain = _group(rng, n_cond=20)
    random_model = RDMs(rng.uniform(size=(1, model.vectors.shape[1])), model.conditions, "x", ["random"])
    both = RDMs.concat([model, random_model])
    test = permutation_test(both, brain, "spearman", n=400, seed=0)
    assert test.p[0] < 0.01 and test.p[1] > 0.05
    np.testing.assert_allclose(test.observed, compare(both, brain, "spearman").mean(1))
    # the null is a comparison with a relabelled model: replay one permutation by hand
    perm = np.random.default_rng(0).permutation(20)
    m = model.matrices()[0][np.ix_(perm, perm)]
    manual = compare(m[np.triu_indices(20, 1)], brain, "spearman").mean()
    assert np.isclose(test.null[0, 0], manual)


def test_fdr_equals_scipy():
    p = np.random.default_rng(16).uniform(size=30) ** 3
    np.testing.assert_allclose(fdr(p), false_discovery_control(p), atol=1e-12)
    assert np.isnan(fdr(np.array([0.1, np.nan]))[1])


# ---------------------------------------------------------------------------------------- rsa table
def test_rsa_table_on_simulated_study_recovers_planted_structure(tmp_path):
    from neuro.simulate import simulate_study, subject_rdms
    study = simulate_study(seed=1)
    brain = subject_rdms(study, "crossnobis")
    rng = np.random.default_rng(0)
    models = RDMs.concat([study.true_rdm(), compute_rdm(rng.standard_normal((24, 30)), "correlation",
                                                        conditions=study.conditions, name="random")])
    result = neuro.rsa(models, {"sim": brain}, "pearson", n_bootstrap=200, n_permutations=200)
    planted, random_row = result.row("planted", "sim"), result.row("random", "sim")
    assert planted["ci_low"] > random_row["ci_high"]
    assert planted["p_fdr"] < 0.05 < random_row["p_fdr"]
    assert planted["noise_lower"] <= planted["noise_upper"]
    assert result.descriptors["simulated"] is True
    result.save(tmp_path / "rsa.json")
    result.save_csv(tmp_path / "rsa.csv")
    assert "similarity" in (tmp_path / "rsa.csv").read_text().splitlines()[0]


def test_rdms_over_other_conditions_say_which_and_why():
    rng = np.random.default_rng(0)
    brain = compute_rdm(Patterns(rng.standard_normal((6, 30)), [f"img{i}" for i in range(6)]), "correlation")
    layer = compute_rdm(rng.standard_normal((6, 20)), "correlation", name="conv1")     # labelled 0..5
    with pytest.raises(NeuroError, match="only in the first: 'img0', 'img1', 'img2', 'img3' and 2 more; only in the "
                                         r"second: '0', '1', '2', '3' and 2 more; RDMs of activations .* conditions="):
        compare(brain, layer)
    named = compute_rdm(rng.standard_normal((6, 20)), "correlation", conditions=brain.conditions, name="conv1")
    assert compare(brain, named).shape == (1, 1)


def test_subject_bootstrap_with_kendall_survives_resamples_of_one_subject():
    """A resample holding copies of one subject has no leave-one-out ceiling: NaN for that sample, as
    the fast comparators give, not an error."""
    _, _, model, brain = _group(np.random.default_rng(15), n_cond=8, n_subj=3)
    idx = np.array([[0, 1, 2], [1, 1, 1], [2, 0, 0], [0, 0, 0]])
    for method in ("kendall-tau-b", "kendall-tau-a"):
        got = bootstrap(model, brain, method, over="subjects", subject_indices=idx)
        ref = bootstrap(model, brain, "spearman", over="subjects", subject_indices=idx)
        np.testing.assert_array_equal(np.isnan(got.ceiling[:, 0]), [False, True, False, True])
        np.testing.assert_array_equal(np.isnan(got.ceiling), np.isnan(ref.ceiling))
        assert np.isfinite(got.samples).all()


def test_rsa_checks_its_arguments_and_says_what_it_bootstrapped():
    _, _, model, brain = _group(np.random.default_rng(16), n_cond=8, n_subj=3)
    for kwargs, message in [({"level": 95}, r"a fraction: 0.95 for 95%"), ({"n_bootstrap": -5}, "n_bootstrap must be"),
                            ({"n_permutations": 2.5}, "n_permutations must be"),
                            ({"over": "subject", "n_bootstrap": 0}, "over must be")]:
        with pytest.raises(NeuroError, match=message):
            rsa(model, brain, **{"n_permutations": 10, **kwargs})
    with pytest.raises(NeuroError, match="models must be an RDMs object"):
        rsa(model.vectors, brain)
    with pytest.raises(NeuroError, match="brain must be"):
        rsa(model, brain.vectors)
    one = RDMs(brain.vectors[:1], brain.conditions, "correlation")
    result = rsa([model, model], one, over="subjects", n_bootstrap=20, n_permutations=10)
    assert [r["bootstrap_over"] for r in result.rows] == ["conditions", "conditions"]


def test_compute_rdm_refuses_settings_it_would_ignore():
    rng = np.random.default_rng(17)
    patterns = Patterns(rng.standard_normal((12, 20)), [f"c{i % 4}" for i in range(12)],
                        runs=[i // 4 for i in range(12)])
    noise = noise_from_patterns(patterns, "diag")
    assert compute_rdm(patterns, "crossnobis", noise=noise).descriptors["noise"] == "diag"
    with pytest.raises(NeuroError, match="the 'euclidean' RDM takes no noise model"):
        compute_rdm(patterns, "euclidean", noise=noise)
    with pytest.raises(NeuroError, match="carries its own conditions"):
        compute_rdm(patterns, "correlation", conditions=[f"d{i}" for i in range(12)])


def test_rdms_refuse_repeated_conditions_similarities_and_p_values_out_of_range():
    with pytest.raises(NeuroError, match=r"condition names repeat \('a'\)"):
        RDMs(np.ones(3), ["a", "a", "b"], "euclidean")
    similarity = np.corrcoef(np.random.default_rng(18).standard_normal((5, 9)))
    with pytest.raises(NeuroError, match="diagonal is not zero: a similarity matrix"):
        RDMs.from_matrices(similarity)
    assert RDMs.from_matrices(1 - similarity).n_cond == 5
    with pytest.raises(NeuroError, match="p-values must lie in"):
        fdr(np.array([1.5, 0.01]))


def test_euclidean_rdm_keeps_its_digits_under_a_large_offset():
    x = np.random.default_rng(19).standard_normal((10, 40))
    plain = compute_rdm(x, "euclidean").vectors
    np.testing.assert_allclose(compute_rdm(x + 1e5, "euclidean").vectors, plain, rtol=1e-9, atol=1e-9)


def test_subset_conditions_takes_a_mask_checks_indices_and_concat_says_mixed_measures():
    rng = np.random.default_rng(20)
    rdm = compute_rdm(rng.standard_normal((5, 10)), "correlation", conditions=list("abcde"))
    mask = np.array([True, False, True, False, True])
    assert list(rdm.subset_conditions(mask).conditions) == ["a", "c", "e"]
    np.testing.assert_array_equal(rdm.subset_conditions(mask).vectors, rdm.subset_conditions(["a", "c", "e"]).vectors)
    with pytest.raises(NeuroError, match=r"indices must lie in 0..4"):
        rdm.subset_conditions([0, 7])
    with pytest.raises(NeuroError, match=r"unknown conditions \['z'\]; the RDM has \['a', 'b', 'c', 'd', 'e'\]"):
        rdm.subset_conditions(["z"])
    other = compute_rdm(rng.standard_normal((5, 10)), "euclidean", conditions=list("abcde"))
    assert RDMs.concat([rdm, other]).measure == "mixed" and RDMs.concat([rdm, rdm]).measure == "correlation"
