"""`trace` and calibration.json: the served readout at every token equals a plain HF reader, its running reading
at the last token equals `score`, and the calibration's thresholds give the false-positive rate they state."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import amygdala_tl as at
from amygdala_tl.capture import Activations, capture, encode, reading
from amygdala_tl.formats.readout import build_readout, served_scores
from amygdala_tl.pipelines.extract import ExtractConfig, run_extract
from amygdala_tl.pipelines.score import ScoreConfig, score_texts
from amygdala_tl.quality.calibration import FPR_TARGETS, calibrate, flag_figures, fpr_key
from amygdala_tl.quality.report import DevSet
from amygdala_tl.quality.trace_html import SECTIONS, render_trace_html, write_trace_html
from amygdala_tl.tracing import Trace, trace_text

from ..conftest import client_reading, hf_block_outputs, make_tiny_hf, write

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-output"
TEXT = "she had a cup of tea at the table in the morning and it was warm and the rain was on the window"


def tiny_readout(layers=(0, 1, 2), n_concepts=5):
    concepts = [f"c{i}" for i in range(n_concepts)]
    directions = torch.randn(len(layers), n_concepts, 32, generator=torch.Generator().manual_seed(7))
    return build_readout(concepts, list(layers), directions)


@pytest.mark.parametrize("pooling", ["tail4", "mean", "ema3", "last"])
def test_per_token_scores_equal_a_plain_hf_hook_at_every_position(tiny_model, pooling):
    hf_model, readout = make_tiny_hf(seed=0).eval(), tiny_readout()
    traced = trace_text(tiny_model, readout, TEXT, pooling)
    (ids,), _ = encode(tiny_model.tokenizer, [TEXT])
    assert len(traced.tokens) == len(ids) and "".join(traced.tokens).split() == TEXT.split()
    assert traced.z is None and traced.layers == readout.layers and traced.concepts == readout.concepts
    for layer in readout.layers:
        per_token = served_scores(hf_block_outputs(hf_model, ids, [layer])[layer], readout.vectors[layer])  # the server's value at each token
        torch.testing.assert_close(traced.raw[layer], per_token, atol=1e-4, rtol=1e-4)
        for t in range(len(ids)):  # the running reading: what a client holds after tokens 0..t, from the README's formula
            torch.testing.assert_close(traced.running[layer][t], client_reading(per_token[: t + 1], reading(pooling)), atol=1e-4, rtol=1e-4)


# ---- calibration -------------------------------------------------------------------------------------


def synthetic(seed: int, n_texts: int = 240, n_concepts: int = 4, d: int = 16):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_texts) % (n_concepts + 1) - 1
    readout = build_readout([f"c{i}" for i in range(n_concepts)], [3], torch.randn(1, n_concepts, d, generator=generator))
    rows = readout.vectors[3].float()

    def acts_for(labels):
        x = torch.randn(len(labels), d, generator=generator)
        return x + 3.0 * torch.where((labels >= 0)[:, None], rows[labels.clamp_min(0)], torch.zeros(d))

    train = Activations([3], acts_for(labels)[None])
    membership = torch.stack([labels == c for c in range(n_concepts)])
    dev_labels = torch.arange(300) % (n_concepts + 1) - 1
    return readout, train, membership, DevSet(acts_for(dev_labels)[None], dev_labels, "dev")


@pytest.mark.parametrize("seed", [0, 1])
def test_calibration_z_is_standard_on_the_reference_set_and_thresholds_give_their_fpr(seed):
    readout, train, membership, dev = synthetic(seed)
    table = calibrate(readout, train, membership, dev)["3"]
    scores = served_scores(train.at(3), readout.vectors[3]).double().numpy()
    dev_scores = served_scores(dev.acts[0], readout.vectors[3]).double().numpy()
    for c, concept in enumerate(readout.concepts):
        entry = table[concept]
        z = (scores[~membership[c].numpy(), c] - entry["mean"]) / entry["std"]
        assert entry["n_reference"] == len(z) and abs(z.mean()) < 1e-9 and z.std() == pytest.approx(1.0, abs=1e-9)
        dev_z = (dev_scores[:, c] - entry["mean"]) / entry["std"]
        positive = dev.labels.numpy() == c
        for fpr in FPR_TARGETS:
            stated = entry["thresholds"][fpr_key(fpr)]
            flagged = dev_z > stated["z"]
            assert stated["fpr"] == pytest.approx((flagged & ~positive).sum() / (~positive).sum(), abs=1e-6) and stated["fpr"] <= fpr
            assert stated["fpr"] > fpr - 1 / (~positive).sum()  # the lowest threshold with that rate, not a needlessly high one
            assert stated == flag_figures(dev_z, positive, stated["z"])
        assert entry["thresholds"]["0.05"]["recall"] >= entry["thresholds"]["0.01"]["recall"] > 0.3
    assert all(entry["thresholds"] is None for entry in calibrate(readout, train, membership)["3"].values())  # no dev set


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory, tiny_model):
    from ..conftest import copy_starter_corpus

    root = tmp_path_factory.mktemp("trace")
    corpus = copy_starter_corpus(root / "corpus")
    for concept, text in (
        ("calm", "the quiet room was warm and the tea was slow in the morning light"),
        ("afraid", "the cold night and the dog at the door and the road was dark"),
        ("joyful", "the sun on the river and the bread was warm"),
        ("_neutral", "the table had a cup and a chair by the window"),
    ):
        write(corpus / "heldout" / concept / "h.txt", text)
    out = root / "out"
    result = run_extract(
        ExtractConfig(output_dir=out, corpus=corpus, layers="1,2", heads=False, quality_report=True), loader=lambda *a, **k: tiny_model
    )
    return result, out, corpus


def test_extract_writes_calibration_for_the_declared_reading(calibrated_run, tiny_model):
    result, out, corpus = calibrated_run
    payload = json.loads((out / "calibration.json").read_text())
    assert payload["run_id"] == result.record.run_id and payload["reading"] == reading(result.record.pooling)
    assert payload["pooling"] == result.record.pooling and payload["layers"] == result.readout.layers
    assert payload["development_set"] == str((corpus / "heldout").resolve())
    membership = result.corpus.membership(result.concepts)
    dev_stories = sorted((corpus / "heldout").rglob("*.txt"))
    dev_texts = [p.read_text().strip() for p in dev_stories]
    dev_labels = np.array([p.parent.name for p in dev_stories])
    dev_acts = capture(tiny_model, dev_texts, result.readout.layers, pooling=result.record.pooling)
    for layer in result.readout.layers:
        scores = served_scores(result.activations.at(layer), result.readout.vectors[layer]).double().numpy()
        dev_scores = served_scores(dev_acts.at(layer), result.readout.vectors[layer]).double().numpy()
        for c, concept in enumerate(result.concepts):
            entry = payload["calibration"][str(layer)][concept]
            z = (scores[~membership[c].numpy(), c] - entry["mean"]) / entry["std"]
            assert abs(z.mean()) < 1e-6 and z.std() == pytest.approx(1.0, abs=1e-6)
            dev_z = (dev_scores[:, c] - entry["mean"]) / entry["std"]
            negative = dev_labels != concept
            for key, stated in entry["thresholds"].items():
                assert stated["fpr"] == pytest.approx(float((dev_z[negative] > stated["z"]).mean()), abs=1e-6) and stated["fpr"] <= float(key)


def test_trace_at_the_last_token_equals_score_and_the_api(calibrated_run, tiny_model, monkeypatch):
    monkeypatch.setattr("amygdala_tl.pipelines.vectors.preflight", lambda *a, **k: None)  # the tiny model has no hub id to check
    result, out, _ = calibrated_run
    loader = lambda *a, **k: tiny_model  # noqa: E731
    traced = at.trace(out, TEXT, loader=loader)
    assert isinstance(traced, Trace) and traced.calibrated and traced.pooling == result.record.pooling
    scored = score_texts(ScoreConfig(vectors=out, texts=[TEXT]), loader=loader)[0]
    raw = score_texts(ScoreConfig(vectors=out, texts=[TEXT], raw=True), loader=loader)[0]
    assert scored.units == "z" and raw.units == "raw"
    again = result.trace(TEXT)
    for layer in result.readout.layers:
        assert traced.final(layer) == pytest.approx(scored.scores[str(layer)], abs=2e-3)
        assert [float(v) for v in traced.running[layer][-1]] == pytest.approx([raw.scores[str(layer)][c] for c in traced.concepts], abs=2e-4)
        torch.testing.assert_close(again.z[layer], traced.z[layer])  # type: ignore[index]
    uncalibrated = at.trace(out, TEXT, loader=loader, raw=True)
    assert uncalibrated.z is None and uncalibrated.final(1) == pytest.approx(raw.scores["1"], abs=2e-4)
    document = traced.to_json()
    assert set(document) == {"text", "tokens", "layers", "concepts", "pooling", "raw", "running", "z"}
    assert len(document["z"]["1"]) == len(traced.tokens) and len(document["z"]["1"][0]) == len(traced.concepts)


def test_trace_command_prints_json_and_writes_the_page(calibrated_run, tiny_model, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from amygdala_tl.cli import app

    monkeypatch.setattr("amygdala_tl.pipelines.vectors.preflight", lambda *a, **k: None)
    monkeypatch.setattr("amygdala_tl.pipelines.trace.load_model", lambda *a, **k: tiny_model)
    _, out, corpus = calibrated_run
    story = sorted((corpus / "stories" / "calm").glob("*.txt"))[0]
    page = tmp_path / "trace.html"
    result = CliRunner().invoke(app, ["trace", str(story), "--vectors", str(out), "--json", "--html", str(page)])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output.splitlines()[-1])
    assert document["text"] == story.read_text().strip() and document["z"] is not None
    assert page.is_file() and "<script" in page.read_text()
    shown = CliRunner().invoke(app, ["trace", "the cat sat on the mat", "--vectors", str(out), "--layer", "2"])
    assert shown.exit_code == 0 and "layer 2" in shown.output and "cat" in shown.output
    bad = CliRunner().invoke(app, ["trace", "the cat", "--vectors", str(out), "--concept", "nope"])
    assert bad.exit_code == 2 and "nope" in bad.output


def test_trace_page_in_headless_chromium(calibrated_run, tiny_model):
    if shutil.which("chromium") is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium)")
        pytest.skip("chromium not installed (make test installs it)")

    from ..html_check import opened_page

    result, _, _ = calibrated_run
    traced = result.trace(TEXT + " and the sky was quiet </script> <b>")  # markup in the text stays text
    ARTIFACTS.mkdir(exist_ok=True)
    page_path = write_trace_html(traced, ARTIFACTS / "trace.html")
    assert render_trace_html(traced).count("</script>") == 2
    with opened_page(page_path, 1200, 800) as (page, errors):
        assert page.eval_on_selector_all("section", "s => s.map(x => x.id)") == list(SECTIONS)
        assert page.eval_on_selector_all(".tok", "t => t.map(x => x.textContent).join('')") == "".join(traced.tokens)
        assert page.eval_on_selector_all("polyline.series", "p => p.length") == min(5, len(traced.concepts))
        assert page.eval_on_selector_all("#layer option", "o => o.map(x => x.value)") == [str(layer) for layer in traced.layers]
        page.hover(".tok >> nth=3")
        rows = page.eval_on_selector_all("#tip tr", "r => r.map(x => x.textContent)")
        assert page.is_visible("#tip") and len(rows) == 1 + min(5, len(traced.concepts))
        assert rows[1].startswith(traced.top(traced.layers[len(traced.layers) // 2], 3, 1)[0][0])
        before = page.eval_on_selector(".tok >> nth=3", "x => x.style.background")
        page.select_option("#concept", "1")
        assert page.eval_on_selector(".tok >> nth=3", "x => x.style.background") != before
        page.select_option("#layer", str(traced.layers[0]))
        page.screenshot(path=str(ARTIFACTS / "trace.png"), full_page=True)
    assert errors == []
    assert (ARTIFACTS / "trace.png").stat().st_size > 10_000
