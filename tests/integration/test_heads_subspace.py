"""Per-head and subspace extraction on the bundled model: one forward pass, hook_z == o_proj input."""

from __future__ import annotations

import json

import pytest
import torch

from amygdala_tl.capture import capture, encode
from amygdala_tl.pipelines.extract import ExtractConfig, run_extract

pytestmark = pytest.mark.integration


def test_hook_z_equals_the_input_of_hf_o_proj(bundled, hf_reference):
    text = "The nurse closed the door softly and sat down beside the bed."
    layer = 14
    captured = {}
    handle = hf_reference.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(
        lambda module, args: captured.__setitem__("o_in", args[0][0, -1])
    )
    ids, _ = encode(bundled.tokenizer, [text], 512)
    with torch.inference_mode():
        hf_reference(torch.tensor(ids))
    handle.remove()
    z = capture(bundled, [text], [layer], head_layers=[layer], pooling="last").z[0, 0]  # [n_heads, d_head], 9 query heads
    assert z.shape == (9, 64)
    torch.testing.assert_close(z.reshape(-1), captured["o_in"].float(), atol=1e-4, rtol=1e-4)


def test_subspace_and_heads_come_from_the_residual_forward_pass(bundled, starter_corpus, tmp_path, monkeypatch):
    calls = []
    original = bundled.bridge.run_with_hooks
    monkeypatch.setattr(bundled.bridge, "run_with_hooks", lambda *a, **k: calls.append(1) or original(*a, **k))
    config = ExtractConfig(output_dir=tmp_path, corpus=starter_corpus, layers="12,20", method="subspace", batch_size=4)
    result = run_extract(config, loader=lambda *a, **k: bundled)
    assert len(calls) == result.activations.n_forward_passes == 4  # 15 texts, batches of 4: residual + z + tokens at once

    per_head = json.loads((tmp_path / "per_head.json").read_text())
    block = per_head["concepts"]["calm"]["20"]
    assert len(block["top_heads"]) == 9 and 0 < block["head_concentration"] <= 1
    selectivities = [sel for _, _, sel in block["top_heads"]]
    assert selectivities == sorted(selectivities, reverse=True)
    assert sorted(h for h, _ in block["direct_contribution"]) == list(range(9))

    subspace = json.loads((tmp_path / "subspace.json").read_text())
    eigvals = subspace["concepts"]["calm"]["12"]["eigvals"]
    assert len(eigvals) == 20 and eigvals == sorted(eigvals, reverse=True)
    # signs are aligned: each concept's positives project above its negatives on the exported direction
    membership = result.corpus.membership(result.concepts)
    for slot, layer in enumerate(result.readout.layers):
        scores = result.activations.resid[slot] @ result.readout.vectors[layer].float().T
        for c in range(len(result.concepts)):
            assert scores[membership[c], c].mean() > scores[~membership[c], c].mean()
