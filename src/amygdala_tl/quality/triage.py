"""The triage: each concept sorted by evidence, each bucket with the action it implies.

Read at the best layer of the leading held-out protocol (the development test set when there is one,
else grouped cross-validation): its per-concept AUROC and top-1 and its confusions, and at the same
layer the exported direction's ridge R^2 on the other concepts, head concentration and best MLP
neuron. A concept lands in every bucket its evidence supports; `clean` holds the concepts in none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from .heldout import Heldout

if TYPE_CHECKING:
    from .report import ConceptQuality

WEAK_AUROC = 0.85  # held-out AUROC below this: weak
CONFUSED_TOP1 = 0.5  # held-out top-1 below this (most of its texts read as other concepts): confused
REDUNDANT_R2 = 0.9  # ridge R^2 of the direction on the other concepts above this: redundant
SPARSE_HEAD_CONCENTRATION = 0.5  # share of the top heads' output norm above this: a sparse head circuit
SINGLE_NEURON_COSINE = 0.6  # |cosine| of the best MLP output neuron above this: a single neuron

BARS = {
    "weak_auroc_below": WEAK_AUROC,
    "confused_top1_below": CONFUSED_TOP1,
    "redundant_r2_above": REDUNDANT_R2,
    "head_concentration_above": SPARSE_HEAD_CONCENTRATION,
    "neuron_cosine_above": SINGLE_NEURON_COSINE,
}

# bucket -> (the evidence, the action it implies); the order is the order printed
BUCKETS: dict[str, tuple[str, str]] = {
    "weak": (
        f"held-out AUROC below {WEAK_AUROC}",
        "its vector does not pick out its own held-out texts: write more varied stories for it (new situations, no shared cue words), or do not rely on it",
    ),
    "confused_with": (
        f"held-out top-1 below {CONFUSED_TOP1}, read as the concepts named",
        "its texts are read as the concepts named: write stories that contrast it with them, or merge them if they are one feeling",
    ),
    "redundant": (
        f"ridge R2 on the other directions above {REDUNDANT_R2}",
        "its direction is nearly a combination of the others: drop it, or read it as that combination",
    ),
    "sparse_head_circuit": (
        f"head concentration above {SPARSE_HEAD_CONCENTRATION}",
        "a few attention heads write it: patch or ablate those heads to test it causally",
    ),
    "single_neuron": (
        f"best MLP neuron |cosine| above {SINGLE_NEURON_COSINE}",
        "one MLP neuron writes along it: that neuron's activation reads it, and its output row steers it",
    ),
    "not_evaluated": (
        "no held-out text of it in the leading protocol",
        "add held-out texts of it: nothing says yet whether it works",
    ),
    "clean": ("none of the above", "use it as it is"),
}


@dataclass
class ConceptTriage:
    """One concept's evidence at the triage layer and the buckets it lands in."""

    buckets: list[str]
    auroc: float | None = None
    top1: float | None = None
    n_heldout: int | None = None
    confused_with: list[list] = field(default_factory=list)  # [[concept read instead, count], ...], most first
    r_squared: float | None = None
    top_contributors: list[list] = field(default_factory=list)  # ridge's [[concept, coef], ...]
    head_concentration: float | None = None
    top_heads: list[int] = field(default_factory=list)
    best_neuron: int | None = None
    best_neuron_cosine: float | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Triage:
    """quality.json's `triage`: the layer and protocol it reads, its bars, each bucket's concepts and action."""

    layer: int
    protocol: str
    concepts: dict[str, ConceptTriage]

    @property
    def buckets(self) -> dict[str, list[str]]:
        return {name: [c for c, entry in self.concepts.items() if name in entry.buckets] for name in BUCKETS}

    def to_json(self) -> dict:
        return {
            "layer": self.layer,
            "protocol": self.protocol,
            "bars": BARS,
            "buckets": {
                name: {"evidence": BUCKETS[name][0], "action": BUCKETS[name][1], "concepts": members} for name, members in self.buckets.items()
            },
            "concepts": {concept: entry.to_json() for concept, entry in self.concepts.items()},
        }


def confused_with(confusions: list[dict], concept: str) -> list[list]:
    """The concepts this one's held-out texts were read as, with counts, most first."""
    return [[c["read_as"], c["count"]] for c in confusions if c["concept"] == concept]


def concept_triage(entry: ConceptQuality, layer: int, heldout: Mapping[str, float] | None, confusions: list[dict], concept: str) -> ConceptTriage:
    """Sort one concept by its evidence at `layer` (`heldout`: its per-concept held-out figures, None when it has none)."""
    block = entry.per_layer[layer]
    ridge = entry.linear_combination[layer]
    heads = (entry.per_head or {}).get(str(layer))
    result = ConceptTriage(
        [],
        r_squared=ridge["r_squared"],
        top_contributors=ridge["top_contributors"],
        head_concentration=heads["head_concentration"] if heads else None,
        top_heads=[int(h[0]) for h in heads["top_heads"][: heads["concentration_k"]]] if heads else [],
        best_neuron=block["best_neuron_idx"],
        best_neuron_cosine=block["best_neuron_cosine"],
    )
    if heldout is None:
        result.buckets.append("not_evaluated")
    else:
        result.auroc, result.top1 = heldout["auroc"], heldout["top1"]
        result.n_heldout = int(heldout["n"]) if "n" in heldout else None
        if result.auroc < WEAK_AUROC:
            result.buckets.append("weak")
        if result.top1 < CONFUSED_TOP1:
            result.confused_with = confused_with(confusions, concept)
            result.buckets.append("confused_with")
    if result.r_squared is not None and result.r_squared > REDUNDANT_R2:
        result.buckets.append("redundant")
    if result.head_concentration is not None and result.head_concentration > SPARSE_HEAD_CONCENTRATION:
        result.buckets.append("sparse_head_circuit")
    if result.best_neuron_cosine is not None and abs(result.best_neuron_cosine) > SINGLE_NEURON_COSINE:
        result.buckets.append("single_neuron")
    if not result.buckets:
        result.buckets.append("clean")
    return result


def triage(concepts: Mapping[str, ConceptQuality], heldout: Heldout) -> Triage:
    """Every concept at the leading protocol's best layer (the layer the report recommends reading)."""
    layer = heldout.best_layer
    block = heldout.layers[layer]
    confusions: list[dict] = getattr(block, "confusions", [])
    return Triage(
        layer,
        heldout.protocol,
        {concept: concept_triage(entry, layer, block.per_concept.get(concept), confusions, concept) for concept, entry in concepts.items()},
    )
