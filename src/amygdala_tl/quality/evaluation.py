"""Served-view evaluation: how well exported vectors read texts they were not learned from.

Scored exactly as a client of the server scores: the raw dot product of each text's last-token
residual with each fp16 exported row, then each concept's scores z-scored over the evaluation
texts (a client has no training statistics; z-scoring also removes the per-concept offset mu . v
that swamps a many-way ranking of raw scores). One-vs-rest AUROC per concept (sklearn; a per-column
z-score does not change it) and top-1 among every exported concept, beside random unit directions
read the same way.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from jaxtyping import Float, Int
from sklearn.metrics import roc_auc_score
from torch import Tensor

from ..formats.readout import served_scores

N_RANDOM_SEEDS = 5
N_CONFUSIONS = 10


@dataclass
class ServedEvaluation:
    """One layer's figures on one evaluation set."""

    mean_auroc: float | None
    top1: float | None
    random_auroc: float | None
    random_top1: float | None
    n_texts: int
    n_concepts_evaluated: int
    per_concept: dict[str, dict[str, float]] = field(default_factory=dict)
    confusions: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "mean_auroc": self.mean_auroc,
            "top1": self.top1,
            "random_auroc": self.random_auroc,
            "random_top1": self.random_top1,
            "n_texts": self.n_texts,
            "n_concepts_evaluated": self.n_concepts_evaluated,
            "per_concept": self.per_concept,
            "confusions": self.confusions,
        }


def zscore(scores: Float[Tensor, "n_texts n_concepts"]) -> Float[Tensor, "n_texts n_concepts"]:
    """Each concept's scores standardized over the evaluation texts (what a client of raw scores does)."""
    scores = scores.double()
    spread = scores.std(0) if scores.shape[0] > 1 else torch.ones(scores.shape[1], dtype=scores.dtype)
    return ((scores - scores.mean(0)) / spread.clamp_min(1e-12)).float()


def rank_metrics(z: Float[Tensor, "n_texts n_concepts"], labels: Int[Tensor, " n_texts"], concepts: list[str]) -> dict:
    """AUROC per concept present (positives vs every other text) and top-1 among all columns."""
    s, y = z.numpy(), labels.numpy()
    per_concept: dict[str, dict[str, float]] = {}
    predicted = s.argmax(1)
    for c in sorted(set(y[y >= 0].tolist())):
        positives = y == c
        if positives.all():
            continue
        per_concept[concepts[c]] = {
            "auroc": float(roc_auc_score(positives, s[:, c])),
            "top1": float((predicted[positives] == c).mean()),
            "n": int(positives.sum()),
        }
    labelled = y >= 0
    confused = Counter((concepts[t], concepts[p]) for t, p in zip(y[labelled], predicted[labelled]) if t != p)
    return {
        "mean_auroc": float(np.mean([v["auroc"] for v in per_concept.values()])) if per_concept else None,
        "top1": float((predicted[labelled] == y[labelled]).mean()) if labelled.any() else None,
        "per_concept": per_concept,
        "confusions": [{"concept": t, "read_as": p, "count": n} for (t, p), n in confused.most_common(N_CONFUSIONS)],
    }


def random_baseline(
    hidden: Float[Tensor, "n_texts d_model"], labels: Int[Tensor, " n_texts"], concepts: list[str], seeds: int = N_RANDOM_SEEDS
) -> tuple[float | None, float | None]:
    """Mean AUROC and top-1 of random unit directions (as many as concepts), read the same way."""
    aurocs, top1s = [], []
    for seed in range(seeds):
        generator = torch.Generator().manual_seed(seed)
        directions = torch.nn.functional.normalize(torch.randn(len(concepts), hidden.shape[1], generator=generator, dtype=torch.float64), dim=-1)
        result = rank_metrics(zscore(served_scores(hidden, directions.float())), labels, concepts)
        if result["mean_auroc"] is not None:
            aurocs.append(result["mean_auroc"])
            top1s.append(result["top1"])
    return (float(np.mean(aurocs)), float(np.mean(top1s))) if aurocs else (None, None)


def evaluate_served(
    hidden: Float[Tensor, "n_texts d_model"], vectors: Float[Tensor, "n_concepts d_model"], labels: Int[Tensor, " n_texts"], concepts: list[str]
) -> ServedEvaluation:
    """Figures for one layer: `labels[t]` is the row of text t's concept in `vectors`, -1 for neutral texts."""
    result = rank_metrics(zscore(served_scores(hidden, vectors)), labels, concepts)
    random_auroc, random_top1 = random_baseline(hidden, labels, concepts)
    return ServedEvaluation(
        result["mean_auroc"],
        result["top1"],
        random_auroc,
        random_top1,
        int(labels.shape[0]),
        len(result["per_concept"]),
        result["per_concept"],
        result["confusions"],
    )
