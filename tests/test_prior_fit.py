"""The prior fit on stage-1 latents: EM mixture (checked against scikit-learn) and single Gaussian."""
import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture

import xvae_fast as xf
from xvae_fast.errors import DataError
from xvae_fast.prior_fit import fit_mixture, fit_single, floor_weights


def blobs(n=600, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [6.0, 0.0, -3.0], [0.0, 7.0, 3.0]])
    stds = np.array([[0.5, 1.0, 0.3], [1.0, 0.4, 0.6], [0.7, 0.7, 0.2]])
    lab = np.arange(n) % 3
    return centres[lab] + rng.standard_normal((n, 3)) * stds[lab], centres, stds


def test_mixture_recovers_known_components_and_reports_the_fit():
    x, centres, stds = blobs()
    fit = fit_mixture(torch.tensor(x), seed=0, n_init=3)
    p = fit.prior
    assert isinstance(p, xf.MixturePrior) and p.num_components == 3 and p.latent_dim == 3
    order = [int(np.argmin(np.linalg.norm(p.means.numpy() - c, axis=1))) for c in centres]
    assert sorted(order) == [0, 1, 2]
    np.testing.assert_allclose(p.means.numpy()[order], centres, atol=0.15)
    np.testing.assert_allclose(p.stds.numpy()[order], stds, rtol=0.15)
    np.testing.assert_allclose(p.weights.numpy(), [1 / 3] * 3, atol=0.01)
    r = fit.report
    assert r["converged"] and 1 <= r["n_iter"] <= 200 and r["n_init"] == 3
    assert np.isfinite(r["log_likelihood"]) and r["components"] == 3


def test_mixture_matches_scikit_learn_reference():
    x, _, _ = blobs(seed=1)
    fit = fit_mixture(x, seed=5, n_init=2, var_floor=1e-4, weight_floor=1e-3)
    floor = 1e-4 * x.var(0).mean()
    gm = GaussianMixture(3, covariance_type="diag", reg_covar=floor, n_init=2, random_state=5,
                         tol=1e-3, max_iter=200).fit(x)
    np.testing.assert_allclose(fit.prior.means.numpy(), gm.means_, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fit.prior.stds.numpy(), np.sqrt(gm.covariances_), rtol=1e-5)
    assert fit.report["log_likelihood"] == pytest.approx(gm.score(x), rel=1e-9)
    # repeatable: same seed, same prior
    again = fit_mixture(x, seed=5, n_init=2)
    assert torch.equal(again.prior.means, fit.prior.means)


def test_variance_floor_keeps_a_constant_coordinate_valid():
    x, _, _ = blobs(seed=2)
    x[:, 1] = 4.0  # a dead latent coordinate: zero variance
    fit = fit_mixture(x, seed=0, var_floor=1e-3)
    assert (fit.prior.stds > 0).all() and torch.isfinite(fit.prior.stds).all()
    assert fit.prior.stds[:, 1].min() >= np.sqrt(fit.report["variance_floor"]) * 0.999
    single = fit_single(x, var_floor=1e-3)
    assert single.prior.stds[0, 1] > 0 and single.report["floored_coordinates"] == 1


def test_weight_floor_renormalises_without_zeros():
    w = floor_weights(np.array([0.7, 0.3, 0.0, 1e-9]), 1e-3)
    assert (w >= 1e-3 * 0.999).all() and w.sum() == pytest.approx(1.0, abs=1e-12)
    assert w[0] > w[1] > w[2]
    # a mixture with more components than clusters still gets no zero weight
    x, _, _ = blobs(n=300, seed=3)
    fit = fit_mixture(x, n_components=3, seed=0, weight_floor=0.05)
    assert fit.prior.weights.min() >= 0.05 * 0.999


def test_single_is_the_per_coordinate_mean_and_std():
    x, _, _ = blobs(seed=4)
    fit = fit_single(torch.tensor(x))
    assert fit.prior.num_components == 1
    np.testing.assert_allclose(fit.prior.means[0].numpy(), x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(fit.prior.stds[0].numpy(), x.std(0), rtol=1e-5)


def test_bad_latents_give_clear_errors():
    with pytest.raises(DataError, match="at least 6 stage-1 latents"):
        fit_mixture(np.zeros((5, 3)))
    bad = np.ones((50, 3))
    bad[7, 2] = np.nan
    with pytest.raises(DataError, match="NaN or inf"):
        fit_mixture(bad)
    with pytest.raises(DataError, match=r"\(N, K\)"):
        fit_single(np.zeros(10))
