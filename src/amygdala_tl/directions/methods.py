"""Every direction method behind one interface: learn all layers, and refit for held-out evaluation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..capture import Activations
from .aggregators import AGGREGATORS, DEFAULT_L1_C, aggregate
from .pooled import diff_of_means, pooled_directions
from .subspace import SubspaceCollector, subspace_directions

METHODS = ("pooled", "subspace", *AGGREGATORS)


@dataclass
class MethodContext:
    """What a method may need besides pooled activations and membership."""

    method: str
    partner: Int[Tensor, " n_texts"]  # paired framing -> its baseline (pca)
    collector: SubspaceCollector | None = None  # per-story bases (subspace)
    eigen_k: int = 5
    l1_c: float = DEFAULT_L1_C


def learn(context: MethodContext, acts: Activations, membership: Bool[Tensor, "n_concepts n_texts"]) -> tuple[Float[Tensor, "n_layers n_concepts d"], dict | None]:
    """Directions at every captured layer (+ the subspace eigenvalue report for the subspace method)."""
    if context.method == "pooled":
        return pooled_directions(acts.resid, membership), None
    if context.method == "subspace":
        return learn_subspace(context, acts, membership)
    directions = [aggregate(context.method, acts.resid[slot], membership, context.partner, context.l1_c) for slot in range(len(acts.layers))]
    return torch.stack(directions), None


def learn_subspace(context: MethodContext, acts: Activations, membership) -> tuple[Tensor, dict]:
    directions, report = [], [{} for _ in range(membership.shape[0])]
    for slot, layer in enumerate(acts.layers):
        result = subspace_directions(context.collector.bases[layer], membership, diff_of_means(acts.resid[slot], membership), context.eigen_k)
        directions.append(result.directions)
        for c in range(membership.shape[0]):
            gap = float(result.eigengap[c])
            report[c][str(layer)] = {"eigvals": [round(float(v), 6) for v in result.eigvals[c]], "eigengap": gap if math.isfinite(gap) else None}
    return torch.stack(directions), {"eigen_k": context.eigen_k, "by_concept_index": report}


def heldout_fit(context: MethodContext, layers: list[int]):
    """The refit function for grouped leave-one-out; None for pooled (exact closed-form leave-one-out)."""
    if context.method == "pooled":
        return None

    def fit(slot: int, acts: Tensor, membership: Tensor, kept: Tensor) -> Tensor:
        if context.method == "subspace":
            bases = [context.collector.bases[layers[slot]][i] for i in kept.tolist()]
            return subspace_directions(bases, membership, diff_of_means(acts, membership), context.eigen_k).directions
        remap = torch.full((len(context.partner),), -1, dtype=torch.long)
        remap[kept] = torch.arange(len(kept))
        partner = torch.where(context.partner[kept] >= 0, remap[context.partner[kept].clamp_min(0)], torch.tensor(-1))
        return aggregate(context.method, acts, membership, partner, context.l1_c)

    return fit
