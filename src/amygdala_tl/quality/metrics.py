"""Per-concept quality metrics of docs/methods.md, computed on CPU in fp32/fp64.

Alignment is measured against the concept's own contrast: story i's alignment is the cosine of
(p_i - mean(N)) with the direction, so a story pointing away from the others is a mislabel candidate.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Bool, Float
from torch import Tensor

RIDGE_LAMBDA = 0.01


def nullable(value: float | Tensor) -> float | None:
    """Strict JSON: undefined metrics are null, never NaN."""
    value = float(value)
    return value if math.isfinite(value) else None


def variance_ratios(positives: Float[Tensor, "n_pos d_model"]) -> list[float]:
    """Explained-variance ratios of the centred positives' principal components (1.0 for one story)."""
    if positives.shape[0] < 2:
        return [1.0]
    centred = positives.double() - positives.double().mean(0)
    gram = centred @ centred.T if centred.shape[0] <= centred.shape[1] else centred.T @ centred  # the smaller side
    energy = torch.linalg.eigvalsh(gram).flip(0).clamp_min(0)  # the squared singular values, largest first
    return (energy / energy.sum().clamp_min(1e-300)).tolist()


def story_statistics(
    positives: Float[Tensor, "n_pos d_model"], negatives_mean: Float[Tensor, " d_model"], direction: Float[Tensor, " d_model"]
) -> tuple[dict, Float[Tensor, " n_pos"]]:
    """Projections of each positive on the direction, and each positive's alignment (see module doc)."""
    v = direction.double()
    projections = positives.double() @ v
    contrasts = positives.double() - negatives_mean.double()
    alignment = (contrasts @ v) / contrasts.norm(dim=-1).clamp_min(1e-12)
    several = positives.shape[0] > 1
    stats = {
        "story_projection_mean": float(projections.mean()),
        "story_projection_std": nullable(float(projections.std())) if several else None,
        "story_projection_min": float(projections.min()),
        "story_projection_max": float(projections.max()),
        "story_alignment_mean": float(alignment.mean()),
        "story_alignment_std": nullable(alignment.std()) if several else None,
    }
    return stats, alignment.float()


def neuron_cosines(w_out: Float[Tensor, "d_mlp d_model"], direction: Float[Tensor, " d_model"]) -> Float[Tensor, " d_mlp"]:
    rows = w_out.double()
    return ((rows @ direction.double()) / rows.norm(dim=-1).clamp_min(1e-12)).float()


def best_neurons(w_out: Float[Tensor, "d_mlp d_model"] | None, direction: Float[Tensor, " d_model"]) -> dict:
    """MLP output neurons whose W_out row is most (anti-)parallel to the direction, sign kept."""
    if w_out is None:
        return {"best_neuron_idx": None, "best_neuron_cosine": None, "top5_neurons": None}
    cosines = neuron_cosines(w_out, direction)
    order = torch.argsort(cosines.abs(), descending=True)[:5]
    return {
        "best_neuron_idx": int(order[0]),
        "best_neuron_cosine": float(cosines[order[0]]),
        "top5_neurons": [[int(i), float(cosines[i])] for i in order],
    }


def cosine_matrix(directions: Float[Tensor, "n_concepts d_model"]) -> Float[Tensor, "n_concepts n_concepts"]:
    unit = directions.double() / directions.double().norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (unit @ unit.T).float()


def nearest_concepts(cosines: Float[Tensor, "n_concepts n_concepts"], concepts: list[str], index: int, k: int = 5) -> list[list]:
    row = cosines[index].clone()
    row[index] = -float("inf")
    order = torch.argsort(row, descending=True)[: min(k, len(concepts) - 1)]
    return [[concepts[i], float(row[i])] for i in order]


def linear_combination(directions: Float[Tensor, "n_concepts d_model"], concepts: list[str], index: int, k: int = 5) -> dict:
    """Ridge (lambda 0.01, no intercept) of one concept's direction on all the others, over the d_model
    coordinates as samples: R^2 > 0.9 means redundant. Solved in the (n_concepts - 1)-sized normal equations
    (F^T F + lambda I) w = F^T t, what sklearn's Ridge solves (a test holds it to Ridge and r2_score), without
    its per-call validation: the report fits one per concept and layer."""
    others = [i for i in range(len(concepts)) if i != index]
    if not others:
        return {"r_squared": None, "residual_norm": None, "top_contributors": []}
    features = directions[others].double().T  # d_model samples x (n_concepts - 1) features
    target = directions[index].double()
    coef = torch.linalg.solve(features.T @ features + RIDGE_LAMBDA * torch.eye(len(others), dtype=torch.float64), features.T @ target)
    residual = target - features @ coef
    total = ((target - target.mean()) ** 2).sum()
    order = sorted(range(len(others)), key=lambda j: -abs(float(coef[j])))[:k]
    return {
        "r_squared": nullable(1 - (residual**2).sum() / total) if total > 0 else None,
        "residual_norm": float((residual**2).sum() ** 0.5),
        "top_contributors": [[concepts[others[j]], float(coef[j])] for j in order],
    }


def concept_metrics(
    acts: Float[Tensor, "n_texts d_model"],
    positive: Bool[Tensor, " n_texts"],
    direction: Float[Tensor, " d_model"],
    w_out: Float[Tensor, "d_mlp d_model"] | None,
) -> tuple[dict, Float[Tensor, " n_pos"]]:
    """One concept at one layer: variance ratios, story projections/alignments, best neurons."""
    ratios = variance_ratios(acts[positive])
    n_negatives = int((~positive).sum())
    negatives_mean = (acts.sum(0, dtype=torch.float64) - acts[positive].sum(0, dtype=torch.float64)) / max(n_negatives, 1)
    stats, alignment = story_statistics(acts[positive], negatives_mean, direction)
    block = {"top3_variance_ratios": ratios[:3], "first_pc_variance_ratio": ratios[0], **stats, **best_neurons(w_out, direction)}
    return block, alignment
