"""Concept circuits: which heads does a concept readout causally depend on?

For a concept and layer L with an exported vector v: mean-ablate each head (l <= L) in turn and
measure the concept score <h_L, v> at the last token. A head's effect is the drop on the concept's
positive stories minus the drop on negatives (so heads that shift every text alike score ~0).
Shown beside the correlational per-head diff-of-means ranking at L, to answer "does this concept
live in a few heads?" causally.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from .. import hooks
from ..capture.forward import Batch, Intervention, encode, forward, last_token_resid, make_batches, pool, read_batch
from ..corpus import Corpus
from ..directions.heads import direct_contribution, head_report, head_stats
from ..formats.readout import served_scores
from ..model import LoadedModel
from .ablation import MeanZ, head_ablation
from .head import flat_heads, head_name


@dataclass
class ConceptCircuit:
    """concept_<concept>_L<layer>.json: heads ranked by the causal effect of mean-ablating them."""

    concept: str
    layer: int
    n_positives: int
    n_negatives: int
    clean_score_gap: float
    ablation_ranking: list[list]  # [head, effect], strongest first
    ablation_effects: list[list[float]]  # [ablated layer][head]
    ablated_layers: list[int]
    top5_share_of_positive_effect: float
    diff_of_means_at_layer: dict | None = None
    ablation_at_layer: list[list] | None = None

    def to_json(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}

    def summary(self) -> list[str]:
        lines = [
            f"{self.concept} at layer {self.layer}: score gap positives - negatives {self.clean_score_gap:.2f}; "
            f"top-5 heads carry {self.top5_share_of_positive_effect:.0%} of the positive ablation effect",
            "  by ablation:       " + ", ".join(f"{h} {v:+.2f}" for h, v in self.ablation_ranking[:8]),
        ]
        if self.diff_of_means_at_layer is not None:
            top = self.diff_of_means_at_layer["top_heads"][:8]
            lines.append(f"  diff-of-means @L{self.layer}: " + ", ".join(f"L{self.layer}H{h} sel {sel:.2f}" for h, _, sel in top))
        return lines


def readout_scores(model: LoadedModel, batches: Sequence[Batch], layer: int, vector: Tensor, intervention: Intervention | None = None) -> Tensor:
    """<resid_post[layer] at the last real token, v> per text from full forward passes."""
    resid = last_token_resid(model, batches, [layer], [intervention] if intervention is not None else [])[layer]
    return served_scores(resid, vector[None])[:, 0]


def readout_scores_from(
    model: LoadedModel, batches: Sequence[Batch], starts: list[Tensor], start_layer: int, layer: int, vector: Tensor, intervention: Intervention
) -> Tensor:
    """<resid_post[layer] at the last real token, v> per text under `intervention`, each batch resumed from
    its cached residual entering `start_layer`: an ablation at layer l need not recompute the blocks below l."""
    scores = torch.zeros(sum(len(b.indices) for b in batches))
    for batch, start in zip(batches, starts):
        resid = forward(
            model, start, attention_mask=batch.attention_mask, start_at=start_layer, interventions=[intervention], read=[hooks.resid_post(layer)]
        ).acts[hooks.resid_post(layer)]
        scores[batch.indices] = served_scores(pool(resid, batch.attention_mask, "last").cpu(), vector[None])[:, 0]
    return scores


def concept_circuit(
    model: LoadedModel,
    corpus: Corpus,
    concept: str,
    layer: int,
    vector: Tensor,
    n_negatives: int = 16,
    layers: Sequence[int] | None = None,
    seed: int = 0,
    batch_size: int = 8,
    max_length: int = 512,
) -> ConceptCircuit:
    positive = corpus.positive_mask(concept)
    pos_idx = positive.nonzero().flatten().tolist()
    neg_all = (~positive).nonzero().flatten()
    neg_idx = neg_all[torch.randperm(len(neg_all), generator=torch.Generator().manual_seed(seed))[:n_negatives]].tolist()
    texts = [corpus.stories[i].text for i in pos_idx + neg_idx]
    token_ids, _ = encode(model.tokenizer, texts, max_length)
    batches = make_batches(token_ids, batch_size, model.tokenizer.pad_token_id)
    is_pos = torch.tensor([True] * len(pos_idx) + [False] * len(neg_idx))

    # one clean pass: each ablated layer's mean z (the mean-ablation value), the clean readout, and
    # the pooled z at `layer` for the diff-of-means comparison
    z_layers = list(range(layer + 1)) if layers is None else sorted(set(layers))
    mean = MeanZ(z_layers)
    clean = torch.zeros(len(texts))
    pooled_z = torch.zeros(len(texts), model.facts.n_heads, model.facts.d_head)
    for batch in batches:
        acts = read_batch(model, batch, [hooks.attn_z(l) for l in z_layers] + [hooks.resid_post(layer)])
        mean.add(acts, batch.attention_mask)
        clean[batch.indices] = served_scores(pool(acts[hooks.resid_post(layer)], batch.attention_mask, "last").cpu(), vector[None])[:, 0]
        if layer in z_layers:
            pooled_z[batch.indices] = pool(acts[hooks.attn_z(layer)], batch.attention_mask, "last").cpu()
    means = mean.means()

    effects = torch.zeros(len(z_layers), model.facts.n_heads)
    for row, l in enumerate(z_layers):
        starts = [read_batch(model, batch, [hooks.resid_pre(l)])[hooks.resid_pre(l)] for batch in batches]
        for head in range(model.facts.n_heads):
            ablated = readout_scores_from(model, batches, starts, l, layer, vector, head_ablation(l, [head], means[l]))
            drop = clean - ablated
            effects[row, head] = drop[is_pos].mean() - drop[~is_pos].mean()

    order = torch.argsort(effects.flatten(), descending=True)
    n_heads = model.facts.n_heads
    ranking = [[str(head), float(effects.flatten()[i])] for head, i in zip(flat_heads(order, n_heads, z_layers), order)]
    total = effects.clamp_min(0).sum()
    circuit = ConceptCircuit(
        concept=concept,
        layer=layer,
        n_positives=len(pos_idx),
        n_negatives=len(neg_idx),
        clean_score_gap=float(clean[is_pos].mean() - clean[~is_pos].mean()),
        ablation_ranking=ranking[:15],
        ablation_effects=[[round(float(v), 5) for v in row] for row in effects],
        ablated_layers=z_layers,
        top5_share_of_positive_effect=float(effects.flatten()[order[:5]].clamp_min(0).sum() / total.clamp_min(1e-12)),
    )
    if layer in z_layers:
        stats = head_stats(pooled_z, is_pos[None])
        w_o = model.bridge.blocks[layer].attn.W_O.detach().float().cpu()
        circuit.diff_of_means_at_layer = head_report(stats, direct_contribution(stats.diff, w_o, vector[None].float()), 0)
        layer_row = z_layers.index(layer)
        circuit.ablation_at_layer = [
            [head_name(layer, int(h)), float(effects[layer_row, h])] for h in torch.argsort(effects[layer_row], descending=True)
        ]
    return circuit
