"""Issue 19 items 1 and 3: every layer searched in one pass, the best ones exported, and the multi-layer reading."""

from __future__ import annotations

import json

import pytest
import torch

from amygdala_tl import hooks
from amygdala_tl.errors import UserError
from amygdala_tl.formats.readout import served_scores
from amygdala_tl.layers import parse_layers
from amygdala_tl.pipelines.extract import ExtractConfig, run_extract
from amygdala_tl.pipelines.score import ScoreConfig, score_texts
from amygdala_tl.quality.evaluation import ServedEvaluation, evaluate_combined, zscore
from amygdala_tl.quality.heldout import CombinedReading, CvLayer, DevelopmentSet, DevLayer, GroupedCV, Heldout, development_set_evaluation


def test_the_default_layer_set_is_every_block():
    assert parse_layers(None, 30) == list(range(30))
    assert parse_layers("-1,3", 30) == [3, 29]  # --layers still restricts the search


def counting_passes(model, monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []
    original = model.bridge.run_with_hooks

    def counting(*args, **kwargs):
        calls.append(sorted(name for name, _ in kwargs["fwd_hooks"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(model.bridge, "run_with_hooks", counting)
    return calls


def test_extract_searches_every_block_and_per_head_costs_no_second_pass(starter_corpus, tmp_path, tiny_model, monkeypatch):
    calls = counting_passes(tiny_model, monkeypatch)
    config = ExtractConfig(output_dir=tmp_path / "out", corpus=starter_corpus, batch_size=4, heads=True, use_cache=False)
    result = run_extract(config, loader=lambda *a, **k: tiny_model)
    n_layers = tiny_model.facts.n_layers
    assert [entry["layer"] for entry in result.record.layers] == list(range(n_layers))
    assert result.readout.layers == list(range(n_layers))  # without --quality-report every searched layer is exported
    n_batches = -(-len(result.corpus.stories) // 4)
    assert len(calls) == n_batches == result.record.n_forward_passes  # one pass per batch, heads included
    expected = sorted([hooks.resid_post(layer) for layer in range(n_layers)] + [hooks.attn_z(layer) for layer in range(n_layers)])
    assert all(names == expected for names in calls)  # every block's residual and hook_z from the same pass
    assert result.record.head_layers == list(range(n_layers))


@pytest.mark.parametrize("export_best", [None, 1])
def test_export_best_layers_exports_the_recommended_ones(starter_corpus, tmp_path, tiny_model, monkeypatch, export_best):
    monkeypatch.setattr("amygdala_tl.pipelines.extract.DEFAULT_EXPORT_BEST", 2)  # the tiny model has 3 blocks; the default is 3
    config = ExtractConfig(output_dir=tmp_path / "out", corpus=starter_corpus, heads=False, quality_report=True, export_best_layers=export_best)
    result = run_extract(config, loader=lambda *a, **k: tiny_model)
    recommended = result.quality["heldout"]["recommended_layers"] if result.quality else []
    assert len(recommended) == tiny_model.facts.n_layers  # every block evaluated
    n_best = 2 if export_best is None else export_best
    assert result.readout.layers == sorted(recommended[:n_best])
    calibration = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert calibration["layers_ranked"] == recommended[:n_best]  # the exported layers, best first
    cv = json.loads((tmp_path / "out" / "quality.json").read_text())["heldout"]["protocols"]["grouped_cv"]
    assert not cv["by_writer"] and cv["not_by_writer"] == "the corpus manifest does not record every text's writer"


def test_export_best_layers_zero_exports_every_layer_and_needs_the_report(starter_corpus, tmp_path, tiny_model):
    config = ExtractConfig(output_dir=tmp_path / "out", corpus=starter_corpus, heads=False, quality_report=True, export_best_layers=0)
    assert run_extract(config, loader=lambda *a, **k: tiny_model).readout.layers == [0, 1, 2]
    with pytest.raises(UserError, match="needs --quality-report"):
        run_extract(ExtractConfig(output_dir=tmp_path / "o2", corpus=starter_corpus, export_best_layers=2), loader=lambda *a, **k: tiny_model)


# ---- the multi-layer reading ------------------------------------------------------------------------------------


def dev_fixture(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    n_concepts, d = 4, 16
    labels = torch.arange(40) % (n_concepts + 1) - 1
    means = torch.randn(3, n_concepts, d, generator=generator)
    acts = torch.randn(3, 40, d, generator=generator) + torch.stack(
        [torch.where((labels >= 0)[:, None], means[s][labels.clamp_min(0)], 0.0) for s in range(3)]
    )
    directions = torch.nn.functional.normalize(means + 0.5 * torch.randn(3, n_concepts, d, generator=generator), dim=-1)
    return acts, directions, labels, [f"c{i}" for i in range(n_concepts)]


def test_combined_reading_is_the_mean_of_z_over_the_best_layers():
    acts, directions, labels, concepts = dev_fixture()
    dev = development_set_evaluation(acts, [4, 7, 9], directions, labels, concepts, n_layers=10)
    ranked = sorted(dev.layers, key=lambda layer: -(dev.layers[layer].mean_auroc or 0))
    assert [reading.k for reading in dev.combined] == [2, 3] and dev.combined[0].layers == ranked[:2]
    slots = [[4, 7, 9].index(layer) for layer in ranked[:2]]
    by_hand = (
        zscore(served_scores(acts[slots[0]], directions[slots[0]])).double() + zscore(served_scores(acts[slots[1]], directions[slots[1]])).double()
    ) / 2
    predicted = by_hand.numpy().argmax(1)
    labelled = labels.numpy() >= 0
    assert dev.combined[0].figures.top1 == pytest.approx(float((predicted[labelled] == labels.numpy()[labelled]).mean()))
    again = evaluate_combined([acts[s] for s in slots], [directions[s] for s in slots], labels, concepts)
    assert again.mean_auroc == dev.combined[0].figures.mean_auroc
    assert DevelopmentSet.from_json(json.loads(json.dumps(dev.to_json()))).combined[1].layers == dev.combined[1].layers


def figures(auroc: float, interval: list[float]) -> ServedEvaluation:
    return ServedEvaluation(auroc, 0.5, 0.5, 0.1, 40, 4, auroc_interval=interval)


@pytest.mark.parametrize(("low", "recommended"), [(0.92, True), (0.89, False)])
def test_the_combined_reading_is_recommended_only_beyond_its_interval(low, recommended):
    dev = DevelopmentSet(40, {3: DevLayer(0.3, figures(0.90, [0.85, 0.95])), 5: DevLayer(0.5, figures(0.88, [0.83, 0.93]))})
    dev.combined = [CombinedReading(2, [3, 5], figures(0.95, [low, 0.98]))]
    heldout = Heldout(GroupedCV(5, {}), dev)
    assert (heldout.recommended_combined is not None) == recommended
    assert heldout.best_layer == 3 and heldout.tied_with_best == [5]  # layer 5's interval [0.83, 0.93] holds 0.90
    dev.layers[5] = DevLayer(0.5, figures(0.80, [0.75, 0.85]))
    assert heldout.tied_with_best == []


def cv_layer(auroc: float) -> CvLayer:
    return CvLayer(0.5, auroc, 0.5, 0.5, 0.1, per_concept={}, confusions=[])


@pytest.mark.parametrize(("cv_aurocs", "said"), [((0.94, 0.85), False), ((0.96, 0.85), True), ((0.94, 0.82), True)])
def test_protocols_that_disagree_beyond_the_test_sets_interval_are_said(cv_aurocs, said):
    """Cross-validation inside the test set's 90% interval at every layer: nothing said; outside it at a layer
    (either side): a note naming that layer (summary_lines prints it first)."""
    dev = DevelopmentSet(40, {3: DevLayer(0.3, figures(0.90, [0.85, 0.95])), 5: DevLayer(0.5, figures(0.88, [0.83, 0.93]))})
    heldout = Heldout(GroupedCV(19, {3: cv_layer(cv_aurocs[0]), 5: cv_layer(cv_aurocs[1])}, by_writer=True), dev)
    assert (heldout.disagreement is not None) == said
    if said:
        layer = 3 if cv_aurocs[0] > 0.95 else 5
        assert f"at layer {layer}" in heldout.disagreement and heldout.disagreement.startswith("leave-one-writer-out")


def test_score_layers_combined_is_the_mean_of_the_calibrated_z(starter_corpus, tmp_path, tiny_model, monkeypatch):
    monkeypatch.setattr("amygdala_tl.pipelines.vectors.preflight", lambda *a, **k: None)  # the tiny model has no hub id to check
    out = tmp_path / "out"
    run_extract(ExtractConfig(output_dir=out, corpus=starter_corpus, layers="1,2", heads=False), loader=lambda *a, **k: tiny_model)
    texts = ["the cat sat on the mat", "the dog was quiet"]
    (result,) = score_texts(ScoreConfig(texts=texts[:1], vectors=out, layers_combined=2), loader=lambda *a, **k: tiny_model)
    assert result.units == "z" and result.combined_layers == [1, 2]  # no held-out ranking: the file's order
    assert result.combined is not None
    for concept, value in result.combined.items():
        assert value == pytest.approx((result.scores["1"][concept] + result.scores["2"][concept]) / 2, abs=2e-4)
    with pytest.raises(UserError, match="between 1 and the 2 exported layers"):
        score_texts(ScoreConfig(texts=texts, vectors=out, layers_combined=3), loader=lambda *a, **k: tiny_model)
    with pytest.raises(UserError, match="needs calibration.json"):
        score_texts(ScoreConfig(texts=texts, vectors=out, layers_combined=2, raw=True), loader=lambda *a, **k: tiny_model)
