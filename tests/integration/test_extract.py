"""The real thing on the bundled SmolLM2-135M: serving parity and `amygdala-tl extract` end to end."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from amygdala_tl.capture import DEFAULT_POOLING, capture, encode, reading
from amygdala_tl.cli import app
from amygdala_tl.formats.readout import load_readout, score
from amygdala_tl.pipelines import setup as shared_setup  # an alias pytest does not take for its setup_module hook

from ..conftest import client_reading, hf_block_outputs

pytestmark = pytest.mark.integration

TEXTS = [
    "The kettle clicked off and the kitchen went quiet again.",
    "She read the letter twice, folded it, and put it back in the drawer without a word.",
    "Rain.",
    "By the time the ferry reached the island, the fog had lifted and the gulls were loud over the harbour.",
]


def hf_token_outputs(hf_model, tokenizer, text, layers):
    """Plain PyTorch forward hooks on model.layers[idx]: the block outputs [pos, d_model] the serving side reads, one per token."""
    return hf_block_outputs(hf_model, encode(tokenizer, [text], max_length=512)[0][0], layers)


def test_capture_matches_plain_hf_hooks_at_every_layer_including_the_last(bundled, hf_reference):
    layers = [0, 7, 14, 23, bundled.facts.n_layers - 1]
    acts = capture(bundled, TEXTS, layers, pooling="last", batch_size=3)  # padded batches
    for i, text in enumerate(TEXTS):
        reference = hf_token_outputs(hf_reference, bundled.tokenizer, text, layers)
        for slot, layer in enumerate(layers):
            ours, theirs = acts.resid[slot, i], reference[layer][-1].float()
            assert (ours - theirs).norm() / theirs.norm() < 1e-4, f"layer {layer}, text {i}"


def test_cli_extract_end_to_end_and_serving_score_parity(bundled, hf_reference, starter_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(shared_setup, "load_model", lambda *args, **kwargs: bundled)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["extract", "--corpus", str(starter_corpus), "-o", str(out), "--layers", "10,-1", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    assert "layer 10 (34%)" in result.output and "layer 29 (100%)" in result.output
    readout = load_readout(out)
    assert readout.layers == [10, 29] and len(readout.concepts) == 6 and readout.hidden_size == 576
    sidecar = json.loads((out / "extract.json").read_text())
    assert sidecar["model"]["identity"].startswith("sha256:") and sidecar["n_forward_passes"] == 4  # 15 texts / 4

    # the declared reading: a client's aggregate over the text's tokens of fp16 vectors . plain HF hook output (no
    # TransformerLens), which is what the toolkit scores from the pooled activation
    declared = reading(DEFAULT_POOLING)
    assert sidecar["pooling"] == DEFAULT_POOLING and json.loads(readout.metadata["reading"]) == declared
    text = TEXTS[1]
    ours = score(readout, {layer: capture(bundled, [text], [layer]).resid[0] for layer in readout.layers})
    reference = hf_token_outputs(hf_reference, bundled.tokenizer, text, readout.layers)
    for layer in readout.layers:
        served = client_reading(reference[layer].float() @ readout.vectors[layer].float().T, declared)
        torch.testing.assert_close(ours[layer][0], served, rtol=1e-4, atol=1e-3 * reference[layer].norm(dim=-1).mean().item() * 1e-2)
