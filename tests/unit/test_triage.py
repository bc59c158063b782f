"""The triage sorts concepts by evidence: constructed metric inputs reach every bucket, and on constructed
activations each concept lands where what was planted puts it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from amygdala_tl.corpus import Story
from amygdala_tl.directions.heads import PerHead, head_report, head_stats
from amygdala_tl.directions.pooled import diff_of_means, normalize
from amygdala_tl.quality.heldout import CvLayer, GroupedCV, Heldout
from amygdala_tl.quality.html import render_html
from amygdala_tl.quality.output import summary_lines
from amygdala_tl.quality.report import ConceptQuality, QualityInputs, build_quality
from amygdala_tl.quality.triage import BUCKETS, WEAK_AUROC, triage

LAYER = 4


def entry(neuron: float = 0.1, r2: float = 0.3, heads: float | None = 0.2) -> ConceptQuality:
    per_head = (
        None
        if heads is None
        else {str(LAYER): {"top_heads": [[5, 2.0, 3.0], [1, 1.0, 1.5], [0, 0.5, 0.2]], "head_concentration": heads, "concentration_k": 2}}
    )
    return ConceptQuality(
        6,
        per_layer={LAYER: {"best_neuron_idx": 17, "best_neuron_cosine": neuron, "first_pc_variance_ratio": 0.3}},
        linear_combination={LAYER: {"r_squared": r2, "residual_norm": 0.5, "top_contributors": [["calm", 0.6]]}},
        per_head=per_head,
    )


def cv_heldout(per_concept: dict[str, tuple[float, float]], confusions: list[dict]) -> Heldout:
    figures = {c: {"auroc": auroc, "top1": top1, "n": 4} for c, (auroc, top1) in per_concept.items()}
    layer = CvLayer(0.5, 0.9, 0.6, 0.5, 0.02, per_concept=figures, confusions=confusions)
    other = CvLayer(0.25, 0.7, 0.4, 0.5, 0.02, per_concept=figures, confusions=[])
    return Heldout(GroupedCV(5, {LAYER - 2: other, LAYER: layer}))


def test_constructed_metrics_reach_every_bucket_with_the_evidence_that_put_them_there():
    concepts = {
        "calm": entry(),
        "weak": entry(),
        "guilt": entry(),
        "mixture": entry(r2=0.95),
        "heady": entry(heads=0.7),
        "neuronal": entry(neuron=-0.75),
        "unseen": entry(heads=None),
        "borderline": entry(neuron=0.6, r2=0.9, heads=0.5),  # exactly at every bar: not flagged
        "both": entry(r2=0.92),
    }
    heldout = cv_heldout(
        {
            "calm": (0.97, 0.75),
            "weak": (0.70, 0.5),
            "guilt": (0.93, 0.25),
            "mixture": (0.95, 0.75),
            "heady": (0.96, 1.0),
            "neuronal": (0.99, 1.0),
            "borderline": (WEAK_AUROC, 0.5),
            "both": (0.6, 0.0),
        },
        [
            {"concept": "guilt", "read_as": "shame", "count": 2},
            {"concept": "both", "read_as": "calm", "count": 3},
            {"concept": "guilt", "read_as": "calm", "count": 1},
            {"concept": "weak", "read_as": "calm", "count": 1},
        ],
    )
    result = triage(concepts, heldout)
    assert result.layer == LAYER and result.protocol == "grouped cross-validation"  # the leading protocol's best layer
    assert result.buckets == {
        "weak": ["weak", "both"],
        "confused_with": ["guilt", "both"],
        "redundant": ["mixture", "both"],
        "sparse_head_circuit": ["heady"],
        "single_neuron": ["neuronal"],
        "not_evaluated": ["unseen"],
        "clean": ["calm", "borderline"],
    }
    assert list(result.buckets) == list(BUCKETS)
    assert result.concepts["guilt"].confused_with == [["shame", 2], ["calm", 1]]
    assert result.concepts["weak"].confused_with == []  # its top-1 (0.5) is not below the bar: not confused
    assert result.concepts["heady"].top_heads == [5, 1] and result.concepts["neuronal"].best_neuron == 17
    assert result.concepts["unseen"].auroc is None and result.concepts["unseen"].head_concentration is None

    data = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert data["layer"] == LAYER and data["bars"]["weak_auroc_below"] == WEAK_AUROC
    assert data["buckets"]["redundant"]["concepts"] == ["mixture", "both"] and data["buckets"]["redundant"]["action"]
    assert data["concepts"]["guilt"]["buckets"] == ["confused_with"] and data["concepts"]["guilt"]["n_heldout"] == 4


def test_the_development_set_leads_the_triage_when_there_is_one():
    from amygdala_tl.quality.evaluation import ServedEvaluation
    from amygdala_tl.quality.heldout import DevelopmentSet, DevLayer

    concepts = {"calm": entry(), "guilt": entry()}
    heldout = cv_heldout({"calm": (0.6, 0.0), "guilt": (0.6, 0.0)}, [])  # cross-validation calls both weak
    figures = ServedEvaluation(
        0.9, 0.5, 0.5, 0.02, 4, 2, {"calm": {"auroc": 0.95, "top1": 1.0, "n": 2}}, [{"concept": "guilt", "read_as": "calm", "count": 2}]
    )
    heldout.development_set = DevelopmentSet(5, {LAYER: DevLayer(0.5, figures)})
    result = triage(concepts, heldout)
    assert result.protocol == "development test set"
    assert result.concepts["calm"].buckets == ["clean"] and result.concepts["guilt"].buckets == ["not_evaluated"]


def planted(seed: int = 0, d: int = 128, per_concept: int = 8, n_baselines: int = 40, n_heads: int = 8, d_head: int = 4):
    """Pooled activations of six concepts and baselines, each concept planted with the evidence its name says:
    clean_a/clean_b/clean_c (their own direction), weak (no direction of its own: its stories read like the baselines), neuronal (own direction,
    an MLP output row parallel to it), heady (own direction, its head outputs in one head)."""
    generator = torch.Generator().manual_seed(seed)
    names = ["clean_a", "clean_b", "clean_c", "weak", "neuronal", "heady"]
    centres = torch.randn(len(names), d, generator=generator) * 3
    baseline = torch.randn(d, generator=generator) * 3
    acts, labels = [], []
    for c in range(len(names)):
        own = centres[c] if names[c] != "weak" else baseline  # weak: its stories read like the baselines
        acts.append(own + torch.randn(per_concept, d, generator=generator))
        labels += [c] * per_concept
    acts.append(baseline + torch.randn(n_baselines, d, generator=generator))
    labels += [-1] * n_baselines
    acts_t, labels_t = torch.cat(acts), torch.tensor(labels)
    membership = torch.stack([labels_t == c for c in range(len(names))])
    directions = normalize(diff_of_means(acts_t, membership)).float()
    w_out = torch.randn(256, d, generator=generator)
    w_out[99] = 4.0 * directions[names.index("neuronal")]
    z = torch.randn(len(labels), n_heads, d_head, generator=generator)
    z[membership[names.index("heady")], 3] += 4.0  # one head carries it; the others' heads carry nothing of their own
    stats = head_stats(z, membership)
    per_head = PerHead(n_heads, {name: {LAYER: head_report(stats, None, c)} for c, name in enumerate(names)}, [])
    stories = [
        Story(f"text {i}", Path(f"corpus/stories/{names[c] if c >= 0 else 'baseline'}/{i}.txt"), names[c] if c >= 0 else "baseline")
        for i, c in enumerate(labels)
    ]
    return QualityInputs(
        concepts=names,
        layers=[LAYER],
        n_layers=8,
        stories=stories,
        acts=acts_t[None],
        membership=membership,
        directions=directions[None],
        w_out={LAYER: w_out},
        per_head=per_head,
    )


def test_planted_activations_land_where_their_evidence_puts_them():
    inputs = planted()
    quality = build_quality(inputs)
    found = quality.triage
    assert found.layer == LAYER and found.protocol == "grouped cross-validation"
    weak = found.concepts["weak"]
    assert weak.auroc is not None and weak.auroc < WEAK_AUROC
    # with no direction of its own, its row is about minus the others' mean: redundant too
    assert weak.buckets == ["weak", "redundant"] and weak.r_squared is not None and weak.r_squared > 0.9
    assert found.concepts["neuronal"].buckets == ["single_neuron"] and found.concepts["neuronal"].best_neuron == 99
    assert found.concepts["heady"].buckets == ["sparse_head_circuit"] and found.concepts["heady"].top_heads[0] == 3
    assert {c: found.concepts[c].buckets for c in ("clean_a", "clean_b", "clean_c")} == dict.fromkeys(("clean_a", "clean_b", "clean_c"), ["clean"])
    json.dumps(quality.to_json(), allow_nan=False)

    lines = summary_lines(quality)
    start = next(i for i, line in enumerate(lines) if line.startswith("triage at layer 4"))
    assert start > 0 and all(not line.startswith("held-out") for line in lines[start:])  # the triage closes the summary
    assert any(line.startswith("  single neuron") and "neuronal (neuron 99, +" in line for line in lines)
    assert any(line.startswith("  sparse head circuit") and "heady" in line and "heads 3" in line for line in lines)
    assert any(line.startswith("  clean (none of the above): 3: clean_a, clean_b, clean_c") for line in lines)
    page = render_html(quality, {LAYER: inputs.directions[0].numpy()}, 8)
    assert "<section id=triage>" in page and BUCKETS["single_neuron"][1].split(":")[0] in page


@pytest.mark.parametrize("seed", [1, 2])
def test_planted_evidence_holds_over_seeds(seed):
    found = build_quality(planted(seed)).triage
    assert "weak" in found.concepts["weak"].buckets
    assert found.concepts["neuronal"].buckets == ["single_neuron"] and found.concepts["heady"].buckets == ["sparse_head_circuit"]
