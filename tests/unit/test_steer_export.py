"""GGUF control vectors round trip; steering hooks; compare-methods on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from amygdala_tl.capture import capture
from amygdala_tl.corpus import load_corpus, select_concepts
from amygdala_tl.errors import UserError
from amygdala_tl.formats.gguf import read_control_vector, write_control_vector
from amygdala_tl.formats.readout import build_readout
from amygdala_tl.pipelines.compare import compare_methods
from amygdala_tl.pipelines.extract import ExtractConfig
from amygdala_tl.pipelines.steer import generate, steering_hook
from amygdala_tl.quality.heldout import cv_evaluation


def llama_cpp_slots(path, n_layer: int) -> dict[int, np.ndarray]:
    """The vectors llama.cpp adds after each block, read as llama.cpp reads a control-vector GGUF.

    common/common.cpp `common_control_vector_load_one`: tensor `direction.<il>` goes to slot il and
    il = 0 is rejected ("invalid layer"); src/llama-adapter.cpp `llama_adapter_cvec::apply` copies
    slots 1..n_layer-1 and `apply_to(ctx, cur, il)` adds slot il to block il's output."""
    from gguf import GGUFReader

    slots = {}
    for tensor in GGUFReader(str(path)).tensors:
        il = int(tensor.name.removeprefix("direction."))
        assert il > 0, "llama.cpp rejects direction.0"
        if il < n_layer:  # a higher slot is silently ignored by llama.cpp
            slots[il] = np.array(tensor.data, dtype=np.float32).reshape(-1)
    return slots


def test_gguf_control_vector_steers_the_block_it_was_learned_at(tiny_model, tmp_path):
    """llama.cpp's semantics on a plain HF copy == our steering at hook_resid_post(b), last block included."""
    from ..conftest import make_tiny_hf

    n_layers, d_model = tiny_model.facts.n_layers, tiny_model.facts.d_model
    directions = torch.randn(2, 2, d_model, generator=torch.Generator().manual_seed(0))
    readout = build_readout(["calm", "afraid"], [1, n_layers - 1], directions)
    path = write_control_vector(readout, "afraid", tmp_path / "afraid.gguf", "llama", scale=3.0, n_layers=n_layers)
    slots = llama_cpp_slots(path, n_layers)
    assert sorted(slots) == [1, n_layers - 1], "every exported layer must be steerable by llama.cpp"

    hf = make_tiny_hf()

    def add_after_block(vector):
        v = torch.from_numpy(vector)
        return lambda module, args, output: (output[0] + v, *output[1:]) if isinstance(output, tuple) else output + v

    handles = [hf.model.layers[il].register_forward_hook(add_after_block(vec)) for il, vec in slots.items()]
    tokens = torch.tensor([tiny_model.tokenizer("the cat sat on the mat and the dog")["input_ids"]])
    with torch.inference_mode():
        llama_cpp_logits = hf(tokens).logits
    for handle in handles:
        handle.remove()
    ours = [steering_hook(layer, readout.vectors[layer][1].float(), 3.0) for layer in readout.layers]
    with torch.inference_mode():
        our_logits = tiny_model.bridge.run_with_hooks(tokens, fwd_hooks=ours)
        clean = tiny_model.bridge(tokens)
    assert (our_logits - clean).abs().max() > 1e-2  # the vector does something
    torch.testing.assert_close(our_logits, llama_cpp_logits, atol=1e-4, rtol=1e-4)

    hint, vectors = read_control_vector(path)
    assert hint == "llama" and sorted(vectors) == readout.layers
    with pytest.raises(UserError, match="layer 7"):
        write_control_vector(readout, "afraid", tmp_path / "x.gguf", "llama", [7])
    with pytest.raises(UserError, match="block 0"):
        write_control_vector(build_readout(["calm"], [0], directions[:1, :1]), "calm", tmp_path / "x.gguf", "llama")
    with pytest.raises(UserError, match="scale"):
        write_control_vector(readout, "afraid", tmp_path / "x.gguf", "llama", scale=float("nan"))
    assert not (tmp_path / "x.gguf").exists()


def test_export_checks_and_dispatches_through_one_format_table(tmp_path, monkeypatch):
    """`export --format` names an entry of FORMATS: the entry's writer writes, with its default suffix; any other name is refused."""
    from amygdala_tl.pipelines.export import FORMATS, ExportConfig, ExportFormat, export_control_vector

    from ..conftest import write_readout

    write_readout(build_readout(["calm", "afraid"], [1, 2], torch.randn(2, 2, 8)), tmp_path / "vec")
    calls = []

    def write_text(readout, concept, path, model_hint, layers, scale, n_layers):
        calls.append((concept, model_hint, layers, scale))
        path.write_text(concept)
        return path

    monkeypatch.setitem(FORMATS, "text", ExportFormat(write_text, ".txt"))
    path, hint = export_control_vector(ExportConfig(vectors=tmp_path / "vec", concept="calm", layers="2", scale=2.0, format="text"))
    assert path == tmp_path / "vec" / "calm.txt" and path.read_text() == "calm" and calls == [("calm", "llama", [2], 2.0)]
    with pytest.raises(UserError, match="unknown --format 'csv': choose gguf-control, text"):
        export_control_vector(ExportConfig(vectors=tmp_path / "vec", concept="calm", format="csv"))


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
    methods = ["pooled", "mean", "pca", "logistic", "logistic_l1", "subspace"]
    rows = [row.to_json() for row in compare_methods(config, methods, ["mean", "last"], loader=lambda *a, **k: tiny_model)]
    assert [(row["pooling"], row["method"]) for row in rows] == [(p, m) for p in ("mean", "last") for m in methods]
    for row in rows:
        assert row["best_layer"] in (1, 2) and 0 <= row["auroc"] <= 1 and 0 <= row["top1"] <= 1
    # every method is scored by grouped cross-validation, read as served (the starter corpus has no heldout/)
    assert {row["protocol"] for row in rows} == {"grouped cross-validation"}
    assert all(0 <= row["cv_auroc"] <= 1 for row in rows) and rows[0]["auroc"] == rows[0]["cv_auroc"]
    # each pooling's rows read texts its own way: the `last` pooled row is cross-validation on last-token activations
    corpus = load_corpus(starter_corpus)
    concepts = select_concepts(corpus, 2)
    for pooling, row in (("mean", rows[0]), ("last", rows[len(methods)])):
        acts = capture(tiny_model, corpus.texts, [1, 2], pooling=pooling)
        cv = cv_evaluation(acts.resid, [1, 2], corpus.membership(concepts), concepts, corpus.groups(), tiny_model.facts.n_layers).to_json()
        assert row["per_layer"]["1"]["cv_auroc"] == pytest.approx(cv["layers"]["1"]["mean_auroc"], abs=1e-6)
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert len(saved["methods"]) == 12
    with pytest.raises(UserError, match="magic"):
        compare_methods(config, ["magic"], loader=lambda *a, **k: tiny_model)
    with pytest.raises(UserError, match="--poolings 'median'"):
        compare_methods(config, ["pooled"], ["median"], loader=lambda *a, **k: tiny_model)
