"""Attention patterns by hook name, and the one scoring rule every pattern detector shares."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .. import hooks
from ..capture.forward import Intervention, forward
from ..model import LoadedModel


def attention_patterns(
    model: LoadedModel, tokens: Int[Tensor, "batch pos"], layers: Sequence[int] | None = None, interventions: Sequence[Intervention] = ()
) -> Float[Tensor, "n_pattern_layers batch n_heads q k"]:
    """`blocks.<l>.attn.hook_pattern` of every layer, one forward pass (equal-length rows, no padding)."""
    layers = list(range(model.facts.n_layers)) if layers is None else list(layers)
    acts = forward(model, tokens, read=[hooks.attn_pattern(layer) for layer in layers], interventions=interventions).acts
    return torch.stack([acts[hooks.attn_pattern(layer)].float().cpu() for layer in layers])


def score_detection(
    patterns: Float[Tensor, "n_pattern_layers batch n_heads q k"],
    detection: Float[Tensor, "batch q k"],
    *,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    applicable_only: bool = True,
) -> Float[Tensor, "n_layers n_heads"]:
    """Fraction of attention on the detection entries, per sequence, averaged over sequences.

    applicable_only=False is exactly TransformerLens's `detect_head(error_measure="mul")`: the mass
    on detection entries over the whole pattern's mass, every query counted. applicable_only=True
    (what the detectors report) counts only queries with at least one detection entry, so a score
    reads as "mean attention from an applicable position to its target".
    """
    patterns = patterns.double().clone()
    if exclude_bos:
        patterns[..., 0] = 0
    if exclude_current_token:
        patterns = patterns * (1 - torch.eye(patterns.shape[-1], dtype=patterns.dtype))
    detection = detection.double()
    rows: Bool[Tensor, "batch q"] = detection.sum(-1) > 0 if applicable_only else torch.ones(detection.shape[:2], dtype=torch.bool)
    row_mask = rows[None, :, None, :, None].double()
    hit = (patterns * detection[None, :, None] * row_mask).sum((-1, -2))
    mass = (patterns * row_mask).sum((-1, -2)).clamp_min(1e-12)
    return (hit / mass).mean(1).float()


def previous_token_detection(tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch q k"]:
    n = tokens.shape[1]
    return torch.diag_embed(torch.ones(n - 1), offset=-1).expand(tokens.shape[0], n, n).clone()


def duplicate_token_detection(tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch q k"]:
    """1 where key k < q holds the same token as query q."""
    same = tokens[:, :, None] == tokens[:, None, :]
    return torch.tril(same.float(), diagonal=-1)


def induction_detection(tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch q k"]:
    """1 where key k follows an earlier copy of the query's token: the duplicate pattern shifted right."""
    duplicate = duplicate_token_detection(tokens)
    shifted = torch.zeros_like(duplicate)
    shifted[:, :, 1:] = duplicate[:, :, :-1]
    return torch.tril(shifted)
