"""quality.json: every metric of docs/methods.md per concept, the triage, and the held-out evaluation.

Metrics describe the vectors as exported (the fp16 file, in fp32), so `extract --quality-report`
and `report` (from the activation store, no model) produce the same file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..corpus import Story
from ..directions.heads import PerHead
from .heldout import FoldFit, Heldout, cv_evaluation, development_set_evaluation, heldout_evaluation
from .metrics import concept_metrics, cosine_matrix, linear_combination, nearest_concepts
from .triage import Triage, triage


@dataclass(kw_only=True)
class QualityInputs:
    """Everything build_quality reads, built by keyword (pipelines/analysis.quality_inputs)."""

    concepts: list[str]
    layers: list[int]
    n_layers: int
    stories: list[Story]
    acts: Float[Tensor, "n_target_layers n_texts d_model"]
    membership: Bool[Tensor, "n_concepts n_texts"]
    directions: Float[Tensor, "n_target_layers n_concepts d_model"]
    w_out: dict[int, Tensor | None]
    per_head: PerHead | None = None
    subspace: dict | None = None
    method: str = "pooled"
    fit: FoldFit | None = None  # None: held-out via the exact leave-one-out diff-of-means
    heldout: Heldout | None = None  # a held-out block computed earlier (report on a subspace run)
    groups: list[int] | None = None  # cross-validation groups: a paired scenario's texts share one, and a writer's
    not_by_writer: str | None = "no writers given"  # None: the groups are writers, held out one at a time; else why not
    dev: DevSet | None = None  # the development test set's activations pooled as the run reads, when there is one


@dataclass
class DevSet:
    """The development test set as `evaluate` reads it: activations pooled as the export declares, row of each text's concept (-1: neutral)."""

    acts: Float[Tensor, "n_target_layers n_dev d_model"]
    labels: Int[Tensor, " n_dev"]
    directory: str


def heldout_block(inputs: QualityInputs) -> Heldout:
    concepts, layers = inputs.concepts, inputs.layers
    groups = inputs.groups if inputs.groups is not None else list(range(inputs.acts.shape[1]))
    cv = cv_evaluation(inputs.acts, layers, inputs.membership, concepts, groups, inputs.n_layers, inputs.fit, inputs.not_by_writer is None)
    cv.not_by_writer = None if cv.by_writer else inputs.not_by_writer
    loo = heldout_evaluation(inputs.acts, layers, inputs.membership, concepts, inputs.n_layers) if inputs.fit is None else None
    dev = None
    if inputs.dev is not None:
        dev = development_set_evaluation(
            inputs.dev.acts, layers, inputs.directions, inputs.dev.labels, concepts, inputs.n_layers, inputs.dev.directory
        )
    return Heldout(cv, dev, loo)


def middle_layer(layers: list[int]) -> int:
    return layers[len(layers) // 2]


@dataclass
class ConceptQuality:
    """One concept's entry in quality.json's `concepts`."""

    n_positive_stories: int
    per_layer: dict[int, dict] = field(default_factory=dict)  # metrics.concept_metrics's block
    linear_combination: dict[int, dict] = field(default_factory=dict)  # metrics.linear_combination's block
    outlier_stories: list[dict] = field(default_factory=list)  # the two least aligned positives at the middle layer
    nearest_concepts: list[list] = field(default_factory=list)
    per_head: dict[str, dict] | None = None  # per_head.json's block for the concept, when heads were analysed
    subspace_eigvals: dict | None = None

    def to_json(self) -> dict:
        data: dict = {
            "n_positive_stories": self.n_positive_stories,
            "per_layer": {str(layer): block for layer, block in self.per_layer.items()},
            "linear_combination": {str(layer): block for layer, block in self.linear_combination.items()},
            "outlier_stories": self.outlier_stories,
            "nearest_concepts": self.nearest_concepts,
        }
        if self.per_head is not None:
            data["per_head"] = self.per_head
        if self.subspace_eigvals is not None:
            data["subspace_eigvals"] = self.subspace_eigvals
        return data


@dataclass
class Quality:
    """quality.json."""

    method: str
    layers: list[int]
    n_layers: int
    middle_layer: int
    concepts: dict[str, ConceptQuality]
    triage: Triage
    heldout: Heldout
    cosine_matrices: dict[int, Tensor]
    per_head_skipped_layers: list[dict] | None = None

    def to_json(self) -> dict:
        data: dict = {
            "method": self.method,
            "layers": self.layers,
            "n_layers": self.n_layers,
            "middle_layer": self.middle_layer,
            "concepts": {concept: entry.to_json() for concept, entry in self.concepts.items()},
            "triage": self.triage.to_json(),
            "heldout": self.heldout.to_json(),
        }
        if self.per_head_skipped_layers is not None:
            data["per_head_skipped_layers"] = self.per_head_skipped_layers
        data["cosine_matrices"] = {
            str(layer): [[round(float(v), 4) for v in row] for row in matrix] for layer, matrix in self.cosine_matrices.items()
        }
        return data


def concept_quality(inputs: QualityInputs, c: int, middle: int, cosines: Float[Tensor, "n_concepts n_concepts"]) -> ConceptQuality:
    concept, positive = inputs.concepts[c], inputs.membership[c]
    paths = [str(story.path) for story, keep in zip(inputs.stories, positive.tolist()) if keep]
    entry = ConceptQuality(int(positive.sum()))
    for slot, layer in enumerate(inputs.layers):
        block, alignment = concept_metrics(inputs.acts[slot], positive, inputs.directions[slot, c], inputs.w_out.get(layer))
        entry.per_layer[layer] = block
        entry.linear_combination[layer] = linear_combination(inputs.directions[slot], inputs.concepts, c)
        if layer == middle:
            order = torch.argsort(alignment)[:2]
            entry.outlier_stories = [{"path": paths[i], "alignment": float(alignment[i])} for i in order]
    entry.nearest_concepts = nearest_concepts(cosines, inputs.concepts, c)
    if inputs.per_head is not None:
        entry.per_head = inputs.per_head.concept_json(concept)
    if inputs.subspace is not None:
        entry.subspace_eigvals = {layer: block["eigvals"] for layer, block in inputs.subspace["concepts"].get(concept, {}).items()}
    return entry


def build_quality(inputs: QualityInputs) -> Quality:
    middle = middle_layer(inputs.layers)
    cosines = {layer: cosine_matrix(inputs.directions[slot]) for slot, layer in enumerate(inputs.layers)}
    concepts = {concept: concept_quality(inputs, c, middle, cosines[middle]) for c, concept in enumerate(inputs.concepts)}
    heldout = inputs.heldout or heldout_block(inputs)
    return Quality(
        inputs.method,
        inputs.layers,
        inputs.n_layers,
        middle,
        concepts,
        triage(concepts, heldout),
        heldout,
        cosines,
        inputs.per_head.skipped_json() if inputs.per_head is not None else None,
    )
