"""GGUF control vectors round trip; steering hooks; compare-methods on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from amygdala_tl.compare import compare_methods
from amygdala_tl.errors import UserError
from amygdala_tl.export_gguf import read_control_vector, write_control_vector
from amygdala_tl.extract import ExtractConfig
from amygdala_tl.readout import build_readout
from amygdala_tl.steer import generate, steering_hook


def test_gguf_control_vector_round_trip(tmp_path):
    directions = torch.randn(3, 2, 16, generator=torch.Generator().manual_seed(0))
    readout = build_readout(["calm", "afraid"], [4, 9, 12], directions)
    path = write_control_vector(readout, "afraid", tmp_path / "afraid.gguf", "llama", [4, 12], scale=2.0)
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    assert sorted(t.name for t in reader.tensors) == ["direction.13", "direction.5"]  # HF block + 1
    assert int(reader.get_field("controlvector.layer_count").parts[-1][0]) == 2
    hint, vectors = read_control_vector(path)
    assert hint == "llama" and sorted(vectors) == [4, 12]
    for layer in (4, 12):
        expected = readout.vectors[layer][1].float().numpy()
        np.testing.assert_allclose(vectors[layer], 2.0 * expected / np.linalg.norm(expected), rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match="layer 7"):
        write_control_vector(readout, "afraid", tmp_path / "x.gguf", "llama", [7])
    assert not (tmp_path / "x.gguf").exists()


def test_steering_hook_adds_the_vector_at_every_position(tiny_model):
    tokens = torch.tensor([tiny_model.tokenizer("the cat sat on the mat")["input_ids"]])
    vector = torch.nn.functional.normalize(torch.randn(32), dim=0)
    store = {}
    grab = lambda key: ("blocks.1.hook_resid_post", lambda act, hook: store.__setitem__(key, act.detach().clone()))  # noqa: E731
    with torch.inference_mode():
        tiny_model.bridge.run_with_hooks(tokens, return_type=None, fwd_hooks=[grab("clean")])
        tiny_model.bridge.run_with_hooks(tokens, return_type=None, fwd_hooks=[steering_hook(1, vector, 5.0), grab("steered")])
    torch.testing.assert_close(store["steered"] - store["clean"], (5.0 * vector).expand_as(store["clean"]), atol=1e-5, rtol=0)
    assert generate(tiny_model, "the cat", [], max_new_tokens=3) == generate(tiny_model, "the cat", [], max_new_tokens=3)


def test_compare_methods_table(tiny_model, starter_corpus, tmp_path):
    config = ExtractConfig(output_dir=tmp_path, corpus=starter_corpus, layers="1,2", batch_size=8)
    rows = compare_methods(config, ["pooled", "mean", "pca", "logistic", "logistic_l1", "subspace"], loader=lambda *a, **k: tiny_model)
    assert [row["method"] for row in rows] == ["pooled", "mean", "pca", "logistic", "logistic_l1", "subspace"]
    for row in rows:
        assert row["best_layer"] in (1, 2) and 0 <= row["auroc"] <= 1 and 0 <= row["top1"] <= 1
    # pooled uses exact leave-one-out; refit methods (mean included) the grouped protocol
    assert rows[0]["protocol"] == "leave-one-out" and rows[1]["protocol"] == "grouped leave-one-out"
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert len(saved["methods"]) == 6
    with pytest.raises(UserError, match="magic"):
        compare_methods(config, ["magic"], loader=lambda *a, **k: tiny_model)
