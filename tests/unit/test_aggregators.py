"""Aggregators (mean, pca, logistic, logistic_l1): unit norm, sign, what each one finds."""

from __future__ import annotations

import pytest
import torch

from amygdala_tl.directions.pooled import diff_of_means
from amygdala_tl.directions.registry import METHODS, MethodInputs, fit_layer

AGGREGATORS = ("mean", "pca", "logistic", "logistic_l1")


def aggregate(method, acts, membership, partner=None, **params):
    """One layer's directions through the method registry, as every pipeline gets them."""
    partner = partner if partner is not None else torch.full((acts.shape[0],), -1)
    return fit_layer(METHODS[method].bind(params), acts, membership, MethodInputs(partner))


def data(seed=0, d=40, n_pos=12, n_neg=60):
    generator = torch.Generator().manual_seed(seed)
    signal = torch.zeros(d)
    signal[3] = 1.0
    pos = torch.randn(n_pos, d, generator=generator) + 2.5 * signal
    neg = torch.randn(n_neg, d, generator=generator)
    acts = torch.cat([pos, neg])
    membership = torch.zeros(1, n_pos + n_neg, dtype=torch.bool)
    membership[0, :n_pos] = True
    return acts, membership, signal


@pytest.mark.parametrize("method", AGGREGATORS)
def test_unit_norm_sign_aligned_and_finds_the_planted_dimension(method):
    acts, membership, signal = data()
    direction = aggregate(method, acts, membership)[0]
    assert direction.norm() == pytest.approx(1.0, abs=1e-5)
    assert float(direction @ diff_of_means(acts, membership)[0].float()) > 0
    assert int(direction.abs().argmax()) == 3 and float(direction @ signal) > 0.5


def test_mean_is_the_unit_diff_of_means_against_every_non_member_by_hand():
    """Two concepts and one baseline text (in no concept) in 2-D. A's negatives are B's positives AND the
    baseline: mean (3, 2) - mean((-1,-3), (1,-3), (-6,-3)) = (3, 2) - (-2, -3) = (5, 5).
    B: mean (0, -3) - mean((2,3), (4,1), (-6,-3)) = (0, -3) - (0, 1/3) = (0, -10/3)."""
    acts = torch.tensor([[2.0, 3.0], [4.0, 1.0], [-1.0, -3.0], [1.0, -3.0], [-6.0, -3.0]])
    membership = torch.tensor([[True, True, False, False, False], [False, False, True, True, False]])
    expected = torch.tensor([[2**-0.5, 2**-0.5], [0.0, -1.0]])
    torch.testing.assert_close(aggregate("mean", acts, membership), expected, atol=1e-6, rtol=0)


def test_logistic_l1_is_sparse_and_l2_is_not():
    acts, membership, _ = data()
    l1 = aggregate("logistic_l1", acts, membership, c=0.05)[0]
    l2 = aggregate("logistic", acts, membership)[0]
    assert (l1.abs() < 1e-9).sum() > 30 and (l2.abs() < 1e-9).sum() == 0


def test_pca_uses_the_paired_baseline_when_there_is_one():
    d = 6
    baseline = torch.tensor([5.0, 5.0, 0, 0, 0, 0])
    framings = baseline + torch.tensor([[0, 0, 1.0, 0, 0, 0], [0, 0, 2.0, 0, 0, 0]])  # pure shift along dim 2
    others = torch.randn(5, d, generator=torch.Generator().manual_seed(1))
    acts = torch.cat([framings, baseline[None], others])
    membership = torch.zeros(1, 8, dtype=torch.bool)
    membership[0, :2] = True
    partner = torch.tensor([2, 2, -1, -1, -1, -1, -1, -1])
    direction = aggregate("pca", acts, membership, partner)[0]
    assert abs(float(direction[2])) == pytest.approx(1.0, abs=1e-6)


def test_lda_equals_sklearns_lda_when_shrinkage_vanishes():
    """With many texts per dimension, Ledoit-Wolf shrinks (almost) nothing, and our whitened diff-of-means
    is sklearn's LinearDiscriminantAnalysis(solver='lsqr') coefficient: the pooled within-class covariance
    (sklearn: class covariances averaged by priors) solved against the class-mean difference. The negatives
    have a non-zero mean, so a covariance of texts left uncentred (or centred on zero) is caught."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    generator = torch.Generator().manual_seed(3)
    d, n_pos, n_neg = 6, 3000, 5000
    mixing = torch.eye(d) + 0.6 * torch.randn(d, d, generator=generator)  # correlated, well-conditioned features
    pos = torch.randn(n_pos, d, generator=generator) @ mixing + 0.5
    neg = torch.randn(n_neg, d, generator=generator) @ mixing + torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0, -1.0])  # a non-zero mean
    acts = torch.cat([pos, neg])
    membership = torch.zeros(1, n_pos + n_neg, dtype=torch.bool)
    membership[0, :n_pos] = True
    ours = aggregate("lda", acts, membership)[0].double()
    reference = LinearDiscriminantAnalysis(solver="lsqr").fit(acts.double().numpy(), membership[0].numpy()).coef_[0]
    reference = torch.from_numpy(reference) / torch.linalg.norm(torch.from_numpy(reference))
    assert float(ours @ reference) == pytest.approx(1.0, abs=3e-3)  # what is left is the shrinkage (intensity ~1e-3)
    pooled = diff_of_means(acts, membership)[0]
    assert float(ours @ (pooled / pooled.norm())) < 0.95  # whitening really moved it away from diff-of-means


def test_lda_shrinks_toward_diff_of_means_when_texts_are_few():
    """d > n: the within-class covariance is singular; Ledoit-Wolf shrinkage keeps the solve defined and
    the direction stays a finite unit vector aligned with diff-of-means."""
    acts, membership, signal = data(d=80, n_pos=6, n_neg=20)
    direction = aggregate("lda", acts, membership)[0]
    assert torch.isfinite(direction).all() and direction.norm() == pytest.approx(1.0, abs=1e-5)
    assert float(direction @ diff_of_means(acts, membership)[0].float()) > 0 and float(direction @ signal) > 0.3


@pytest.mark.parametrize("method", ["pooled", "lda", "logistic"])
def test_denoising_removes_the_neutral_texts_top_components(method):
    """With denoise_k, a nuisance direction shared by neutral texts and stories is projected out: the learned
    direction is orthogonal to the neutral texts' top principal components and still finds the planted one."""
    from amygdala_tl.directions.registry import fit_layer, neutral_components

    generator = torch.Generator().manual_seed(5)
    acts, membership, signal = data(seed=5, d=40, n_pos=12, n_neg=60)
    nuisance = torch.zeros(40)
    nuisance[7] = 1.0
    acts = acts + 6 * torch.randn(acts.shape[0], 1, generator=generator) * nuisance  # style variance, no concept
    neutral = torch.zeros(acts.shape[0], dtype=torch.bool)
    neutral[-20:] = True  # the last negatives play the scenario baselines
    inputs = MethodInputs(torch.full((acts.shape[0],), -1), neutral=neutral, denoise_k=2)
    direction = fit_layer(METHODS[method], acts, membership, inputs)[0].double()
    basis = neutral_components(acts, neutral, 2)
    plain = fit_layer(METHODS[method], acts, membership, MethodInputs(torch.full((acts.shape[0],), -1)))[0].double()
    assert (direction @ basis).abs().max() < 1e-6
    if method == "pooled":  # diff-of-means reads the nuisance; lda and logistic discount it on their own
        assert abs(float(direction[7])) < 0.5 * abs(float(plain[7]))
    assert direction.norm() == pytest.approx(1.0, abs=1e-6) and float(direction @ signal.double()) > 0.5
