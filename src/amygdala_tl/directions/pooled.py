"""Pooled diff-of-means (contrastive activation addition): v = normalize(mean(P) - mean(N)).

All concepts at once from one pass over the texts: a concept's negatives are the complement of its
positives, so mean(N) = (sum of all - sum of P) / (n - |P|). Sums run in fp64.
"""

from __future__ import annotations

from einops import einsum, reduce
from jaxtyping import Bool, Float
from torch import Tensor


def class_means(
    acts: Float[Tensor, "n_texts d_model"], membership: Bool[Tensor, "n_concepts n_texts"]
) -> tuple[Float[Tensor, "n_concepts d_model"], Float[Tensor, "n_concepts d_model"]]:
    """(mean of each concept's positives, mean of its negatives), fp64."""
    acts64 = acts.double()
    member = membership.double()
    pos_sum = einsum(member, acts64, "concept text, text d -> concept d")
    total = reduce(acts64, "text d -> d", "sum")
    n_pos = member.sum(-1, keepdim=True)
    n_neg = acts.shape[0] - n_pos
    if (n_pos == 0).any() or (n_neg == 0).any():
        raise ValueError("every concept needs at least one positive and one negative text")
    return pos_sum / n_pos, (total - pos_sum) / n_neg


def diff_of_means(acts: Float[Tensor, "n_texts d_model"], membership: Bool[Tensor, "n_concepts n_texts"]) -> Float[Tensor, "n_concepts d_model"]:
    """Unnormalized mean(P) - mean(N) per concept (fp64): the held-out code reuses it."""
    pos_mean, neg_mean = class_means(acts, membership)
    return pos_mean - neg_mean


def normalize(vectors: Float[Tensor, "... d"], eps: float = 1e-12) -> Float[Tensor, "... d"]:
    return vectors / vectors.norm(dim=-1, keepdim=True).clamp_min(eps)
