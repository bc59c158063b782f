"""The analysis step `extract` and `report` share: per-head decomposition and the quality inputs.

Both get the target layers' weights as one `{layer: {"W_out", "W_O"}}` dict: `extract` reads it off
the model (and stores it), `report` reads it back from the activation store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from .. import hooks
from ..capture import Activations
from ..capture.store import ActivationStore
from ..corpus import NEUTRAL, Corpus, Story, load_heldout
from ..corpus.check import NEAR_DUPLICATE_JACCARD, NGRAM, heldout_near_copies
from ..directions.heads import PerHead, direct_contribution, head_report, head_stats
from ..errors import UserError
from ..model import LoadedModel
from ..quality.heldout import FoldFit, Heldout
from ..quality.report import DevSet, QualityInputs

LayerWeights = dict[int, dict[str, Tensor]]


def model_weights(model: LoadedModel, layers: list[int]) -> LayerWeights:
    """W_out [d_mlp, d_model] (rows: what each MLP neuron writes) and W_O [n_heads, d_head, d_model] per layer, fp32 CPU."""
    from transformer_lens.model_bridge.generalized_components.base import align_offloaded_subtree

    weights: LayerWeights = {}
    for layer in layers:
        block, entry = model.bridge.blocks[layer], {}
        with align_offloaded_subtree(block):  # under accelerate's disk/CPU offload the weights sit on `meta` until materialized
            mlp = getattr(block, "mlp", None)
            if mlp is not None and hasattr(mlp, "W_out"):
                entry["W_out"] = mlp.W_out.detach().float().cpu()
            if hooks.attn_z(layer) in model.bridge.hook_dict:
                entry["W_O"] = block.attn.W_O.detach().float().cpu()
        weights[layer] = entry
    return weights


def stored_weights(store: ActivationStore, layers: list[int]) -> LayerWeights | None:
    """Every target layer's weights from the store, or None if one is absent or does not verify (that one is warned about)."""
    entries = {layer: store.load_weights(layer) for layer in layers}  # each one read: every damaged file is set aside now
    weights = {layer: entry for layer, entry in entries.items() if entry is not None}
    return weights if len(weights) == len(layers) else None


def save_weights(store: ActivationStore, weights: LayerWeights) -> None:
    """So `report` can rank neurons and heads without the model."""
    for layer, entry in weights.items():
        if not store.weights_path(layer).is_file():
            store.save_weights(layer, entry)


def head_analysis(
    weights: LayerWeights,
    acts: Activations,
    membership: Bool[Tensor, "n_concepts n_texts"],
    directions: Float[Tensor, "n_target_layers n_concepts d_model"],
    concepts: list[str],
    skipped: list[int],
) -> PerHead:
    """per_head.json: top heads, concentration and direct contribution per concept and head layer."""
    report = PerHead(acts.z.shape[2] if acts.z is not None else 0, {concept: {} for concept in concepts}, skipped)
    for slot, layer in enumerate(acts.head_layers):
        assert acts.z is not None
        stats = head_stats(acts.z[slot], membership)
        contribution = direct_contribution(stats.diff, weights[layer]["W_O"], directions[acts.layers.index(layer)])
        for c, concept in enumerate(concepts):
            report.concepts[concept][layer] = head_report(stats, contribution, c)
    return report


def quality_inputs(
    corpus: Corpus,
    concepts: list[str],
    acts: Activations,
    directions: Float[Tensor, "n_target_layers n_concepts d_model"],
    weights: LayerWeights,
    n_layers: int,
    method: str,
    per_head: PerHead | None,
    subspace: dict | None,
    fit: FoldFit | None,
    heldout: Heldout | None = None,
    dev: DevSet | None = None,
) -> QualityInputs:
    return QualityInputs(
        concepts=concepts,
        layers=acts.layers,
        n_layers=n_layers,
        stories=corpus.stories,
        acts=acts.resid,
        membership=corpus.membership(concepts),
        directions=directions,
        w_out={layer: weights[layer].get("W_out") for layer in acts.layers},
        per_head=per_head,
        subspace=subspace,
        method=method,
        fit=fit,
        heldout=heldout,
        groups=corpus.groups(),
        dev=dev,
    )


def heldout_dir_of(corpus_dir: Path | None, given: Path | None) -> Path | None:
    """The development test set: --heldout, else <corpus>/heldout when it exists."""
    if given is not None:
        return Path(given)
    default = Path(corpus_dir) / "heldout" if corpus_dir is not None else None
    return default if default is not None and default.is_dir() else None


def load_dev_stories(directory: Path, corpus: Corpus, concepts: list[str], log: Callable[[str], None]) -> list[Story] | None:
    """The development test set, checked before any model loads: never a training text nor a near-copy of one
    (word 5-gram Jaccard above the corpus check's threshold), at least one exported concept to score (else None: the report falls back to cross-validation, and says why)."""
    stories = load_heldout(directory)
    training = {story.sha256: story.path for story in corpus.stories}
    if leaked := next((story for story in stories if story.sha256 in training), None):
        raise UserError(
            f"held-out text {leaked.path} is the same text as training story {training[leaked.sha256]}: the test set must never be trained on"
        )
    if copies := heldout_near_copies([(s.path, s.text) for s in corpus.stories], [(s.path, s.text) for s in stories]):
        held, trained, jaccard = copies[0]
        more = f" (and {len(copies) - 1} more such pairs)" if len(copies) > 1 else ""
        raise UserError(
            f"held-out text {held} is a near-copy of training story {trained} (word {NGRAM}-gram Jaccard {jaccard:.2f} > "
            f"{NEAR_DUPLICATE_JACCARD}){more}: the test set must never be trained on; rewrite or remove one of them"
        )
    covered = sorted({s.label for s in stories if s.label != NEUTRAL})
    if skipped := [c for c in covered if c not in concepts]:
        log(f"development test set: {', '.join(skipped)} not exported; their texts are read as neutral")
    if not any(s.label in concepts for s in stories):
        log(f"development test set {directory} has no text of an exported concept: the report leads with cross-validation")
        return None
    return stories


def dev_set(stories: list[Story], directory: Path, concepts: list[str], read: Callable[[list[str]], Tensor]) -> DevSet:
    """The development test set's pooled activations ([n_target_layers, n_dev, d_model], from `read`) and labels."""
    labels = torch.tensor([concepts.index(s.label) if s.label in concepts else -1 for s in stories])
    return DevSet(read([s.text for s in stories]), labels, str(Path(directory).resolve()))
