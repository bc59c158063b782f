"""Held-out evaluation: does a direction pick out a story it was not learned from?

Leave each story out in turn, re-derive every concept's direction without it, and score the
held-out story against every concept by dot product. For diff-of-means this needs no model run and
no refit: removing text t changes only running sums, so all leave-one-out directions of a layer
come from one vectorized pass. Other methods pass a `fit` function and are refit per story.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from einops import einsum, rearrange, reduce
from jaxtyping import Bool, Float, Int
from sklearn.metrics import roc_auc_score
from torch import Tensor

from ..directions.pooled import normalize
from ..model import relative_depth

# (layer slot, acts [n, d], membership [C, n], kept text indices [n]) -> directions [C, d]
Fit = Callable[[int, Tensor, Tensor, Tensor], Tensor]
N_RANDOM_SEEDS = 5


def labels_of(membership: Bool[Tensor, "n_concepts n_texts"]) -> Int[Tensor, " n_texts"]:
    """Concept index of each text, -1 for texts that are no concept's positive (baselines)."""
    has = membership.any(0)
    return torch.where(has, membership.float().argmax(0), torch.full_like(has, -1, dtype=torch.long))


def loo_pooled_scores(
    acts: Float[Tensor, "n_texts d_model"],
    membership: Bool[Tensor, "n_concepts n_texts"],
    chunk_bytes: int = 1 << 28,
    centered: bool = False,
) -> Float[Tensor, "n_texts n_concepts"]:
    """score[t, c] = x_t . normalize(mean(P_c \\ t) - mean(N_c \\ t)), for every text t, in fp64.

    centered: score (x_t - mean of the other texts) instead of x_t, i.e. subtract each concept's
    offset mu . v_c, which raw scores carry and which differs between concepts."""
    x = acts.double()
    member = membership.double()
    n_texts, d = x.shape
    n_concepts = member.shape[0]
    pos_sum = einsum(member, x, "concept text, text d -> concept d")
    n_pos = reduce(member, "concept text -> concept", "sum")
    total = reduce(x, "text d -> d", "sum")
    scores = torch.empty(n_texts, n_concepts, dtype=torch.float64)
    step = max(1, chunk_bytes // (8 * n_concepts * d * 3))
    for start in range(0, n_texts, step):
        rows = slice(start, min(start + step, n_texts))
        held = x[rows]
        own = rearrange(member[:, rows], "concept held -> held concept")  # 1 where the held text is the concept's positive
        pos_sum_without = rearrange(pos_sum, "concept d -> 1 concept d") - einsum(own, held, "held concept, held d -> held concept d")
        n_pos_without = (rearrange(n_pos, "concept -> 1 concept") - own).clamp_min(1)
        neg_sum_without = rearrange(total - held, "held d -> held 1 d") - pos_sum_without
        n_neg_without = (n_texts - 1 - rearrange(n_pos, "concept -> 1 concept") + own).clamp_min(1)
        diff = pos_sum_without / n_pos_without[..., None] - neg_sum_without / n_neg_without[..., None]
        probe = held - (total - held) / (n_texts - 1) if centered else held
        scores[rows] = einsum(normalize(diff), probe, "held concept d, held d -> held concept")
    return scores.float()


def grouped_folds(membership: Bool[Tensor, "n_concepts n_texts"]) -> list[list[int]]:
    """Fold f = the f-th positive of each concept + every n_folds-th unlabelled text; each text once."""
    n_folds = int(membership.sum(-1).max())
    folds: list[list[int]] = [[] for _ in range(n_folds)]
    for c in range(membership.shape[0]):
        for f, t in enumerate(membership[c].nonzero().flatten().tolist()):
            folds[f].append(t)
    for i, t in enumerate((~membership.any(0)).nonzero().flatten().tolist()):
        folds[i % n_folds].append(t)
    return [sorted(fold) for fold in folds if fold]


def fold_refit_scores(
    slot: int, acts: Float[Tensor, "n_texts d_model"], membership: Bool[Tensor, "n_concepts n_texts"], fit: Fit, centered: bool = False
) -> Float[Tensor, "n_texts n_concepts"]:
    """Scores of every text from directions refit without its fold (centred: minus the kept texts' mean)."""
    scores = torch.empty(acts.shape[0], membership.shape[0])
    for fold in grouped_folds(membership):
        held = torch.zeros(acts.shape[0], dtype=torch.bool)
        held[fold] = True
        kept = (~held).nonzero().flatten()
        directions = fit(slot, acts[kept], membership[:, kept], kept)
        probe = acts[held].float() - (acts[kept].float().mean(0) if centered else 0)
        scores[held] = probe @ directions.float().T
    return scores


def evaluate_scores(scores: Float[Tensor, "n_texts n_concepts"], labels: Int[Tensor, " n_texts"], evaluable: Bool[Tensor, " n_concepts"]) -> dict:
    """One-vs-rest AUROC per concept (held-out positives vs every other held-out text, baselines
    included) and top-1 accuracy (the held-out story's own concept ranks first among all concepts)."""
    s, y = scores.numpy(), labels.numpy()
    aurocs, top1 = {}, {}
    hits = s.argmax(1) == y
    for c in np.flatnonzero(evaluable.numpy()):
        positives = y == c
        aurocs[int(c)] = float(roc_auc_score(positives, s[:, c]))
        top1[int(c)] = float(hits[positives].mean())
    counted = np.isin(y, list(top1))
    return {
        "mean_auroc": float(np.mean(list(aurocs.values()))) if aurocs else None,
        "top1": float(hits[counted].mean()) if counted.any() else None,
        "per_concept_auroc": aurocs,
        "per_concept_top1": top1,
    }


def random_floor(acts: Float[Tensor, "n_texts d_model"], labels, evaluable, n_concepts: int, seeds: int = N_RANDOM_SEEDS) -> tuple[float, float]:
    """Mean AUROC and top-1 of random unit directions, averaged over seeds."""
    aurocs, top1s = [], []
    for seed in range(seeds):
        generator = torch.Generator().manual_seed(seed)
        random_dirs = normalize(torch.randn(n_concepts, acts.shape[1], generator=generator, dtype=torch.float64))
        result = evaluate_scores((acts.double() @ random_dirs.T).float(), labels, evaluable)
        aurocs.append(result["mean_auroc"])
        top1s.append(result["top1"])
    return float(np.mean(aurocs)), float(np.mean(top1s))


def heldout_evaluation(
    acts: Float[Tensor, "n_target_layers n_texts d_model"],
    layers: list[int],
    membership: Bool[Tensor, "n_concepts n_texts"],
    concepts: list[str],
    n_layers: int,
    fit: Fit | None = None,
) -> dict:
    """Per layer: held-out AUROC/top-1 (overall and per concept) beside the random floor; best layers first."""
    labels = labels_of(membership)
    evaluable = membership.sum(-1) >= 2  # a concept needs a positive left after leaving one out
    report: dict = {"n_random_seeds": N_RANDOM_SEEDS, "protocol": "leave-one-out" if fit is None else "grouped leave-one-out", "layers": {}}
    for slot, layer in enumerate(layers):
        if fit is None:
            scores, centered = loo_pooled_scores(acts[slot], membership), loo_pooled_scores(acts[slot], membership, centered=True)
        else:
            scores = fold_refit_scores(slot, acts[slot], membership, fit)
            centered = fold_refit_scores(slot, acts[slot], membership, fit, centered=True)
        result = evaluate_scores(scores, labels, evaluable)
        centered_result = evaluate_scores(centered, labels, evaluable)
        random_auroc, random_top1 = random_floor(acts[slot], labels, evaluable, len(concepts))
        report["layers"][str(layer)] = {
            "relative_depth": round(relative_depth(layer, n_layers), 4),
            "mean_auroc": result["mean_auroc"],
            "top1": result["top1"],
            "random_auroc": random_auroc,
            "random_top1": random_top1,
            "mean_auroc_centered": centered_result["mean_auroc"],
            "top1_centered": centered_result["top1"],
            "per_concept": {
                concepts[c]: {"auroc": result["per_concept_auroc"][c], "top1": result["per_concept_top1"][c]} for c in result["per_concept_auroc"]
            },
        }
    ranked = sorted(layers, key=lambda layer: -(report["layers"][str(layer)]["mean_auroc"] or 0))
    report["recommended_layers"] = ranked
    report["best_layer"] = ranked[0] if ranked else None
    return report


def heldout_line(layer: int, block: dict, describe: Callable[[int], str]) -> str:
    """`layer 15 (52%): AUROC 0.91, top-1 0.48 (random 0.50 / 0.02)`."""
    return (
        f"{describe(layer)}: AUROC {block['mean_auroc']:.2f}, top-1 {block['top1']:.2f} "
        f"(random {block['random_auroc']:.2f} / {block['random_top1']:.2f}); "
        f"centred: AUROC {block['mean_auroc_centered']:.2f}, top-1 {block['top1_centered']:.2f}"
    )
