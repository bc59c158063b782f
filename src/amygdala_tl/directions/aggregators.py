"""The steering-vectors library's aggregators, for users who want them (docs/methods.md, "aggregators").

Each maps pooled activations and membership to unit directions, sign-aligned with the pooled
diff-of-means (so "positive" always means "more of the concept"):
- mean: the pooled diff-of-means itself.
- pca: first principal component (uncentred, as steering-vectors does) of the concept's deltas:
  a paired framing minus its scenario's baseline, an unpaired story minus the negatives' mean.
- logistic / logistic_l1: weight vector of a class-balanced logistic regression of P vs N (sklearn),
  L2 or L1 (sparse, denoising); activations are divided by one global scale (their std) so the
  weights stay in the residual basis.
"""

from __future__ import annotations

import warnings

import torch
from jaxtyping import Bool, Float, Int
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from torch import Tensor

from .pooled import diff_of_means, normalize

DEFAULT_L1_C = 0.05


def align(directions: Float[Tensor, "n_concepts d"], reference: Float[Tensor, "n_concepts d"]) -> Float[Tensor, "n_concepts d"]:
    signs = torch.sign((directions.double() * reference.double()).sum(-1))
    signs[signs == 0] = 1
    return normalize(directions.double() * signs[:, None]).float()


def pca_directions(acts, membership, partner: Int[Tensor, " n_texts"]) -> Float[Tensor, "n_concepts d"]:
    """`partner[t]` is the index of text t's paired baseline, or -1 (then the negatives' mean is used)."""
    x = acts.double()
    out = []
    for c in range(membership.shape[0]):
        positives = membership[c].nonzero().flatten()
        negative_mean = x[~membership[c]].mean(0)
        deltas = torch.stack([x[t] - (x[partner[t]] if partner[t] >= 0 else negative_mean) for t in positives.tolist()])
        _, _, vh = torch.linalg.svd(deltas, full_matrices=False)
        out.append(vh[0])
    return torch.stack(out)


def logistic_directions(acts, membership, penalty: str, l1_c: float = DEFAULT_L1_C) -> Float[Tensor, "n_concepts d"]:
    x = acts.double().numpy()
    x = x / x.std()  # one global scale: features ~unit size, directions unchanged
    out = []
    for c in range(membership.shape[0]):
        y = membership[c].numpy()
        if penalty == "l1":
            model = LogisticRegression(l1_ratio=1.0, C=l1_c, solver="liblinear", class_weight="balanced", max_iter=2000)
        else:
            model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x, y)
        out.append(torch.from_numpy(model.coef_[0].copy()))
    return torch.stack(out)


def mean_directions(acts: Float[Tensor, "n_texts d"], membership: Bool[Tensor, "n_concepts n_texts"]) -> Float[Tensor, "n_concepts d"]:
    """steering-vectors' mean aggregator: the unit diff-of-means (the pooled method, one layer)."""
    return normalize(diff_of_means(acts, membership)).float()


def pca_aligned(acts, membership, partner: Int[Tensor, " n_texts"] | None = None) -> Float[Tensor, "n_concepts d"]:
    partner = partner if partner is not None else torch.full((acts.shape[0],), -1)
    return align(pca_directions(acts, membership, partner), diff_of_means(acts, membership))


def logistic_aligned(acts, membership, penalty: str = "l2", l1_c: float = DEFAULT_L1_C) -> Float[Tensor, "n_concepts d"]:
    return align(logistic_directions(acts, membership, penalty, l1_c), diff_of_means(acts, membership))
