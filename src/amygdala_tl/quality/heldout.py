"""Held-out evaluation: does a direction pick out a story it was not learned from?

Leave each story out in turn, re-derive every concept's direction without it, and score the
held-out story against every concept by dot product. For diff-of-means this needs no model run and
no refit: removing text t changes only running sums, so all leave-one-out directions of a layer
come from one vectorized pass. Grouped cross-validation (every method, refit per fold through a `FoldFit`)
and the development test set are the other protocols; `Heldout` puts them together.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, ClassVar

import numpy as np
import torch
from einops import einsum, rearrange, reduce
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..directions.pooled import diff_of_means, normalize
from ..directions.registry import HeldoutFit
from ..errors import UserError
from ..formats.readout import served_scores
from ..layers import relative_depth
from .evaluation import N_RANDOM_SEEDS, RankMetrics, ServedEvaluation, evaluate_combined, evaluate_served, random_floor, rank_metrics, zscore

# A refit for held-out evaluation: (layer slot, training acts [n, d], membership [C, n], kept text indices [n]) -> directions [C, d]
FoldFit = Callable[[int, Tensor, Tensor, Tensor], Tensor]


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


@dataclass
class LayerFigures:
    """What every protocol reports for one layer (quality.json's `heldout.layers.<layer>`)."""

    relative_depth: float
    mean_auroc: float | None
    top1: float | None
    random_auroc: float | None
    random_top1: float | None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class LooLayer(LayerFigures):
    """Leave-one-out: raw and centred scores (the concept offset mu . v_c subtracted)."""

    mean_auroc_centered: float | None
    top1_centered: float | None
    per_concept: dict[str, dict[str, float]]  # concept -> {"auroc", "top1"}


@dataclass
class CvLayer(LayerFigures):
    per_concept: dict[str, dict[str, float]]  # concept -> {"auroc", "top1", "n"}
    confusions: list[dict]


@dataclass
class DevLayer:
    """The development test set: `evaluate`'s figures at one layer."""

    relative_depth: float
    figures: ServedEvaluation

    def __getattr__(self, name: str) -> Any:
        """mean_auroc, top1, random_auroc, random_top1, per_concept...: the figures' own."""
        if name == "figures":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.figures, name)

    def to_json(self) -> dict:
        return {"relative_depth": self.relative_depth, **self.figures.to_json()}


HeldoutLayer = LooLayer | CvLayer | DevLayer


def ranked_layers(layers: Mapping[int, HeldoutLayer]) -> list[int]:
    """Best mean AUROC first (ties keep the layer order; an undefined AUROC counts as 0)."""
    return sorted(layers, key=lambda layer: -(layers[layer].mean_auroc or 0))


def layers_json(layers: Mapping[int, HeldoutLayer]) -> dict[str, dict]:
    return {str(layer): block.to_json() for layer, block in layers.items()}


@dataclass
class LeaveOneOut:
    layers: dict[int, LooLayer]
    protocol: ClassVar[str] = "leave-one-out"

    def to_json(self) -> dict:
        ranked = ranked_layers(self.layers)
        return {
            "n_random_seeds": N_RANDOM_SEEDS,
            "protocol": self.protocol,
            "layers": layers_json(self.layers),
            "recommended_layers": ranked,
            "best_layer": ranked[0] if ranked else None,
        }

    @classmethod
    def from_json(cls, data: dict) -> LeaveOneOut:
        return cls({int(layer): LooLayer(**block) for layer, block in data["layers"].items()})


@dataclass
class GroupedCV:
    n_splits: int
    layers: dict[int, CvLayer]
    by_writer: bool = False  # one fold per writer (the corpus manifest records them), else stratified group folds
    not_by_writer: str | None = None  # why not, when the run could not leave one writer out

    @property
    def protocol(self) -> str:
        return "leave-one-writer-out cross-validation" if self.by_writer else "grouped cross-validation"

    def to_json(self) -> dict:
        data = {"protocol": self.protocol, "n_splits": self.n_splits, "by_writer": self.by_writer, "layers": layers_json(self.layers)}
        return data if self.not_by_writer is None else data | {"not_by_writer": self.not_by_writer}

    @classmethod
    def from_json(cls, data: dict) -> GroupedCV:
        layers = {int(layer): CvLayer(**block) for layer, block in data["layers"].items()}
        return cls(data["n_splits"], layers, data.get("by_writer", False), data.get("not_by_writer"))


MAX_COMBINED = 3  # the multi-layer reading is evaluated over the best 2..3 layers (the default export holds 3)


@dataclass
class CombinedReading:
    """The mean-of-z reading over the `k` best layers (`layers`, best first) on the development test set."""

    k: int
    layers: list[int]
    figures: ServedEvaluation

    def to_json(self) -> dict:
        return {"layers_combined": self.k, "layers": self.layers, **self.figures.to_json()}

    @classmethod
    def from_json(cls, data: dict) -> CombinedReading:
        figures = {key: value for key, value in data.items() if key not in ("layers_combined", "layers")}
        return cls(data["layers_combined"], data["layers"], ServedEvaluation(**figures))


@dataclass
class DevelopmentSet:
    n_texts: int
    layers: dict[int, DevLayer]
    directory: str | None = None  # where the texts were read from (quality.json names it)
    combined: list[CombinedReading] = field(default_factory=list)  # the multi-layer readings, k = 2..MAX_COMBINED
    protocol: ClassVar[str] = "development test set"

    def to_json(self) -> dict:
        data: dict = {"protocol": self.protocol, "n_texts": self.n_texts, "layers": layers_json(self.layers)}
        data["combined"] = [reading.to_json() for reading in self.combined]
        return data if self.directory is None else data | {"directory": self.directory}

    @classmethod
    def from_json(cls, data: dict) -> DevelopmentSet:
        layers = {}
        for layer, block in data["layers"].items():
            figures = {key: value for key, value in block.items() if key != "relative_depth"}
            layers[int(layer)] = DevLayer(block["relative_depth"], ServedEvaluation(**figures))
        combined = [CombinedReading.from_json(block) for block in data.get("combined", [])]
        return cls(data["n_texts"], layers, data.get("directory"), combined)


def loo_metrics(
    scores: Float[Tensor, "n_texts n_concepts"], labels: Int[Tensor, " n_texts"], evaluable: Bool[Tensor, " n_concepts"], concepts: list[str]
) -> RankMetrics:
    """One-vs-rest AUROC per evaluable concept (held-out positives vs every other held-out text, baselines
    included) and top-1 (the held-out story's own concept ranks first among all concepts) over those
    concepts' stories: the texts of a concept that cannot be evaluated count only as negatives."""
    counted = (labels >= 0) & evaluable[labels.clamp_min(0)]
    return rank_metrics(scores, torch.where(counted, labels, torch.full_like(labels, -1)), concepts)


def beside_random(
    layer: int, n_layers: int, figures: RankMetrics, read_random: Callable[[Tensor], RankMetrics], n_concepts: int, d_model: int
) -> LayerFigures:
    """A layer's figures beside the random floor (random rows read by `read_random` as the learned ones were)."""
    random_auroc, random_top1 = random_floor(read_random, n_concepts, d_model)
    return LayerFigures(round(relative_depth(layer, n_layers), 4), figures.mean_auroc, figures.top1, random_auroc, random_top1)


def loo_random_metrics(
    layer_acts: Float[Tensor, "n_texts d_model"],
    labels: Int[Tensor, " n_texts"],
    evaluable: Bool[Tensor, " n_concepts"],
    concepts: list[str],
    directions: Tensor,
) -> RankMetrics:
    """Random rows read as leave-one-out reads its own: raw dot products."""
    return loo_metrics((layer_acts.double() @ directions.T).float(), labels, evaluable, concepts)


def heldout_evaluation(
    acts: Float[Tensor, "n_target_layers n_texts d_model"],
    layers: list[int],
    membership: Bool[Tensor, "n_concepts n_texts"],
    concepts: list[str],
    n_layers: int,
) -> LeaveOneOut:
    """Per layer: exact leave-one-out diff-of-means AUROC/top-1 (overall and per concept) beside the random floor."""
    labels = labels_of(membership)
    evaluable = membership.sum(-1) >= 2  # a concept needs a positive left after leaving one out
    result: dict[int, LooLayer] = {}
    for slot, layer in enumerate(layers):
        raw = loo_metrics(loo_pooled_scores(acts[slot], membership), labels, evaluable, concepts)
        centered = loo_metrics(loo_pooled_scores(acts[slot], membership, centered=True), labels, evaluable, concepts)
        base = beside_random(layer, n_layers, raw, partial(loo_random_metrics, acts[slot], labels, evaluable, concepts), len(concepts), acts.shape[2])
        result[layer] = LooLayer(
            **asdict(base),
            mean_auroc_centered=centered.mean_auroc,
            top1_centered=centered.top1,
            per_concept={concept: {"auroc": block["auroc"], "top1": block["top1"]} for concept, block in raw.per_concept.items()},
        )
    return LeaveOneOut(result)


CV_SPLITS = 5


def cv_folds(membership: Bool[Tensor, "n_concepts n_texts"], groups: list[int], n_splits: int = CV_SPLITS, seed: int = 0) -> list[np.ndarray]:
    """Held-out index sets: whole groups (a paired scenario's baseline and framings together) per fold,
    stratified by concept (sklearn StratifiedGroupKFold), so each fold holds about n_pos / n_splits
    stories of every concept, as a separately written test set does."""
    from sklearn.model_selection import StratifiedGroupKFold

    labels = labels_of(membership).numpy()
    member = membership.numpy()
    for splits in range(min(n_splits, int(membership.sum(-1).min()), len(set(groups))), 1, -1):
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


def writer_folds(membership: Bool[Tensor, "n_concepts n_texts"], groups: list[int]) -> list[np.ndarray] | None:
    """One held-out fold per group, when the groups are writers (with their scenarios): leave one writer out.
    Writers too small to be a fold of their own (one text, or no concept's positive: their texts would be
    z-scored among themselves alone) share one fold, joined to the smallest writer's when still too small.
    None when some writer's group holds every positive of a concept (nothing would be left to learn it from)."""
    ids, member = np.asarray(groups), membership.numpy()
    folds: list[np.ndarray] = []
    small: list[np.ndarray] = []
    for group in np.unique(ids):
        fold = np.flatnonzero(ids == group)
        (small if len(fold) < 2 or not member[:, fold].any() else folds).append(fold)
    if small:
        pooled = np.sort(np.concatenate(small))
        if (len(pooled) < 2 or not member[:, pooled].any()) and folds:
            smallest = min(range(len(folds)), key=lambda i: len(folds[i]))
            pooled = np.sort(np.concatenate([folds.pop(smallest), pooled]))
        folds.append(pooled)
    if len(folds) < 2 or not all((np.delete(member, held, axis=1).sum(-1) > 0).all() for held in folds):
        return None
    return folds


def fold_zscores(
    layer_acts: Float[Tensor, "n_texts d_model"], folds: list[np.ndarray], directions_of: Callable[[Tensor], Tensor], n_concepts: int
) -> Float[Tensor, "n_texts n_concepts"]:
    """Every text's served scores, z-scored over its fold, from the rows `directions_of(the fold's held-out mask)` gives."""
    z = torch.empty(layer_acts.shape[0], n_concepts)
    for held_indices in folds:
        held = torch.zeros(layer_acts.shape[0], dtype=torch.bool)
        held[torch.from_numpy(held_indices)] = True
        z[held] = zscore(served_scores(layer_acts[held], directions_of(held).float()))
    return z


def refit_without(
    slot: int, layer_acts: Float[Tensor, "n_texts d_model"], membership: Bool[Tensor, "n_concepts n_texts"], fit: FoldFit | None, held: Tensor
) -> Float[Tensor, "n_concepts d_model"]:
    """Directions learned from the texts outside `held`: diff-of-means, or the method's own refit."""
    kept = (~held).nonzero().flatten()
    train, train_membership = layer_acts[kept], membership[:, kept]
    return normalize(diff_of_means(train, train_membership)) if fit is None else fit(slot, train, train_membership, kept)


def cv_random_metrics(
    layer_acts: Float[Tensor, "n_texts d_model"], folds: list[np.ndarray], labels: Int[Tensor, " n_texts"], concepts: list[str], directions: Tensor
) -> RankMetrics:
    """Random rows read as cross-validation reads the learned ones: z-scored over each fold."""
    return rank_metrics(fold_zscores(layer_acts, folds, lambda _: directions, len(concepts)), labels, concepts)


def cv_evaluation(
    acts: Float[Tensor, "n_target_layers n_texts d_model"],
    layers: list[int],
    membership: Bool[Tensor, "n_concepts n_texts"],
    concepts: list[str],
    groups: list[int],
    n_layers: int,
    fit: FoldFit | None = None,
    by_writer: bool = False,
) -> GroupedCV:
    """Grouped cross-validation scored as `evaluate` scores: served fp16 rows, raw dot products of the held-out
    fold's texts, each concept's scores z-scored over the fold, then AUROC / top-1 over every held-out text.
    With `by_writer` (the groups are writers) one writer is held out at a time, when every fold leaves each
    concept a positive; else the stratified group folds of `cv_folds`."""
    writer_held = writer_folds(membership, groups) if by_writer else None
    folds = writer_held or cv_folds(membership, groups)
    labels = labels_of(membership)
    result: dict[int, CvLayer] = {}
    for slot, layer in enumerate(layers):
        layer_acts = acts[slot]
        fast = fit.fold_refits(layer_acts, membership) if isinstance(fit, HeldoutFit) else None
        learned = fold_zscores(layer_acts, folds, fast or partial(refit_without, slot, layer_acts, membership, fit), len(concepts))
        figures = rank_metrics(learned, labels, concepts)
        base = beside_random(layer, n_layers, figures, partial(cv_random_metrics, layer_acts, folds, labels, concepts), len(concepts), acts.shape[2])
        result[layer] = CvLayer(**asdict(base), per_concept=figures.per_concept, confusions=figures.confusions)
    return GroupedCV(len(folds), result, writer_held is not None)


def development_set_evaluation(
    dev_acts: Float[Tensor, "n_target_layers n_dev d_model"],
    layers: list[int],
    directions: Float[Tensor, "n_target_layers n_concepts d_model"],
    dev_labels: Int[Tensor, " n_dev"],
    concepts: list[str],
    n_layers: int,
    directory: str | None = None,
) -> DevelopmentSet:
    """The exported rows on the separately written test set, exactly as `evaluate` reads them; beside the single
    layers, the mean-of-z reading over the best k of them (k = 2..MAX_COMBINED), as `evaluate --layers-combined k`."""
    single = {
        layer: DevLayer(round(relative_depth(layer, n_layers), 4), evaluate_served(dev_acts[slot], directions[slot], dev_labels, concepts))
        for slot, layer in enumerate(layers)
    }
    ranked = ranked_layers(single)
    combined = []
    for k in range(2, min(MAX_COMBINED, len(layers)) + 1):
        slots = [layers.index(layer) for layer in ranked[:k]]
        figures = evaluate_combined([dev_acts[slot] for slot in slots], [directions[slot] for slot in slots], dev_labels, concepts)
        combined.append(CombinedReading(k, ranked[:k], figures))
    return DevelopmentSet(int(dev_acts.shape[1]), single, directory, combined)


DISAGREEMENT_AUROC = 0.03


@dataclass
class Heldout:
    """quality.json's `heldout`: the figure a client will get leads (the development test set when there is
    one, else grouped cross-validation); best and recommended layers follow from it; every protocol stays
    beside under its own name, and a cross-validation / test-set gap above 0.03 AUROC is said."""

    grouped_cv: GroupedCV
    development_set: DevelopmentSet | None = None
    leave_one_out: LeaveOneOut | None = None

    @property
    def lead(self) -> GroupedCV | DevelopmentSet:
        return self.development_set or self.grouped_cv

    @property
    def protocol(self) -> str:
        return self.lead.protocol

    @property
    def layers(self) -> Mapping[int, HeldoutLayer]:
        return self.lead.layers

    @property
    def recommended_layers(self) -> list[int]:
        return ranked_layers(self.layers)

    @property
    def best_layer(self) -> int:
        return self.recommended_layers[0]

    @property
    def tied_with_best(self) -> list[int]:
        """The other layers whose 90% AUROC interval reaches the best layer's AUROC: the data cannot tell them from
        it (empty when the leading protocol has no intervals)."""
        best = self.layers[self.best_layer].mean_auroc or 0.0
        return [
            layer
            for layer in self.recommended_layers[1:]
            if (interval := getattr(self.layers[layer], "auroc_interval", None)) is not None and interval[1] >= best
        ]

    @property
    def recommended_combined(self) -> CombinedReading | None:
        """The best multi-layer reading on the development test set when it beats the best single layer beyond its
        interval (the lower end of its 90% AUROC interval above the best layer's AUROC), else None."""
        if self.development_set is None or not self.development_set.combined:
            return None
        best = max(self.development_set.combined, key=lambda reading: reading.figures.mean_auroc or 0.0)
        single, interval = self.development_set.layers[self.best_layer].mean_auroc, best.figures.auroc_interval
        if single is None or interval is None or interval[0] <= single:
            return None
        return best

    @property
    def disagreement(self) -> str | None:
        """Cross-validation outside the development test set's 90% AUROC interval at some layer (beyond 0.03 AUROC
        where the test set has no interval): the layer where it lies furthest outside, said in the report's first
        lines."""
        if self.development_set is None:
            return None
        dev, cv = self.development_set.layers, self.grouped_cv.layers
        outside: dict[int, float] = {}
        for layer in dev:
            dev_auroc, cv_auroc = dev[layer].mean_auroc, cv[layer].mean_auroc
            if dev_auroc is None or cv_auroc is None:
                continue
            low, high = dev[layer].auroc_interval or (dev_auroc - DISAGREEMENT_AUROC, dev_auroc + DISAGREEMENT_AUROC)
            if not low <= cv_auroc <= high:
                outside[layer] = cv_auroc - dev_auroc
        if not outside:
            return None
        worst = max(outside, key=lambda layer: abs(outside[layer]))
        return (
            f"{self.grouped_cv.protocol} and the development test set disagree beyond the test set's interval at "
            f"{len(outside)} of {len(dev)} layers, most at layer {worst} ({outside[worst]:+.3f} AUROC): trust the test set, "
            "which was written apart from the corpus"
        )

    def to_json(self) -> dict:
        return {
            "protocol": self.protocol,
            "n_random_seeds": N_RANDOM_SEEDS,
            "layers": layers_json(self.layers),
            "recommended_layers": self.recommended_layers,
            "best_layer": self.best_layer,
            "tied_with_best": self.tied_with_best,
            "recommended_combined": (combined := self.recommended_combined) and combined.to_json(),
            "protocols": {
                "development_set": self.development_set.to_json() if self.development_set else None,
                "grouped_cv": self.grouped_cv.to_json(),
                "leave_one_out": self.leave_one_out.to_json() if self.leave_one_out else None,
            },
            "disagreement": self.disagreement,
        }

    @classmethod
    def from_json(cls, data: dict) -> Heldout:
        """Read back a block quality.json holds (`report` keeps a subspace run's)."""
        protocols = data["protocols"]
        dev, loo = protocols.get("development_set"), protocols.get("leave_one_out")
        return cls(
            GroupedCV.from_json(protocols["grouped_cv"]),
            DevelopmentSet.from_json(dev) if dev is not None else None,
            LeaveOneOut.from_json(loo) if loo is not None else None,
        )


def heldout_line(layer: int, block: HeldoutLayer, describe: Callable[[int], str]) -> str:
    """`layer 15 (52%): AUROC 0.91, top-1 0.48 (random 0.50 / 0.02)`."""
    return f"{describe(layer)}: AUROC {block.mean_auroc:.3f}, top-1 {block.top1:.3f} (random {block.random_auroc:.2f} / {block.random_top1:.3f})"


def combined_line(reading: CombinedReading) -> str:
    """`mean of z over layers 27, 29, 28: AUROC 0.934 [0.92, 0.95], top-1 0.57 [0.52, 0.62]`."""
    figures, interval = reading.figures, reading.figures.auroc_interval
    shown = f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
    top1 = reading.figures.top1_interval
    return f"mean of z over layers {', '.join(map(str, reading.layers))}: AUROC {figures.mean_auroc:.3f}{shown}, top-1 {figures.top1:.3f}" + (
        f" [{top1[0]:.3f}, {top1[1]:.3f}]" if top1 else ""
    )
