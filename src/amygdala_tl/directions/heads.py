"""Per-head decomposition from `blocks.<l>.attn.hook_z` (docs/methods.md, "per-head").

Per concept, layer and head h (query heads, so grouped-query attention needs nothing special):
diff_h = mean(P_h) - mean(N_h), raw_norm_h = |diff_h|, selectivity_h = raw_norm_h / max(|std(N_h)|, 1e-6)
with std the per-dim (sample) std over negatives. head_concentration = sum of raw_norm over the top
heads / sum over all: > 0.5 means a sparse head circuit, ~top_k / n_heads an evenly spread one.
Beyond that: each head's direct write into the concept's residual direction, (diff_h @ W_O[l,h]) . v.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from einops import einsum
from jaxtyping import Bool, Float
from torch import Tensor

from ..capture.activations import Activations

TOP_HEADS = 10
STD_FLOOR = 1e-6


@dataclass
class HeadStats:
    raw_norm: Float[Tensor, "n_concepts n_heads"]
    selectivity: Float[Tensor, "n_concepts n_heads"]
    diff: Float[Tensor, "n_concepts n_heads d_head"]


def head_stats(z: Float[Tensor, "n_texts n_heads d_head"], membership: Bool[Tensor, "n_concepts n_texts"]) -> HeadStats:
    """All concepts at once from per-text pooled z; sums in fp64."""
    z64, member = z.double(), membership.double()
    n_texts = z.shape[0]
    n_pos = member.sum(-1)[:, None, None]
    n_neg = n_texts - n_pos
    pos_sum = einsum(member, z64, "c t, t h e -> c h e")
    pos_sq = einsum(member, z64**2, "c t, t h e -> c h e")
    neg_sum = z64.sum(0) - pos_sum
    neg_sq = (z64**2).sum(0) - pos_sq
    neg_mean = neg_sum / n_neg
    neg_var = ((neg_sq - n_neg * neg_mean**2) / (n_neg - 1).clamp_min(1)).clamp_min(0)
    diff = pos_sum / n_pos - neg_mean
    raw_norm = diff.norm(dim=-1)
    selectivity = raw_norm / neg_var.sum(-1).sqrt().clamp_min(STD_FLOOR)
    return HeadStats(raw_norm.float(), selectivity.float(), diff.float())


def direct_contribution(
    diff: Float[Tensor, "n_concepts n_heads d_head"],
    w_o: Float[Tensor, "n_heads d_head d_model"],
    directions: Float[Tensor, "n_concepts d_model"],
) -> Float[Tensor, "n_concepts n_heads"]:
    """(diff_h @ W_O[h]) . v: how much of the concept's residual direction each head writes."""
    written = einsum(diff.double(), w_o.double(), "c h e, h e d -> c h d")
    return einsum(written, directions.double(), "c h d, c d -> c h").float()


def concentration_k(n_heads: int, top_k: int = TOP_HEADS) -> int:
    """Heads counted by head_concentration: top_k, but at most a quarter of the heads, so the number
    stays informative on models with few heads (with 9 heads, "top 10" would always give 1.0)."""
    return max(1, min(top_k, n_heads // 4))


@dataclass
class HeadReport:
    """One concept at one layer (per_head.json's `concepts.<concept>.<layer>`)."""

    top_heads: list[list]  # [head, raw_norm, selectivity], most selective first
    head_concentration: float
    concentration_k: int
    direct_contribution: list[list] | None = None  # [head, (diff_h @ W_O[h]) . v], largest first

    def to_json(self) -> dict:
        data = {"top_heads": self.top_heads, "head_concentration": self.head_concentration, "concentration_k": self.concentration_k}
        return data if self.direct_contribution is None else data | {"direct_contribution": self.direct_contribution}


@dataclass
class PerHead:
    """per_head.json: every concept's head report at every head layer, and the layers without standard attention."""

    n_heads: int
    concepts: dict[str, dict[int, HeadReport]]
    skipped_layers: list[int]

    def skipped_json(self) -> list[dict]:
        return [{"layer": layer, "reason": "no standard attention (no attn.hook_z)"} for layer in self.skipped_layers]

    def concept_json(self, concept: str) -> dict[str, dict]:
        return {str(layer): block.to_json() for layer, block in self.concepts.get(concept, {}).items()}

    def to_json(self) -> dict:
        return {"skipped_layers": self.skipped_json(), "n_heads": self.n_heads, "concepts": {c: self.concept_json(c) for c in self.concepts}}


def head_report(stats: HeadStats, contribution: Float[Tensor, "n_concepts n_heads"] | None, concept: int, top_k: int = TOP_HEADS) -> HeadReport:
    """One concept at one layer: the top_k heads by selectivity, and the share of raw_norm held by the
    top concentration_k of them (spread evenly: concentration_k / n_heads)."""
    raw, sel = stats.raw_norm[concept], stats.selectivity[concept]
    order = torch.argsort(sel, descending=True)
    k = concentration_k(len(sel), top_k)
    report = HeadReport([[int(h), float(raw[h]), float(sel[h])] for h in order[:top_k]], float(raw[order[:k]].sum() / raw.sum().clamp_min(1e-12)), k)
    if contribution is not None:
        order = torch.argsort(contribution[concept], descending=True)
        report.direct_contribution = [[int(h), float(contribution[concept, h])] for h in order]
    return report


def head_analysis(
    weights: Mapping[int, Mapping[str, Tensor]],
    acts: Activations,
    membership: Bool[Tensor, "n_concepts n_texts"],
    directions: Float[Tensor, "n_target_layers n_concepts d_model"],
    concepts: list[str],
    skipped: list[int],
) -> PerHead:
    """per_head.json: top heads, concentration and direct contribution per concept and head layer
    (`weights[layer]["W_O"]`: the layer's [n_heads, d_head, d_model] output weights)."""
    report = PerHead(acts.z.shape[2] if acts.z is not None else 0, {concept: {} for concept in concepts}, skipped)
    for slot, layer in enumerate(acts.head_layers):
        assert acts.z is not None
        stats = head_stats(acts.z[slot], membership)
        contribution = direct_contribution(stats.diff, weights[layer]["W_O"], directions[acts.layers.index(layer)])
        for c, concept in enumerate(concepts):
            report.concepts[concept][layer] = head_report(stats, contribution, c)
    return report
