"""`extract` on the tiny model, and every user error raised before the model would load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from amygdala_tl.errors import UserError
from amygdala_tl.formats.readout import load_readout
from amygdala_tl.pipelines.extract import ExtractConfig, run_extract

from ..conftest import write


def never_load(*args, **kwargs):
    raise AssertionError("the model must not be loaded for this error")


@pytest.mark.parametrize(
    "change, fragment",
    [
        (dict(corpus=Path("/nonexistent/corpus")), "/nonexistent/corpus"),
        (dict(dtype="fp8"), "fp8"),
        (dict(layers="3,x"), "'x'"),
        (dict(method="magic"), "magic"),
        (dict(pooling="max"), "max"),
        (dict(batch_size=0), "--batch-size"),
        (dict(model="/nonexistent/model.gguf"), "/nonexistent/model.gguf"),
        (dict(model="./no/such/dir"), "./no/such/dir"),
        (dict(min_positives=50), "at least 50 positive"),
    ],
)
def test_user_errors_come_before_the_model_loads(starter_corpus, tmp_path, change, fragment):
    config = ExtractConfig(output_dir=tmp_path / "out", **{"corpus": starter_corpus, **change})
    with pytest.raises(UserError, match=fragment):
        run_extract(config, loader=never_load)
    assert not (tmp_path / "out").exists()


def test_output_dir_that_is_a_file(starter_corpus, tmp_path):
    target = write(tmp_path / "out", "precious")
    with pytest.raises(UserError, match="not a directory"):
        run_extract(ExtractConfig(output_dir=target, corpus=starter_corpus), loader=never_load)
    assert target.read_text() == "precious"


def test_layer_out_of_range_is_a_user_error(starter_corpus, tmp_path, tiny_model):
    config = ExtractConfig(output_dir=tmp_path / "out", corpus=starter_corpus, layers="0,7")
    with pytest.raises(UserError, match="7 is out of range for a model with 3 layers"):
        run_extract(config, loader=lambda *a, **k: tiny_model)


def test_extract_on_tiny_model_writes_a_consistent_export(starter_corpus, tmp_path, tiny_model):
    config = ExtractConfig(output_dir=tmp_path / "out", corpus=starter_corpus, layers="-1,1", batch_size=4, method="pooled")
    result = run_extract(config, loader=lambda *a, **k: tiny_model)
    readout = load_readout(tmp_path / "out")
    assert readout.layers == [1, 2] and readout.concepts == sorted(["calm", "afraid", "grateful", "furious", "bored", "joyful"])
    sidecar = json.loads((tmp_path / "out" / "extract.json").read_text())
    assert sidecar["concepts"]["calm"] == 3  # 2 stories + the commute's calm framing
    assert sidecar["corpus"]["n_baselines"] == 1 and sidecar["hook"] == "blocks.{layer}.hook_resid_post"
    assert readout.metadata["corpus_sha256"] == sidecar["corpus"]["sha256"]
    # the exported rows are the pooled directions of the captured activations
    acts, membership = result.activations, result.corpus.membership(result.concepts)
    for i, layer in enumerate(readout.layers):
        diff = acts.resid[i][membership[0]].mean(0) - acts.resid[i][~membership[0]].mean(0)
        torch.testing.assert_close(readout.vectors[layer][0].float(), diff / diff.norm(), atol=1e-3, rtol=0)


def test_report_reproduces_a_refit_method_run_from_separate_dirs(starter_corpus, tmp_path, tiny_model, monkeypatch):
    from amygdala_tl.pipelines.report import run_report

    out = tmp_path / "out"
    config = ExtractConfig(
        output_dir=out,
        stories_dir=starter_corpus / "stories",
        paired_dir=starter_corpus / "paired",
        layers="1,2",
        method="logistic",
        quality_report=True,
    )
    run_extract(config, loader=lambda *a, **k: tiny_model)
    original = (out / "quality.json").read_text()
    assert json.loads(original)["heldout"]["protocol"] == "grouped cross-validation"
    monkeypatch.setattr("amygdala_tl.model.load_model", never_load)
    run_report(out)
    assert (out / "quality.json").read_text() == original


def test_quality_report_with_three_concepts_is_strict_json(tmp_path, tiny_model):
    for concept, words in (("calm", "the quiet room"), ("afraid", "the cold night"), ("joyful", "the warm sun")):
        for i in range(3):
            write(tmp_path / "corpus" / "stories" / concept / f"{i}.txt", f"{words} and the {WORDS_BY_INDEX[i]} was there")
    result = run_extract(
        ExtractConfig(output_dir=tmp_path / "out", corpus=tmp_path / "corpus", layers="2", quality_report=True), loader=lambda *a, **k: tiny_model
    )
    quality = json.loads((tmp_path / "out" / "quality.json").read_text())
    assert len(quality["concepts"]["calm"]["nearest_concepts"]) == 2 and result.quality is not None
    with pytest.raises(UserError, match="min-positives 2"):
        run_extract(ExtractConfig(output_dir=tmp_path / "o2", corpus=tmp_path / "corpus", quality_report=True, min_positives=1), loader=never_load)


WORDS_BY_INDEX = ["cat", "dog", "tea"]
