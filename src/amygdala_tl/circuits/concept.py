"""Concept circuits: which heads does a concept readout causally depend on?

For a concept and layer L with an exported vector v: mean-ablate each head (l <= L) in turn and
measure the concept score <h_L, v> at the last token. A head's effect is the drop on the concept's
positive stories minus the drop on negatives (so heads that shift every text alike score ~0).
Shown beside the correlational per-head diff-of-means ranking at L, to answer "does this concept
live in a few heads?" causally.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .. import hooks
from ..capture import last_token_resid, make_batches, pool, run_batch, tokenize
from ..corpus import Corpus
from ..directions.heads import direct_contribution, head_report, head_stats
from ..model import LoadedModel
from .detectors import head_name


def readout_scores(model: LoadedModel, batches, layer: int, vector: Tensor, z_hook=None) -> Tensor:
    """<resid_post[layer] at the last real token, v> per text, optionally with a hook_z replacement."""
    resid = last_token_resid(model, batches, [layer], [z_hook] if z_hook is not None else [])[layer]
    return resid @ vector.float()


def readout_scores_from(model: LoadedModel, batches, starts: list[Tensor], start_layer: int, layer: int, vector: Tensor, z_hook) -> Tensor:
    """Like readout_scores, but each batch resumes from its cached residual entering `start_layer`:
    an ablation at layer l need not recompute the blocks below l (start_at_layer is exact)."""
    scores = torch.zeros(sum(len(b.indices) for b in batches))
    for batch, start in zip(batches, starts):
        store = {}
        fwd = [z_hook, (hooks.resid_post(layer), lambda act, hook: store.__setitem__("resid", act.detach()))]
        with torch.inference_mode():
            model.bridge.run_with_hooks(start, start_at_layer=start_layer, attention_mask=batch.attention_mask.to(start.device),
                                        fwd_hooks=fwd, return_type=None, stop_at_layer=layer + 1 if layer + 1 < model.facts.n_layers else None)
        scores[batch.indices] = pool(store["resid"], batch.attention_mask, "last").cpu() @ vector.float()
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
) -> dict:
    positive = corpus.positive_mask(concept)
    pos_idx = positive.nonzero().flatten().tolist()
    neg_all = (~positive).nonzero().flatten()
    neg_idx = neg_all[torch.randperm(len(neg_all), generator=torch.Generator().manual_seed(seed))[:n_negatives]].tolist()
    texts = [corpus.stories[i].text for i in pos_idx + neg_idx]
    token_ids, _ = tokenize(model.tokenizer, texts, max_length)
    batches = make_batches(token_ids, batch_size, model.tokenizer.pad_token_id)
    is_pos = torch.tensor([True] * len(pos_idx) + [False] * len(neg_idx))

    # one clean pass: each ablated layer's mean z (the mean-ablation value), the clean readout, and
    # the pooled z at `layer` for the diff-of-means comparison
    z_layers = list(range(layer + 1)) if layers is None else sorted(set(layers))
    z_sum = {l: 0 for l in z_layers}
    n_tokens = 0
    clean = torch.zeros(len(texts))
    pooled_z = torch.zeros(len(texts), model.facts.n_heads, model.facts.d_head)
    for batch in batches:
        store = run_batch(model, batch, [hooks.attn_z(l) for l in z_layers] + [hooks.resid_post(layer)])
        mask = batch.attention_mask.float()
        for l in z_layers:
            z_sum[l] = z_sum[l] + (store[hooks.attn_z(l)].float().cpu() * mask[:, :, None, None]).sum((0, 1))
        n_tokens += mask.sum()
        clean[batch.indices] = pool(store[hooks.resid_post(layer)], batch.attention_mask, "last").cpu() @ vector.float()
        if layer in z_layers:
            pooled_z[batch.indices] = pool(store[hooks.attn_z(layer)], batch.attention_mask, "last").cpu()
    means = {l: z_sum[l] / n_tokens for l in z_layers}

    effects = torch.zeros(len(z_layers), model.facts.n_heads)
    for row, l in enumerate(z_layers):
        starts = [run_batch(model, batch, [hooks.resid_pre(l)])[hooks.resid_pre(l)] for batch in batches]
        for head in range(model.facts.n_heads):
            def ablate(z, hook, l=l, head=head):
                z = z.clone()
                z[:, :, head] = means[l][head].to(z.dtype)
                return z

            ablated = readout_scores_from(model, batches, starts, l, layer, vector, (hooks.attn_z(l), ablate))
            drop = clean - ablated
            effects[row, head] = drop[is_pos].mean() - drop[~is_pos].mean()

    order = torch.argsort(effects.flatten(), descending=True)
    n_heads = model.facts.n_heads
    ranking = [[head_name(z_layers[int(i) // n_heads], int(i) % n_heads), float(effects.flatten()[i])] for i in order]
    total = effects.clamp_min(0).sum()
    report = {
        "concept": concept, "layer": layer, "n_positives": len(pos_idx), "n_negatives": len(neg_idx),
        "clean_score_gap": float(clean[is_pos].mean() - clean[~is_pos].mean()),
        "ablation_ranking": ranking[:15],
        "ablation_effects": [[round(float(v), 5) for v in row] for row in effects],
        "ablated_layers": z_layers,
        "top5_share_of_positive_effect": float(effects.flatten()[order[:5]].clamp_min(0).sum() / total.clamp_min(1e-12)),
    }
    if layer in z_layers:
        stats = head_stats(pooled_z, is_pos[None])
        w_o = model.bridge.blocks[layer].attn.W_O.detach().float().cpu()
        report["diff_of_means_at_layer"] = head_report(stats, direct_contribution(stats.diff, w_o, vector[None].float()), 0)
        layer_row = z_layers.index(layer)
        report["ablation_at_layer"] = [[head_name(layer, int(h)), float(effects[layer_row, h])]
                                       for h in torch.argsort(effects[layer_row], descending=True)]
    return report
