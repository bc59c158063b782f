"""Concept circuits: which heads does a concept readout causally depend on?

For a concept and layer L with an exported vector v: a head's effect is what mean-ablating it (l <= L)
does to the concept score <h_L, v> at the last token, as the drop on the concept's positive stories
minus the drop on negatives (so heads that shift every text alike score ~0). `attribution` mode
(the CLI's default) estimates every head's effect from one forward and one backward pass per batch
(`attribution.py`) and ablates only the top heads for real, reporting how far the two rankings agree;
`ablation` mode ablates every head, one forward per head. Shown beside the correlational per-head
diff-of-means ranking at L, to answer "does this concept live in a few heads?" causally.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from .. import hooks
from ..capture.forward import Batch, Intervention, encode, forward, last_token_resid, make_batches, read_batch
from ..capture.pooling import pool
from ..corpus import Corpus
from ..directions.heads import direct_contribution, head_report, head_stats
from ..errors import UserError
from ..formats.readout import served_scores
from ..model import LoadedModel
from .ablation import head_ablation
from .attribution import RankAgreement, attribution_effects, contrast, head_gradients, rank_agreement
from .head import Head

MODES = ("attribution", "ablation")
STARTS_PER_PASS = 8  # residuals entering this many layers are held at once for resumed ablations
STARTS_BUDGET = 1 << 30  # bytes: below this, the gradient pass keeps the residual entering every layer


@dataclass
class ConceptCircuit:
    """concept_<concept>_L<layer>.json: heads ranked by the causal effect of mean-ablating them."""

    concept: str
    layer: int
    n_positives: int
    n_negatives: int
    clean_score_gap: float
    ablation_ranking: list[list]  # [head, effect], strongest first (attribution mode: the verified heads)
    ablation_effects: list[list[float | None]]  # [ablated layer][head]; null: not ablated (attribution mode)
    ablated_layers: list[int]
    top5_share_of_positive_effect: float  # of the effects covering every head (attribution mode: the estimates)
    mode: str = "ablation"
    attribution_ranking: list[list] | None = None  # [head, estimated effect], strongest first
    attribution_effects: list[list[float]] | None = None  # [ablated layer][head]
    agreement: RankAgreement | None = None  # attribution vs ablation over the heads ablated
    diff_of_means_at_layer: dict | None = None
    ablation_at_layer: list[list] | None = None

    def to_json(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}

    def summary(self) -> list[str]:
        source = "estimated (attribution)" if self.mode == "attribution" else "ablation"
        lines = [
            f"{self.concept} at layer {self.layer}: score gap positives - negatives {self.clean_score_gap:.2f}; "
            f"top-5 heads carry {self.top5_share_of_positive_effect:.0%} of the positive {source} effect"
        ]
        if self.attribution_ranking is not None:
            lines.append("  by attribution:    " + ", ".join(f"{h} {v:+.2f}" for h, v in self.attribution_ranking[:8]))
        label = f"ablating the top {len(self.ablation_ranking)}:" if self.mode == "attribution" else "by ablation:"
        lines.append(f"  {label:<18} " + ", ".join(f"{h} {v:+.2f}" for h, v in self.ablation_ranking[:8]))
        if self.agreement is not None:
            lines.append("  " + self.agreement.summary())
        if self.diff_of_means_at_layer is not None:
            top = self.diff_of_means_at_layer["top_heads"][:8]
            lines.append(f"  diff-of-means @L{self.layer}: " + ", ".join(f"L{self.layer}H{h} sel {sel:.2f}" for h, _, sel in top))
        return lines


def readout_scores(model: LoadedModel, batches: Sequence[Batch], layer: int, vector: Tensor, intervention: Intervention | None = None) -> Tensor:
    """<resid_post[layer] at the last real token, v> per text from full forward passes."""
    resid = last_token_resid(model, batches, [layer], [intervention] if intervention is not None else [])[layer]
    return served_scores(resid, vector[None])[:, 0]


def readout_scores_from(
    model: LoadedModel,
    batches: Sequence[Batch],
    starts: list[Tensor],
    start_layer: int,
    layer: int,
    vector: Tensor,
    intervention: Intervention,
    skip_below: bool = False,
) -> Tensor:
    """<resid_post[layer] at the last real token, v> per text under `intervention`, each batch resumed from
    its cached residual entering `start_layer` (with `skip_below`, the blocks below it are not even run)."""
    scores = torch.zeros(sum(len(b.indices) for b in batches))
    for batch, start in zip(batches, starts):
        resid = forward(
            model,
            start,
            attention_mask=batch.attention_mask,
            start_at=start_layer,
            interventions=[intervention],
            read=[hooks.resid_post(layer)],
            skip_below=skip_below,
        ).acts[hooks.resid_post(layer)]
        scores[batch.indices] = served_scores(pool(resid, batch.attention_mask, "last").cpu(), vector[None])[:, 0]
    return scores


def ablation_effects(
    model: LoadedModel,
    batches: Sequence[Batch],
    clean: Float[Tensor, " n_texts"],
    is_pos: Bool[Tensor, " n_texts"],
    layer: int,
    vector: Tensor,
    means: dict[int, Tensor],
    heads: Sequence[Head],
    kept: dict[int, list[Tensor]] | None = None,
) -> Float[Tensor, " n_heads"]:
    """The real mean-ablation effect of each head, one resumed forward per head. The residuals entering
    the heads' layers are `kept` ones, or come from one pass per batch for STARTS_PER_PASS layers at a time."""
    effects = torch.zeros(len(heads))
    layers = sorted({head.layer for head in heads})
    skip: bool | None = None  # decided on the first ablation: does passing the lower blocks through give the same scores?
    for first in range(0, len(layers), STARTS_PER_PASS):
        group = layers[first : first + STARTS_PER_PASS]
        starts = {l: kept[l] for l in group} if kept and all(l in kept for l in group) else resid_pre(model, batches, group)
        for index, head in enumerate(heads):
            if head.layer in group:
                ablate = head_ablation(head.layer, [head.head], means[head.layer])
                if skip is None and head.layer > 0:
                    skip = resume_skips_exactly(model, batches[0], starts[head.layer][0], head.layer, layer, vector, ablate)
                ablated = readout_scores_from(model, batches, starts[head.layer], head.layer, layer, vector, ablate, skip_below=bool(skip))
                effects[index] = contrast(clean - ablated, is_pos)
    return effects


def resume_skips_exactly(model: LoadedModel, batch: Batch, start: Tensor, start_layer: int, layer: int, vector: Tensor, ablate: Intervention) -> bool:
    """Whether resuming with the lower blocks passed through reproduces TransformerLens's own resume on one
    batch. Block `start_layer` swaps in the cached residual whatever the blocks below return, so it does
    wherever the model's code between blocks accepts a block's input as its output; any other architecture
    stays on the slow exact path."""
    alone = Batch(list(range(len(batch.indices))), batch.input_ids, batch.attention_mask)  # scored as texts 0..n-1
    slow = readout_scores_from(model, [alone], [start], start_layer, layer, vector, ablate)
    try:
        fast = readout_scores_from(model, [alone], [start], start_layer, layer, vector, ablate, skip_below=True)
    except (RuntimeError, TypeError, ValueError, IndexError, AttributeError):
        return False
    return bool(torch.allclose(fast, slow, rtol=1e-4, atol=1e-4 * float(slow.abs().max())))


def resid_pre(model: LoadedModel, batches: Sequence[Batch], layers: Sequence[int]) -> dict[int, list[Tensor]]:
    """layer -> per batch, the residual entering it: one pass per batch for every layer."""
    acts = [read_batch(model, batch, [hooks.resid_pre(l) for l in layers]) for batch in batches]
    return {l: [batch_acts[hooks.resid_pre(l)] for batch_acts in acts] for l in layers}


def starts_fit(model: LoadedModel, batches: Sequence[Batch], n_layers: int) -> bool:
    """Whether the residual entering every ablated layer, for every batch, fits in STARTS_BUDGET."""
    n_positions = sum(batch.input_ids.numel() for batch in batches)
    return n_positions * n_layers * model.facts.d_model * model.dtype.itemsize <= STARTS_BUDGET


def sample_texts(corpus: Corpus, concept: str, n_negatives: int, seed: int) -> tuple[list[str], Bool[Tensor, " n_texts"]]:
    """The concept's positive stories, then `n_negatives` others drawn with `seed`."""
    positive = corpus.positive_mask(concept)
    pos_idx = positive.nonzero().flatten().tolist()
    neg_all = (~positive).nonzero().flatten()
    neg_idx = neg_all[torch.randperm(len(neg_all), generator=torch.Generator().manual_seed(seed))[:n_negatives]].tolist()
    texts = [corpus.stories[i].text for i in pos_idx + neg_idx]
    return texts, torch.tensor([True] * len(pos_idx) + [False] * len(neg_idx))


def ranked(effects: Float[Tensor, "n_layers n_heads"], layers: list[int]) -> list[list]:
    """[head, effect] for every head, strongest first."""
    n_heads = effects.shape[1]
    order = torch.argsort(effects.flatten(), descending=True).tolist()
    return [[str(Head(layers[i // n_heads], i % n_heads)), float(effects.flatten()[i])] for i in order]


def top5_share(effects: Float[Tensor, "n_layers n_heads"]) -> float:
    """The share of the summed positive effect carried by the five strongest heads."""
    flat = effects.flatten().clamp_min(0)
    return float(flat.sort(descending=True).values[:5].sum() / flat.sum().clamp_min(1e-12))


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
    mode: str = "ablation",
    verify_top: int = 5,
) -> ConceptCircuit:
    """`ablation`: every head ablated; `attribution`: every head estimated, the top `verify_top` ablated.
    Both report the attribution-vs-ablation agreement over the heads ablated."""
    if mode not in MODES:
        raise UserError(f"unknown --mode {mode!r}: choose one of {', '.join(MODES)}")
    texts, is_pos = sample_texts(corpus, concept, n_negatives, seed)
    token_ids, _ = encode(model.tokenizer, texts, max_length)
    batches = make_batches(token_ids, batch_size, model.tokenizer.pad_token_id)
    z_layers = list(range(layer + 1)) if layers is None else sorted(set(layers))
    n_heads = model.facts.n_heads

    # one forward + backward per batch: the clean readout, each ablated layer's mean z (the ablation
    # value), every head's gradient, and the pooled z at `layer` for the diff-of-means comparison
    gradients = head_gradients(model, batches, z_layers, layer, vector, keep_starts=starts_fit(model, batches, len(z_layers)))
    means, clean = gradients.mean.means(), gradients.clean
    estimates = attribution_effects(gradients, is_pos, z_layers)
    order = torch.argsort(estimates.flatten(), descending=True)
    chosen = order if mode == "ablation" else order[: max(1, verify_top)]
    heads = [Head(z_layers[int(i) // n_heads], int(i) % n_heads) for i in chosen]
    actual = ablation_effects(model, batches, clean, is_pos, layer, vector, means, heads, gradients.starts)

    grid = torch.full((len(z_layers), n_heads), float("nan"))  # NaN: not ablated
    for head, effect in zip(heads, actual):
        grid[z_layers.index(head.layer), head.head] = effect
    by_ablation = [[str(h), e] for h, e in sorted(zip(heads, actual.tolist()), key=lambda pair: -pair[1])]
    top_n = min(verify_top, len(heads)) if mode == "ablation" else max(1, len(heads) // 2)
    circuit = ConceptCircuit(
        concept=concept,
        layer=layer,
        n_positives=int(is_pos.sum()),
        n_negatives=int((~is_pos).sum()),
        clean_score_gap=float(clean[is_pos].mean() - clean[~is_pos].mean()),
        ablation_ranking=by_ablation[:15],
        ablation_effects=[[None if v != v else round(v, 5) for v in row] for row in grid.tolist()],
        ablated_layers=z_layers,
        top5_share_of_positive_effect=top5_share(estimates if mode == "attribution" else grid),
        mode=mode,
        attribution_ranking=ranked(estimates, z_layers)[:15],
        attribution_effects=[[round(float(v), 5) for v in row] for row in estimates],
        agreement=rank_agreement([str(h) for h in heads], estimates.flatten()[chosen], actual, top_n),
    )
    if layer in z_layers and gradients.pooled_z is not None:
        stats = head_stats(gradients.pooled_z, is_pos[None])
        w_o = model.bridge.blocks[layer].attn.W_O.detach().float().cpu()
        circuit.diff_of_means_at_layer = head_report(stats, direct_contribution(stats.diff, w_o, vector[None].float()), 0).to_json()
        circuit.ablation_at_layer = [row for row in by_ablation if Head.parse(row[0]).layer == layer]
    return circuit
