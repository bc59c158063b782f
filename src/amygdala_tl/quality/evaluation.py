"""Served-view evaluation: how well exported vectors read texts they were not learned from.

Scored exactly as a client of the server scores: the raw dot product of each text's activation,
pooled as the export declares (capture/pooling.py: by default the mean over the text's last 128 tokens,
which equals the mean of those tokens' per-token served scores), with each fp16 exported row, then each concept's
scores z-scored over the evaluation texts (a client has no training statistics; z-scoring also removes the per-concept offset mu . v
that swamps a many-way ranking of raw scores). One-vs-rest AUROC per concept (by ranks, equal to sklearn's;
a per-column z-score does not change it) and top-1 among every exported concept, beside random unit directions
read the same way, and a 90% bootstrap interval over the evaluation texts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from jaxtyping import Float, Int
from scipy.stats import rankdata
from torch import Tensor

from ..formats.readout import served_scores

N_RANDOM_SEEDS = 5
N_CONFUSIONS = 3  # wrong readings kept per concept (the triage names what each concept is mistaken for)
N_BOOTSTRAP = 1000
INTERVAL_LEVEL = 0.9


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
    auroc_interval: list[float] | None = None  # 90% bootstrap interval over the evaluation texts
    top1_interval: list[float] | None = None

    def to_json(self) -> dict:
        return {
            "mean_auroc": self.mean_auroc,
            "top1": self.top1,
            "auroc_interval": self.auroc_interval,
            "top1_interval": self.top1_interval,
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


@dataclass
class RankMetrics:
    """AUROC per concept present and top-1 among all concepts, over one set of scores."""

    mean_auroc: float | None
    top1: float | None
    per_concept: dict[str, dict[str, float]]  # concept -> {"auroc", "top1", "n"}
    confusions: list[dict]  # every concept's most frequent wrong readings (concept, read_as, count), up to 3 each, most first


def rank_metrics(z: Float[Tensor, "n_texts n_concepts"], labels: Int[Tensor, " n_texts"], concepts: list[str]) -> RankMetrics:
    """AUROC per concept present (positives vs every other text) and top-1 among all columns."""
    s, y = z.numpy(), labels.numpy()
    per_concept: dict[str, dict[str, float]] = {}
    predicted = s.argmax(1)
    aurocs = rank_aurocs(s, y)
    for c in sorted(set(y[y >= 0].tolist())):
        positives = y == c
        if positives.all():
            continue
        per_concept[concepts[c]] = {
            "auroc": float(aurocs[c]),
            "top1": float((predicted[positives] == c).mean()),
            "n": int(positives.sum()),
        }
    labelled = y >= 0
    confused = Counter((concepts[t], concepts[p]) for t, p in zip(y[labelled], predicted[labelled]) if t != p)
    return RankMetrics(
        float(np.mean([v["auroc"] for v in per_concept.values()])) if per_concept else None,
        float((predicted[labelled] == y[labelled]).mean()) if labelled.any() else None,
        per_concept,
        most_confused(confused),
    )


def most_confused(confused: Counter[tuple[str, str]]) -> list[dict]:
    """Each concept's N_CONFUSIONS most frequent wrong readings, the most frequent pairs first."""
    kept: Counter[str] = Counter()
    result = []
    for (concept, read_as), count in confused.most_common():
        kept[concept] += 1
        if kept[concept] <= N_CONFUSIONS:
            result.append({"concept": concept, "read_as": read_as, "count": count})
    return result


def random_directions(n_concepts: int, d_model: int, seeds: int = N_RANDOM_SEEDS) -> list[Float[Tensor, "n_concepts d_model"]]:
    """One set of random unit rows (fp64, as many as concepts) per seed 0..seeds-1: every random floor's directions."""
    return [
        torch.nn.functional.normalize(torch.randn(n_concepts, d_model, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)
        for seed in range(seeds)
    ]


def random_floor(read: Callable[[Tensor], RankMetrics], n_concepts: int, d_model: int) -> tuple[float | None, float | None]:
    """Mean AUROC and top-1 of random unit directions over the seeds, each set scored by `read` as the learned rows are."""
    aurocs: list[float] = []
    top1s: list[float] = []
    for directions in random_directions(n_concepts, d_model):
        result = read(directions)
        if result.mean_auroc is not None and result.top1 is not None:
            aurocs.append(result.mean_auroc)
            top1s.append(result.top1)
    return (float(np.mean(aurocs)), float(np.mean(top1s))) if aurocs else (None, None)


def rank_aurocs(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """One-vs-rest AUROC of every column c (positives: y == c), NaN where c has no positive or no negative: the
    rank-sum (Mann-Whitney) identity for every concept at once, ties averaged as sklearn's roc_auc_score does
    (a test holds it to sklearn); one call instead of a validated sklearn call per concept, layer and seed."""
    positive = y[:, None] == np.arange(s.shape[1])[None, :]
    n_pos = positive.sum(0)
    n_neg = len(y) - n_pos
    rank_sum = (rankdata(s, axis=0) * positive).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        aurocs = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), aurocs, np.nan)


def mean_rank_auroc(s: np.ndarray, y: np.ndarray) -> float | None:
    """Mean one-vs-rest AUROC over the concepts with positives and negatives in `y` (rank_aurocs)."""
    aurocs = rank_aurocs(s, y)
    return float(np.nanmean(aurocs)) if np.isfinite(aurocs).any() else None


def bootstrap_interval(
    z: Float[Tensor, "n_texts n_concepts"], labels: Int[Tensor, " n_texts"], n_resamples: int = N_BOOTSTRAP, seed: int = 0
) -> tuple[list[float], list[float]] | None:
    """90% percentile intervals of mean AUROC and top-1 over the evaluation texts resampled with replacement."""
    s, y = z.double().numpy(), labels.numpy()
    if not (y >= 0).any():
        return None
    rng = np.random.default_rng(seed)
    aurocs, top1s = [], []
    for _ in range(n_resamples):
        pick = rng.integers(0, len(y), len(y))
        sample, truth = s[pick], y[pick]
        labelled = truth >= 0
        if (auroc := mean_rank_auroc(sample, truth)) is None or not labelled.any():
            continue
        aurocs.append(auroc)
        top1s.append((sample[labelled].argmax(1) == truth[labelled]).mean())
    tail = (1 - INTERVAL_LEVEL) / 2 * 100
    return (
        [round(float(v), 4) for v in np.percentile(aurocs, [tail, 100 - tail])],
        [round(float(v), 4) for v in np.percentile(top1s, [tail, 100 - tail])],
    )


def evaluate_served(
    hidden: Float[Tensor, "n_texts d_model"], vectors: Float[Tensor, "n_concepts d_model"], labels: Int[Tensor, " n_texts"], concepts: list[str]
) -> ServedEvaluation:
    """Figures for one layer: `labels[t]` is the row of text t's concept in `vectors`, -1 for neutral texts."""
    return evaluate_z(
        zscore(served_scores(hidden, vectors)),
        labels,
        concepts,
        lambda directions: zscore(served_scores(hidden, directions.float())),
        hidden.shape[1],
    )


def combined_z(z_by_layer: Sequence[Tensor]) -> Float[Tensor, "n_texts n_concepts"]:
    """The multi-layer reading: each concept's z-scores averaged over the layers (fp64 mean, fp32 out)."""
    return torch.stack([z.double() for z in z_by_layer]).mean(0).float()


def evaluate_combined(
    hidden_by_layer: Sequence[Float[Tensor, "n_texts d_model"]],
    vectors_by_layer: Sequence[Float[Tensor, "n_concepts d_model"]],
    labels: Int[Tensor, " n_texts"],
    concepts: list[str],
) -> ServedEvaluation:
    """Figures for the mean-of-z reading over several layers: each layer's served scores z-scored over the
    evaluation texts as a single layer's are, then averaged per concept; random rows read the same way."""

    def read(vectors: Sequence[Tensor]) -> Tensor:
        return combined_z([zscore(served_scores(hidden, rows.float())) for hidden, rows in zip(hidden_by_layer, vectors)])

    d_model = hidden_by_layer[0].shape[1]
    return evaluate_z(read(vectors_by_layer), labels, concepts, lambda directions: read([directions] * len(hidden_by_layer)), d_model)


def evaluate_z(
    z: Float[Tensor, "n_texts n_concepts"],
    labels: Int[Tensor, " n_texts"],
    concepts: list[str],
    read_random: Callable[[Tensor], Tensor],
    d_model: int,
) -> ServedEvaluation:
    """Figures for one reading's z-scores, beside random unit rows read by `read_random`, with bootstrap intervals."""
    result = rank_metrics(z, labels, concepts)
    random_auroc, random_top1 = random_floor(lambda directions: rank_metrics(read_random(directions), labels, concepts), len(concepts), d_model)
    auroc_interval, top1_interval = bootstrap_interval(z, labels) or (None, None)
    return ServedEvaluation(
        result.mean_auroc,
        result.top1,
        random_auroc,
        random_top1,
        int(labels.shape[0]),
        len(result.per_concept),
        result.per_concept,
        result.confusions,
        auroc_interval,
        top1_interval,
    )
