"""Quality report on the bundled model: quality.json, `report` reproduces it without the model, the
HTML page renders in headless Chromium, `score` matches the serving convention."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from amygdala_tl.pipelines import report as report_module
from amygdala_tl.pipelines.extract import ExtractConfig, run_extract
from amygdala_tl.pipelines.score import ScoreConfig, score_texts
from amygdala_tl.quality.html import SECTIONS

pytestmark = pytest.mark.integration
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-output"


@pytest.fixture(scope="module")
def quality_run(bundled, tmp_path_factory):
    from ..conftest import CORPUS

    root = tmp_path_factory.mktemp("quality")
    corpus = root / "corpus"
    for concept in ("calm", "afraid", "grateful", "furious", "bored", "joyful", "cozy", "numb"):
        for story in sorted((CORPUS / "stories" / concept).glob("*.txt"))[:2]:  # a fixed small slice: the corpus grows
            (corpus / "stories" / concept).mkdir(parents=True, exist_ok=True)
            shutil.copy(story, corpus / "stories" / concept / story.name)
    shutil.copytree(CORPUS / "paired" / "the_morning_commute", corpus / "paired" / "the_morning_commute")
    config = ExtractConfig(output_dir=root / "out", corpus=corpus, layers="8,14,20", quality_report=True, export_best_layers=2, batch_size=8)
    return run_extract(config, loader=lambda *a, **k: bundled), root / "out"


def test_quality_json_has_every_metric(quality_run):
    result, out = quality_run
    quality = json.loads((out / "quality.json").read_text())
    entry = quality["concepts"]["calm"]
    assert entry["n_positive_stories"] == 3
    block = entry["per_layer"]["14"]
    for key in (
        "top3_variance_ratios",
        "first_pc_variance_ratio",
        "story_projection_mean",
        "story_projection_std",
        "story_projection_min",
        "story_projection_max",
        "story_alignment_mean",
        "story_alignment_std",
        "best_neuron_idx",
        "best_neuron_cosine",
        "top5_neurons",
    ):
        assert key in block
    assert block["story_projection_min"] <= block["story_projection_mean"] <= block["story_projection_max"]
    assert len(entry["outlier_stories"]) == 2 and entry["outlier_stories"][0]["path"].endswith(".txt")
    assert len(entry["nearest_concepts"]) == 5 and set(entry["linear_combination"]) == {"8", "14", "20"}
    assert set(entry["per_head"]) == {"8", "14", "20"}
    heldout = quality["heldout"]
    assert sorted(heldout["recommended_layers"]) == [8, 14, 20]
    best = heldout["layers"][str(heldout["best_layer"])]
    assert best["mean_auroc"] > best["random_auroc"] + 0.1  # the vectors work beyond chance on held-out stories
    assert result.readout.layers == sorted(heldout["recommended_layers"][:2])  # --export-best-layers 2


def test_report_reproduces_quality_json_without_the_model(quality_run, monkeypatch):
    _, out = quality_run
    original = (out / "quality.json").read_text()
    monkeypatch.setattr("amygdala_tl.model.load_model", lambda *a, **k: pytest.fail("report must not load the model"))
    (out / "quality.json").unlink()
    report_module.run_report(out)
    assert (out / "quality.json").read_text() == original


def test_html_report_renders_in_headless_chromium(quality_run):
    from tests.html_check import check_page

    _, out = quality_run
    if shutil.which("chromium") is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium)")
        pytest.skip("chromium not installed (make test installs it)")
    ARTIFACTS.mkdir(exist_ok=True)
    errors, found = check_page(out / "report.html", ARTIFACTS / "report.png")
    assert errors == []
    assert found == list(SECTIONS)
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000


def test_score_matches_the_exported_vectors(quality_run, bundled):
    result, out = quality_run
    text = "I could not stop shaking while I waited for the phone to ring."
    results = score_texts(ScoreConfig(vectors=out, texts=[text], raw=True), loader=lambda *a, **k: bundled)
    scores = results[0].to_json()["scores"]
    assert set(scores) == {str(layer) for layer in result.readout.layers}
    assert set(scores[str(result.readout.layers[0])]) == set(result.readout.concepts)
    centred = score_texts(ScoreConfig(vectors=out, texts=[text], centered=True), loader=lambda *a, **k: bundled)[0].to_json()["scores"]
    offsets = json.loads((out / "extract.json").read_text())["score_offsets"]
    layer = str(result.readout.layers[0])
    for concept, raw in scores[layer].items():
        assert centred[layer][concept] == pytest.approx(raw - offsets[layer][concept], abs=2e-4)


def test_evaluate_reads_the_exported_files_as_the_export_declares(quality_run, bundled, hf_reference, tmp_path):
    """`evaluate` against an independent reading: plain HF forward hooks on model.layers[idx] (the serving
    convention) at every token, the fp16 rows from the safetensors file, aggregated as calibration.json declares
    (conftest.client_reading), per-concept z-scores, sklearn's AUROC. `score` reads the same way."""
    import numpy as np
    from safetensors.torch import load_file
    from sklearn.metrics import roc_auc_score

    from amygdala_tl.capture import DEFAULT_POOLING, reading
    from amygdala_tl.pipelines.evaluate import EvaluateConfig, evaluate_vectors

    from ..conftest import CORPUS, client_reading
    from .test_extract import hf_token_outputs

    result, out = quality_run
    declared = reading(DEFAULT_POOLING)
    assert json.loads((out / "calibration.json").read_text())["reading"] == declared
    heldout = tmp_path / "heldout"
    for concept in ("calm", "afraid", "joyful", "bored", "_neutral"):
        for story in sorted((CORPUS / "heldout" / concept).glob("*.txt"))[:2]:
            (heldout / concept).mkdir(parents=True, exist_ok=True)
            shutil.copy(story, heldout / concept / story.name)
    evaluation = evaluate_vectors(EvaluateConfig(vectors=out, heldout=heldout), loader=lambda *a, **k: bundled)
    assert evaluation.n_texts == 10 and evaluation.n_neutral == 2 and evaluation.concepts_covered == ["afraid", "bored", "calm", "joyful"]

    texts = [(p.parent.name, p.read_text().strip()) for p in sorted(heldout.rglob("*.txt"))]
    texts.sort(key=lambda item: item[1])
    concepts = result.readout.concepts
    tensors = load_file(out / "readout.safetensors")
    labels = np.array([concepts.index(c) if c in concepts else -1 for c, _ in texts])
    zscore = lambda scores: (scores - scores.mean(0)) / scores.std(0, ddof=1)
    for layer in result.readout.layers:
        rows = tensors[f"layer_{layer}.vectors"].double()
        per_token = [hf_token_outputs(hf_reference, bundled.tokenizer, text, [layer])[layer].double() @ rows.T for _, text in texts]
        z = zscore(torch.stack([client_reading(scores, declared) for scores in per_token]).numpy())
        z_last = zscore(torch.stack([scores[-1] for scores in per_token]).numpy())
        assert np.abs(z - z_last).max() > 0.5  # the two readings differ: an evaluation reading the last token fails below
        aurocs = [roc_auc_score(labels == concepts.index(c), z[:, concepts.index(c)]) for c in evaluation.concepts_covered]
        figures = evaluation.layers[layer]
        assert figures.mean_auroc == pytest.approx(float(np.mean(aurocs)), abs=1e-3)
        assert figures.top1 == pytest.approx(float((z.argmax(1)[labels >= 0] == labels[labels >= 0]).mean()), abs=1e-6)
        assert 0 <= figures.random_auroc <= 1 and figures.n_concepts_evaluated == 4
        assert figures.auroc_interval[0] <= figures.mean_auroc <= figures.auroc_interval[1]
    # `score` and the Python API read a text as evaluate does: the declared aggregate of the per-token served scores
    text = texts[0][1]
    served = score_texts(ScoreConfig(vectors=out, texts=[text], raw=True), loader=lambda *a, **k: bundled)[0].scores
    api = result.score([text])
    for layer in result.readout.layers:
        per_token = hf_token_outputs(hf_reference, bundled.tokenizer, text, [layer])[layer].double() @ tensors[f"layer_{layer}.vectors"].double().T
        reference = client_reading(per_token, declared)
        assert [served[str(layer)][c] for c in concepts] == pytest.approx(reference.tolist(), abs=2e-3)
        assert api[layer][0].tolist() == pytest.approx(reference.tolist(), abs=2e-3)
