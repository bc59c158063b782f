"""Attribution patching for concept circuits: every head's mean-ablation effect on a readout, estimated.

Mean-ablating head h at layer l replaces its `hook_z` (z) by the mean z. To first order the readout
score s moves by grad_z(s) . (mean - z), summed over positions and d_head, so the drop (clean -
ablated) is about -grad . (mean - z). One forward and one backward pass per batch give this for
every head at every layer at once, where exact ablation costs one forward per head. The estimate is
exact for a readout linear in z and drifts where attention or norms bend the path; the top heads are
checked by real ablation (`concept.py`) and the rank agreement reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from einops import einsum
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .. import hooks
from ..capture.forward import Batch, forward
from ..capture.pooling import pool
from ..formats.readout import served_scores
from ..model import LoadedModel
from .ablation import MeanZ


@dataclass
class HeadGradients:
    """One grad pass over every batch: what the estimate needs once the mean z (known only after the
    last batch) is in, per text and per (ablated layer, head), summed over real positions."""

    grad_sum: Float[Tensor, "n_texts n_layers n_heads d_head"]  # sum_pos d s / d z
    grad_dot_z: Float[Tensor, "n_texts n_layers n_heads"]  # sum_pos (d s / d z) . z
    clean: Float[Tensor, " n_texts"]  # the clean readout score s
    mean: MeanZ  # the mean-ablation values, accumulated in the same pass
    pooled_z: Float[Tensor, "n_texts n_heads d_head"] | None  # z at the readout layer's last token, if ablated
    starts: dict[int, list[Tensor]]  # layer -> per batch, the residual entering it (for resumed ablations)


def readout_score(
    resid: Float[Tensor, "batch pos d_model"], attention_mask: Int[Tensor, "batch pos"], vector: Float[Tensor, " d_model"]
) -> Float[Tensor, " batch"]:
    """<resid at the last real token, v>, as served (differentiable)."""
    return served_scores(pool(resid, attention_mask, "last"), vector[None])[:, 0]


def head_gradients(
    model: LoadedModel, batches: Sequence[Batch], layers: Sequence[int], readout_layer: int, vector: Tensor, keep_starts: bool = False
) -> HeadGradients:
    """One forward and one backward pass per batch: the readout's gradient w.r.t. each layer's `hook_z`
    (and with `keep_starts` the residual entering each layer, so ablations later need no pass of their own)."""
    n_texts, n_heads, d_head = sum(len(b.indices) for b in batches), model.facts.n_heads, model.facts.d_head
    grad_sum = torch.zeros(n_texts, len(layers), n_heads, d_head)
    grad_dot_z = torch.zeros(n_texts, len(layers), n_heads)
    clean = torch.zeros(n_texts)
    pooled_z = torch.zeros(n_texts, n_heads, d_head) if readout_layer in layers else None
    mean = MeanZ(layers)
    names = [hooks.attn_z(layer) for layer in layers]
    starts: dict[int, list[Tensor]] = {layer: [] for layer in layers} if keep_starts else {}
    read = [*names, hooks.resid_post(readout_layer), *(hooks.resid_pre(layer) for layer in starts)]
    for batch in batches:
        acts = forward(model, batch.input_ids, attention_mask=batch.attention_mask, read=read, grad=True).acts
        for layer, kept in starts.items():
            kept.append(acts[hooks.resid_pre(layer)].detach())
        score = readout_score(acts[hooks.resid_post(readout_layer)], batch.attention_mask, vector)
        grads = torch.autograd.grad(score.sum(), [acts[name] for name in names])  # each text's score depends on its own row only
        mask = batch.attention_mask.float()
        zs = {name: acts[name].detach().float().cpu() for name in names}
        for row, (name, grad) in enumerate(zip(names, grads)):
            grad = grad.float().cpu()
            grad_sum[batch.indices, row] = einsum(grad, mask, "batch pos head d, batch pos -> batch head d")
            grad_dot_z[batch.indices, row] = einsum(grad, zs[name], mask, "batch pos head d, batch pos head d, batch pos -> batch head")
        mean.add(zs, batch.attention_mask)
        clean[batch.indices] = score.detach().cpu()
        if pooled_z is not None:
            pooled_z[batch.indices] = pool(zs[hooks.attn_z(readout_layer)], batch.attention_mask, "last")
    return HeadGradients(grad_sum, grad_dot_z, clean, mean, pooled_z, starts)


def estimated_drops(gradients: HeadGradients, means: Float[Tensor, "n_layers n_heads d_head"]) -> Float[Tensor, "n_texts n_layers n_heads"]:
    """First-order drop of each text's score under mean ablation: -sum_pos grad . (mean - z)."""
    grad_dot_mean = einsum(gradients.grad_sum, means, "text layer head d, layer head d -> text layer head")
    return -(grad_dot_mean - gradients.grad_dot_z)


def contrast(drops: Float[Tensor, "n_texts *heads"], is_pos: Bool[Tensor, " n_texts"]) -> Float[Tensor, "*heads"]:  # noqa: F821 - a jaxtyping shape
    """A head's effect: the mean drop on positives minus the mean drop on negatives."""
    return drops[is_pos].mean(0) - drops[~is_pos].mean(0)


def attribution_effects(gradients: HeadGradients, is_pos: Bool[Tensor, " n_texts"], layers: Sequence[int]) -> Float[Tensor, "n_layers n_heads"]:
    """Every head's estimated mean-ablation effect, the positive-minus-negative contrast of the drops."""
    means = gradients.mean.means()
    return contrast(estimated_drops(gradients, torch.stack([means[layer] for layer in layers])), is_pos)


@dataclass
class RankAgreement:
    """How far the attribution ranking matches real mean ablation over the heads both were computed for."""

    heads: list[str]  # the compared heads, in attribution order
    attribution: list[float]
    ablation: list[float]
    spearman: float | None  # rank correlation; None when undefined (under 3 heads, or a constant side)
    top_n: int
    top_n_overlap: float  # share of the ablation's top-n heads that attribution also puts in its top n
    sign_agreement: float  # share of heads whose estimated and real effects have the same sign

    def summary(self) -> str:
        rho = "n/a" if self.spearman is None else f"{self.spearman:+.2f}"
        return (
            f"attribution vs ablation over {len(self.heads)} heads: Spearman {rho}, top-{self.top_n} overlap "
            f"{self.top_n_overlap:.0%}, same sign {self.sign_agreement:.0%}"
        )


def rank_agreement(heads: Sequence[str], estimated: Float[Tensor, " n"], actual: Float[Tensor, " n"], top_n: int) -> RankAgreement:
    """Spearman's rho (scipy) and the top-n overlap of two rankings of the same heads."""
    from scipy.stats import spearmanr

    top_n = max(1, min(top_n, len(heads)))
    defined = len(heads) >= 3 and bool(estimated.std() > 0) and bool(actual.std() > 0)
    rho = float(spearmanr(estimated.numpy(), actual.numpy()).statistic) if defined else float("nan")
    top_est = set(torch.argsort(estimated, descending=True)[:top_n].tolist())
    top_act = set(torch.argsort(actual, descending=True)[:top_n].tolist())
    return RankAgreement(
        heads=list(heads),
        attribution=[round(float(v), 5) for v in estimated],
        ablation=[round(float(v), 5) for v in actual],
        spearman=None if rho != rho else rho,
        top_n=top_n,
        top_n_overlap=len(top_est & top_act) / top_n,
        sign_agreement=float((torch.sign(estimated) == torch.sign(actual)).float().mean()),
    )
