"""Pooled activations: pure data, no model. What the direction methods and quality metrics consume."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from .. import hooks


@dataclass
class Activations:
    """Pooled activations of every text at every target layer (rows follow the input text order)."""

    layers: list[int]
    resid: Float[Tensor, "n_target_layers n_texts d_model"]
    z: Float[Tensor, "n_head_layers n_texts n_heads d_head"] | None = None
    head_layers: list[int] = field(default_factory=list)  # the layers z covers
    n_tokens: list[int] = field(default_factory=list)
    truncated: list[int] = field(default_factory=list)  # indices of texts cut to max_length
    n_forward_passes: int = 0

    def at(self, layer: int) -> Float[Tensor, "n_texts d_model"]:
        return self.resid[self.layers.index(layer)]


def hook_shapes(layers: Sequence[int], head_layers: Sequence[int], d_model: int, n_heads: int, d_head: int) -> dict[str, tuple[int, ...]]:
    """The per-text pooled shape of every hook a capture requests."""
    shapes = {hooks.resid_post(layer): (d_model,) for layer in layers}
    return shapes | {hooks.attn_z(layer): (n_heads, d_head) for layer in head_layers}


def assemble(columns: dict[str, list[Tensor]], layers: Sequence[int], head_layers: Sequence[int]) -> Activations:
    """Stack per-text pooled vectors (from a capture or the store) into an Activations."""
    resid = torch.stack([torch.stack(columns[hooks.resid_post(layer)]) for layer in layers])
    z = torch.stack([torch.stack(columns[hooks.attn_z(layer)]) for layer in head_layers]) if head_layers else None
    return Activations(layers=list(layers), resid=resid, z=z, head_layers=list(head_layers))
