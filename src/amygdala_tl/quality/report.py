"""quality.json: every metric of docs/methods.md per concept, the triage, and the held-out evaluation.

Metrics describe the vectors as exported (the fp16 file, in fp32), so `extract --quality-report`
and `report` (from the activation store, no model) produce the same file.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..corpus import Story
from .heldout import Fit, cv_evaluation, development_set_evaluation, heldout_evaluation, leading_heldout
from .metrics import concept_metrics, cosine_matrix, linear_combination, nearest_concepts

CONTAMINATED_COSINE = 0.8
CLEAN_FIRST_PC = 0.7
FRAGMENTED_FIRST_PC = 0.4
SINGLE_NEURON_COSINE = 0.6
REDUNDANT_R2 = 0.9
MIN_STORIES_FOR_TRIAGE = 3  # with 1-2 stories the first-PC ratio is 1.0 by construction


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
    per_head: dict | None = None
    subspace: dict | None = None
    method: str = "pooled"
    fit: Fit | None = None  # None: held-out via the exact leave-one-out diff-of-means
    heldout: dict | None = None  # a held-out block computed earlier (report on a subspace run)
    groups: list[int] | None = None  # cross-validation groups: a paired scenario's texts share one
    dev: DevSet | None = None  # the development test set's activations pooled as the run reads, when there is one


@dataclass
class DevSet:
    """The development test set as `evaluate` reads it: activations pooled as the export declares, row of each text's concept (-1: neutral)."""

    acts: Float[Tensor, "n_target_layers n_dev d_model"]
    labels: Int[Tensor, " n_dev"]
    directory: str


def heldout_block(inputs: QualityInputs) -> dict:
    concepts, layers = inputs.concepts, inputs.layers
    groups = inputs.groups if inputs.groups is not None else list(range(inputs.acts.shape[1]))
    cv = cv_evaluation(inputs.acts, layers, inputs.membership, concepts, groups, inputs.n_layers, inputs.fit)
    loo = heldout_evaluation(inputs.acts, layers, inputs.membership, concepts, inputs.n_layers) if inputs.fit is None else None
    dev = None
    if inputs.dev is not None:
        dev = development_set_evaluation(inputs.dev.acts, layers, inputs.directions, inputs.dev.labels, concepts, inputs.n_layers)
        dev["directory"] = inputs.dev.directory
    return leading_heldout(loo, cv, dev)


def middle_layer(layers: list[int]) -> int:
    return layers[len(layers) // 2]


def build_quality(inputs: QualityInputs) -> dict:
    concepts, layers = inputs.concepts, inputs.layers
    middle = middle_layer(layers)
    cosines = {layer: cosine_matrix(inputs.directions[slot]) for slot, layer in enumerate(layers)}
    report: dict = {"method": inputs.method, "layers": layers, "n_layers": inputs.n_layers, "middle_layer": middle, "concepts": {}}
    for c, concept in enumerate(concepts):
        positive = inputs.membership[c]
        paths = [str(story.path) for story, keep in zip(inputs.stories, positive.tolist()) if keep]
        entry: dict = {"n_positive_stories": int(positive.sum()), "per_layer": {}, "linear_combination": {}}
        for slot, layer in enumerate(layers):
            block, alignment = concept_metrics(inputs.acts[slot], positive, inputs.directions[slot, c], inputs.w_out.get(layer))
            entry["per_layer"][str(layer)] = block
            entry["linear_combination"][str(layer)] = linear_combination(inputs.directions[slot], concepts, c)
            if layer == middle:
                order = torch.argsort(alignment)[:2]
                entry["outlier_stories"] = [{"path": paths[i], "alignment": float(alignment[i])} for i in order]
        entry["nearest_concepts"] = nearest_concepts(cosines[middle], concepts, c)
        if inputs.per_head is not None:
            entry["per_head"] = inputs.per_head["concepts"].get(concept, {})
        if inputs.subspace is not None:
            entry["subspace_eigvals"] = {layer: block["eigvals"] for layer, block in inputs.subspace["concepts"].get(concept, {}).items()}
        report["concepts"][concept] = entry
    report["triage"] = triage(report, middle)
    report["heldout"] = inputs.heldout or heldout_block(inputs)
    if inputs.per_head is not None:
        report["per_head_skipped_layers"] = inputs.per_head.get("skipped_layers", [])
    report["cosine_matrices"] = {str(layer): [[round(float(v), 4) for v in row] for row in matrix] for layer, matrix in cosines.items()}
    return report


def triage(report: dict, middle: int) -> dict:
    """Buckets at the middle target layer, as docs/methods.md defines them (redundant counted on its own)."""
    buckets: dict[str, list[str]] = {
        name: [] for name in ("too_few_stories", "contaminated", "clean_single_neuron", "clean_low_dim_circuit", "fragmented", "mixed", "redundant")
    }
    for concept, entry in report["concepts"].items():
        block = entry["per_layer"][str(middle)]
        r_squared = entry["linear_combination"][str(middle)]["r_squared"]
        if r_squared is not None and r_squared > REDUNDANT_R2:
            buckets["redundant"].append(concept)
        first_pc, neuron = block["first_pc_variance_ratio"], block["best_neuron_cosine"]
        if entry["n_positive_stories"] < MIN_STORIES_FOR_TRIAGE:
            buckets["too_few_stories"].append(concept)
        elif entry["nearest_concepts"] and entry["nearest_concepts"][0][1] > CONTAMINATED_COSINE:
            buckets["contaminated"].append(concept)
        elif first_pc > CLEAN_FIRST_PC and neuron is not None and abs(neuron) > SINGLE_NEURON_COSINE:
            buckets["clean_single_neuron"].append(concept)
        elif first_pc > CLEAN_FIRST_PC:
            buckets["clean_low_dim_circuit"].append(concept)
        elif first_pc < FRAGMENTED_FIRST_PC:
            buckets["fragmented"].append(concept)
        else:
            buckets["mixed"].append(concept)
    return {"layer": middle, **buckets}
