"""Held-out evaluation: does a direction pick out a story it was not learned from?

Leave each story out in turn, re-derive every concept's direction without it, and score the
held-out story against every concept by dot product. For diff-of-means this needs no model run and
no refit: removing text t changes only running sums, so all leave-one-out directions of a layer
come from one vectorized pass. Other methods pass a `fit` function and are refit per story.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from einops import einsum, rearrange, reduce
from jaxtyping import Bool, Float, Int
from sklearn.metrics import roc_auc_score
from torch import Tensor

from ..directions.pooled import diff_of_means, normalize
from ..errors import UserError
from ..formats.readout import served_scores
from ..layers import relative_depth

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


CV_SPLITS = 5


def cv_folds(membership: Bool[Tensor, "n_concepts n_texts"], groups: list[int], n_splits: int = CV_SPLITS, seed: int = 0) -> list[np.ndarray]:
    """Held-out index sets: whole groups (a paired scenario's baseline and framings together) per fold,
    stratified by concept (sklearn StratifiedGroupKFold), so each fold holds about n_pos / n_splits
    stories of every concept, as a separately written test set does."""
    from sklearn.model_selection import StratifiedGroupKFold

    labels = labels_of(membership).numpy()
    member = membership.numpy()
    for splits in range(max(2, min(n_splits, int(membership.sum(-1).min()))), 1, -1):
        for attempt in range(20):  # the shuffle decides which groups share a fold; a few tries find a usable one
            splitter = StratifiedGroupKFold(n_splits=splits, shuffle=True, random_state=seed + attempt)
            with warnings.catch_warnings():  # "the least populated class has only n members": checked below instead
                warnings.simplefilter("ignore", UserWarning)
                folds = [held for _, held in splitter.split(np.zeros(len(labels)), labels, groups)]
            if all(len(held) >= 2 and (np.delete(member, held, axis=1).sum(-1) > 0).all() for held in folds):
                return folds
    raise UserError(
        "the corpus is too small for grouped cross-validation: no split leaves every concept a training story "
        "and every fold two texts; add stories (or scenario baselines), or drop --quality-report"
    )


def cv_evaluation(
    acts: Float[Tensor, "n_target_layers n_texts d_model"],
    layers: list[int],
    membership: Bool[Tensor, "n_concepts n_texts"],
    concepts: list[str],
    groups: list[int],
    n_layers: int,
    fit: Fit | None = None,
) -> dict:
    """Grouped cross-validation scored as `evaluate` scores: served fp16 rows, raw dot products of the held-out
    fold's texts, each concept's scores z-scored over the fold, then AUROC / top-1 over every held-out text."""
    from .evaluation import rank_metrics, zscore

    folds = cv_folds(membership, groups)
    labels = labels_of(membership)
    report: dict = {"protocol": "grouped cross-validation", "n_splits": len(folds), "layers": {}}
    for slot, layer in enumerate(layers):
        z_learned = torch.empty(acts.shape[1], len(concepts))
        z_random = torch.empty(N_RANDOM_SEEDS, acts.shape[1], len(concepts))
        randoms = [
            normalize(torch.randn(len(concepts), acts.shape[2], generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
            for seed in range(N_RANDOM_SEEDS)
        ]
        for held_indices in folds:
            held = torch.zeros(acts.shape[1], dtype=torch.bool)
            held[torch.from_numpy(held_indices)] = True
            kept = (~held).nonzero().flatten()
            train, train_membership = acts[slot][kept], membership[:, kept]
            directions = normalize(diff_of_means(train, train_membership)) if fit is None else fit(slot, train, train_membership, kept)
            z_learned[held] = zscore(served_scores(acts[slot][held], directions.float()))
            for seed, random_directions in enumerate(randoms):
                z_random[seed][held] = zscore(served_scores(acts[slot][held], random_directions.float()))
        result = rank_metrics(z_learned, labels, concepts)
        random = [rank_metrics(z_random[seed], labels, concepts) for seed in range(N_RANDOM_SEEDS)]
        report["layers"][str(layer)] = {
            "relative_depth": round(relative_depth(layer, n_layers), 4),
            "mean_auroc": result["mean_auroc"],
            "top1": result["top1"],
            "random_auroc": float(np.mean([r["mean_auroc"] for r in random])),
            "random_top1": float(np.mean([r["top1"] for r in random])),
            "per_concept": result["per_concept"],
            "confusions": result["confusions"],
        }
    return report


def development_set_evaluation(
    dev_acts: Float[Tensor, "n_target_layers n_dev d_model"],
    layers: list[int],
    directions: Float[Tensor, "n_target_layers n_concepts d_model"],
    dev_labels: Int[Tensor, " n_dev"],
    concepts: list[str],
    n_layers: int,
) -> dict:
    """The exported rows on the separately written test set, exactly as `evaluate` reads them."""
    from .evaluation import evaluate_served

    report: dict = {"protocol": "development test set", "n_texts": int(dev_acts.shape[1]), "layers": {}}
    for slot, layer in enumerate(layers):
        figures = evaluate_served(dev_acts[slot], directions[slot], dev_labels, concepts)
        report["layers"][str(layer)] = {"relative_depth": round(relative_depth(layer, n_layers), 4), **figures.to_json()}
    return report


DISAGREEMENT_AUROC = 0.03


def leading_heldout(loo: dict | None, cv: dict, dev: dict | None) -> dict:
    """quality.json's `heldout`: the figure a client will get leads (the development test set when there is
    one, else grouped cross-validation); best and recommended layers follow from it; every protocol stays
    beside under its own name, and a cross-validation / test-set gap above 0.03 AUROC is said."""
    lead = dev or cv
    ranked = sorted(lead["layers"], key=lambda layer: -(lead["layers"][layer]["mean_auroc"] or 0))
    report = {
        "protocol": lead["protocol"],
        "n_random_seeds": N_RANDOM_SEEDS,
        "layers": lead["layers"],
        "recommended_layers": [int(layer) for layer in ranked],
        "best_layer": int(ranked[0]),
        "protocols": {"development_set": dev, "grouped_cv": cv, "leave_one_out": loo},
        "disagreement": None,
    }
    if dev is not None:
        gaps = {layer: cv["layers"][layer]["mean_auroc"] - dev["layers"][layer]["mean_auroc"] for layer in dev["layers"]}
        worst = max(gaps, key=lambda layer: abs(gaps[layer]))
        if abs(gaps[worst]) > DISAGREEMENT_AUROC:
            report["disagreement"] = (
                f"grouped cross-validation and the development test set disagree by {gaps[worst]:+.3f} AUROC at "
                f"layer {worst}: trust the test set, which was written apart from the corpus"
            )
    return report


def heldout_line(layer: int, block: dict, describe: Callable[[int], str]) -> str:
    """`layer 15 (52%): AUROC 0.91, top-1 0.48 (random 0.50 / 0.02)`."""
    return (
        f"{describe(layer)}: AUROC {block['mean_auroc']:.3f}, top-1 {block['top1']:.3f} "
        f"(random {block['random_auroc']:.2f} / {block['random_top1']:.3f})"
    )
