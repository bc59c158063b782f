"""Whitened diff-of-means (linear discriminant analysis with shrinkage): Sigma^-1 (mean(P) - mean(N)).

Sigma is the within-class covariance: every text minus the mean of its own class (each concept's
positives are a class, the scenario baselines another), pooled over classes and shrunk toward a
scaled identity by sklearn's Ledoit-Wolf estimator (no tuning parameter; d can exceed n). Whitening
discounts the directions along which stories vary for reasons that are not the concept (narrator,
setting, length), which diff-of-means alone reads as signal. fp64 throughout; unit rows,
sign-aligned with the pooled diff-of-means.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from sklearn.covariance import LedoitWolf
from torch import Tensor

from .aggregators import align
from .pooled import diff_of_means


def within_class_residuals(
    acts: Float[Tensor, "n_texts d_model"], membership: Bool[Tensor, "n_concepts n_texts"]
) -> Float[Tensor, "n_texts d_model"]:
    """Each text minus its class mean; texts that are no concept's positive (baselines) form one class."""
    x = acts.double()
    classes = torch.cat([membership, (~membership.any(0))[None]]).double()  # [C + 1, n_texts], one 1 per column
    counts = classes.sum(-1, keepdim=True).clamp_min(1)
    means = (classes @ x) / counts
    return x - classes.T @ means


def shrunk_covariance(residuals: Float[Tensor, "n_texts d_model"]) -> Float[Tensor, "d_model d_model"]:
    return torch.from_numpy(LedoitWolf(assume_centered=True, store_precision=False).fit(residuals.numpy()).covariance_)


def lda_directions(acts: Float[Tensor, "n_texts d_model"], membership: Bool[Tensor, "n_concepts n_texts"]) -> Float[Tensor, "n_concepts d_model"]:
    diff = diff_of_means(acts, membership)
    return whiten(shrunk_covariance(within_class_residuals(acts, membership)), diff)


def whiten(covariance: Float[Tensor, "d_model d_model"], diff: Float[Tensor, "n_concepts d_model"]) -> Float[Tensor, "n_concepts d_model"]:
    """Sigma^-1 diff, unit rows aligned with diff; a vanishing ridge keeps the solve defined when every text is
    identical (then diff is 0 and extract refuses it)."""
    ridge = 1e-12 * max(float(covariance.trace()) / covariance.shape[0], 1e-200)
    whitened = torch.linalg.solve(covariance + ridge * torch.eye(covariance.shape[0], dtype=covariance.dtype), diff.T).T
    return align(whitened, diff)


class LdaFolds:
    """`lda_directions` of the texts outside any held-out set, without refitting from scratch: the layer's Gram
    matrix, class sums and squared norms are computed once, and each fold subtracts its own texts' share. The
    Ledoit-Wolf shrinkage is sklearn's `ledoit_wolf_shrinkage` (assume_centered) written in those statistics:
    trace and Frobenius norm of the scatter, and the sum of each residual's squared norm squared. Exact (fp64),
    and a fold costs O(n_held d^2 + n d C + d^3) instead of the O(n d^2) passes and pseudo-inverse of a refit,
    which made cross-validation the dearest step of an all-layer extract."""

    def __init__(self, acts: Float[Tensor, "n_texts d_model"], membership: Bool[Tensor, "n_concepts n_texts"]):
        self.x = acts.double()
        self.n_concepts = membership.shape[0]
        self.classes = torch.cat([membership, (~membership.any(0))[None]]).double()  # [C + 1, n_texts], one 1 per column
        self.label = self.classes.argmax(0)
        self.gram = self.x.T @ self.x
        self.class_sums = self.classes @ self.x
        self.squared_norms = (self.x * self.x).sum(-1)

    def without(self, held: Bool[Tensor, " n_texts"]) -> Float[Tensor, "n_concepts d_model"]:
        return whiten(*self.statistics_without(held))

    def statistics_without(self, held: Bool[Tensor, " n_texts"]) -> tuple[Float[Tensor, "d_model d_model"], Float[Tensor, "n_concepts d_model"]]:
        """(the shrunk within-class covariance, the diff-of-means) of the texts outside `held`."""
        kept, x_held = ~held, self.x[held]
        n, d = int(kept.sum()), self.x.shape[1]
        counts = self.classes[:, kept].sum(-1)
        sums = self.class_sums - self.classes[:, held] @ x_held
        means = sums / counts.clamp_min(1)[:, None]
        concepts, total = slice(0, self.n_concepts), sums.sum(0)
        n_pos = counts[concepts, None]
        if (n_pos == 0).any() or (n_pos == n).any():
            raise ValueError("every concept needs at least one positive and one negative text")
        diff = sums[concepts] / n_pos - (total - sums[concepts]) / (n - n_pos)
        scatter = (self.gram - x_held.T @ x_held - (means.T * counts) @ means) / n  # within-class covariance, assume_centered
        label = self.label[kept]
        residual_norms = self.squared_norms[kept] - 2 * (self.x[kept] * means[label]).sum(-1) + (means * means).sum(-1)[label]
        trace = float(scatter.trace())
        mu, delta_ = trace / d, float((scatter * scatter).sum())
        delta = (delta_ - 2 * mu * trace + d * mu**2) / d
        beta = min((float((residual_norms * residual_norms).sum()) / n - delta_) / (d * n), delta)
        shrinkage = 0.0 if beta == 0 else beta / delta
        return (1 - shrinkage) * scatter + shrinkage * mu * torch.eye(d, dtype=scatter.dtype), diff
