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
    return torch.from_numpy(LedoitWolf(assume_centered=True).fit(residuals.numpy()).covariance_)


def lda_directions(acts: Float[Tensor, "n_texts d_model"], membership: Bool[Tensor, "n_concepts n_texts"]) -> Float[Tensor, "n_concepts d_model"]:
    diff = diff_of_means(acts, membership)
    covariance = shrunk_covariance(within_class_residuals(acts, membership))
    # a vanishing ridge keeps the solve defined when every text is identical (then diff is 0 and extract refuses it)
    ridge = 1e-12 * max(float(covariance.trace()) / covariance.shape[0], 1e-200)
    whitened = torch.linalg.solve(covariance + ridge * torch.eye(covariance.shape[0], dtype=covariance.dtype), diff.T).T
    return align(whitened, diff)
