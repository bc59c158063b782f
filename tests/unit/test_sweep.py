"""`steer --sweep`: continuations at each strength, read back with the model unsteered."""

from __future__ import annotations

import json
import math

import pytest
import torch

from amygdala_tl.formats.gguf import read_control_vector, write_control_vector
from amygdala_tl.formats.readout import served_scores
from amygdala_tl.pipelines.steer import generate, mean_resid_norm, prompt_tokens, steering_hook
from amygdala_tl.pipelines.sweep import (
    PLOT_FILE,
    SWEEP_FILE,
    SweepConfig,
    concept_term,
    control_vector_scaled,
    run_sweep_command,
    steering_score,
)
from amygdala_tl.pipelines.vectors import open_vectors
from amygdala_tl.quality.calibration import read_calibration

from ..conftest import copy_starter_corpus, hf_block_outputs, make_tiny_hf

PROMPTS = ["the cat sat on the", "she had a cup of tea at the table in the morning and", "the rain was cold"]
ALPHAS = [0.0, 2.0, 8.0]
STEER_LAYER = 1
NEW_TOKENS = 6


@pytest.fixture(scope="module")
def swept(tiny_model, tmp_path_factory):
    """An extract of the tiny model (calibration.json included) and one sweep over two concepts' worth of it."""
    from amygdala_tl.pipelines.extract import ExtractConfig, run_extract

    root = tmp_path_factory.mktemp("sweep")
    out = root / "out"
    run_extract(
        ExtractConfig(output_dir=out, corpus=copy_starter_corpus(root / "corpus"), layers="1,2", heads=False), loader=lambda *a, **k: tiny_model
    )
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n\n")
    config = SweepConfig(
        concept="all",
        layer=STEER_LAYER,
        vectors=out,
        alphas=ALPHAS[1:],
        prompts=root / "prompts.txt",
        max_new_tokens=NEW_TOKENS,
        output=root / "sweep",
    )
    with pytest.MonkeyPatch.context() as patch:  # the run records the tiny model as a hub id: no hub here
        patch.setattr("amygdala_tl.pipelines.sweep.load_model_for", lambda *a, **k: tiny_model)
        result = run_sweep_command(config)
    return out, result, json.loads(result.path.read_text())


def test_the_sweep_writes_its_json_and_plot_and_names_a_best_strength(swept):
    out, result, payload = swept
    assert result.path is not None and result.path.name == SWEEP_FILE and (result.path.parent / PLOT_FILE).read_bytes().startswith(b"\x89PNG")
    vectors = open_vectors(out)
    assert payload["alphas"] == ALPHAS and payload["prompts"] == PROMPTS and payload["steer_layer"] == STEER_LAYER
    assert payload["read_layer"] == read_calibration(out, vectors.record, vectors.readout).layers_ranked[0]
    assert list(payload["concepts"]) == vectors.readout.concepts
    for sweep in payload["concepts"].values():
        rows = sweep["rows"]
        assert [row["alpha"] for row in rows] == ALPHAS and rows[0]["relative_perplexity"] == pytest.approx(1.0)
        best = max(rows, key=lambda row: (row["steering_score"], -row["alpha"]))
        assert sweep["best_alpha"] == best["alpha"]
        for row in rows:
            z = [c["concept_z"] for c in row["continuations"]]
            assert row["concept_z"] == pytest.approx(sum(z) / len(z))
            assert row["concept_lift"] == pytest.approx(row["concept_z"] - rows[0]["concept_z"])
            assert row["steering_score"] == pytest.approx(steering_score(concept_term(row["concept_lift"]), min(1.0, 1 / row["relative_perplexity"])))
    assert any(line.startswith(f"{vectors.readout.concepts[0]}: best alpha") and "--control-vector-scaled" in line for line in result.summary())


def test_alpha_0_reproduces_the_unsteered_continuation_exactly(swept, tiny_model):
    _, _, payload = swept
    for index, prompt in enumerate(PROMPTS):
        unsteered = generate(tiny_model, prompt, [], max_new_tokens=NEW_TOKENS)  # steer's full-forward generation, no hook
        assert payload["unsteered"][index]["text"] == unsteered
        for sweep in payload["concepts"].values():
            assert sweep["rows"][0]["continuations"][index]["text"] == unsteered
    # and the strengths do steer: some continuation at alpha 8 differs from the unsteered one
    assert any(c["text"] != payload["unsteered"][c["prompt"]]["text"] for s in payload["concepts"].values() for c in s["rows"][-1]["continuations"])


def test_the_concept_score_is_read_with_the_model_unsteered(swept, tiny_model):
    """Each continuation's z equals plain HF forward hooks (no steering) on prompt + continuation, averaged over the
    continuation's tokens; the same read with the steering vector added differs, so a hook left on would fail here."""
    out, _, payload = swept
    vectors = open_vectors(out)
    readout, layer = vectors.readout, payload["read_layer"]
    calibration = read_calibration(out, vectors.record, readout)
    assert calibration is not None
    hf = make_tiny_hf(seed=0)
    checked = 0
    for name, sweep in payload["concepts"].items():
        c = readout.concepts.index(name)
        row = sweep["rows"][-1]
        for continuation in row["continuations"]:
            prompt = PROMPTS[continuation["prompt"]]
            prompt_ids = prompt_tokens(tiny_model, prompt).tolist()
            ids = prompt_ids + continuation["token_ids"]

            def z_of(add, c=c, ids=ids, prompt_ids=prompt_ids):
                hidden = hf_block_outputs(hf, ids, [layer], add=add)[layer][len(prompt_ids) :]
                return float(calibration.z(layer, served_scores(hidden, readout.vectors[layer]))[:, c].double().mean())

            assert continuation["concept_z"] == pytest.approx(z_of(None), abs=1e-4)
            scale = row["alpha"] * mean_resid_norm(tiny_model, prompt_tokens(tiny_model, prompt), STEER_LAYER)
            steered = z_of({STEER_LAYER: scale * readout.vectors[STEER_LAYER][readout.concepts.index(name)].float()})
            assert abs(steered - continuation["concept_z"]) > 0.05
            checked += 1
    assert checked == len(readout.concepts) * len(PROMPTS)


def test_perplexity_equals_a_plain_hf_computation(swept, tiny_model):
    _, _, payload = swept
    hf = make_tiny_hf(seed=0)
    for continuation in [*payload["unsteered"], *next(iter(payload["concepts"].values()))["rows"][-1]["continuations"]]:
        prompt_ids = prompt_tokens(tiny_model, PROMPTS[continuation["prompt"]]).tolist()
        ids = torch.tensor([prompt_ids + continuation["token_ids"]])
        with torch.inference_mode():
            logits = hf(ids).logits[0]
        n = len(prompt_ids)
        nll = torch.nn.functional.cross_entropy(logits[n - 1 : -1].double(), ids[0, n:])
        assert continuation["perplexity"] == pytest.approx(math.exp(float(nll)), rel=1e-4)


@pytest.mark.parametrize("gguf_scale", [1.0, 2.5])
def test_the_llama_cpp_value_adds_what_steer_adds(swept, tiny_model, tmp_path, gguf_scale):
    """S * (the GGUF row read back as llama.cpp reads it) == the vector steer's hook adds at alpha."""
    out, _, payload = swept
    readout = open_vectors(out).readout
    concept, alpha, prompt = readout.concepts[1], 3.0, PROMPTS[1]
    vector = readout.vectors[STEER_LAYER][1].float()
    mean_norm = mean_resid_norm(tiny_model, prompt_tokens(tiny_model, prompt), STEER_LAYER)
    path = write_control_vector(readout, concept, tmp_path / "c.gguf", "llama", [STEER_LAYER], scale=gguf_scale)
    _, rows = read_control_vector(path)
    name, add = steering_hook(STEER_LAYER, vector, alpha * mean_norm)
    added = add(torch.zeros(1, 1, vector.shape[0]), None)[0, 0]
    s = control_vector_scaled(alpha, mean_norm, vector, gguf_scale)
    torch.testing.assert_close(torch.from_numpy(rows[STEER_LAYER]) * s, added, rtol=1e-5, atol=1e-5)
    # the sweep's value for its own rows is the same formula at the prompts' mean norm
    norms = [mean_resid_norm(tiny_model, prompt_tokens(tiny_model, p), STEER_LAYER) for p in PROMPTS]
    row = payload["concepts"][concept]["rows"][-1]
    assert payload["mean_resid_norm"] == pytest.approx(sum(norms) / len(norms))
    assert row["control_vector_scaled"] == pytest.approx(control_vector_scaled(row["alpha"], payload["mean_resid_norm"], vector, 1.0))


def test_the_score_terms():
    assert concept_term(0.0) == 0.0 and concept_term(-2.0) == 0.0 and concept_term(1.0) == pytest.approx(0.6827, abs=1e-4)
    assert steering_score(0.0, 1.0) == 0.0 and steering_score(1.0, 1.0) == 1.0 and steering_score(0.5, 1.0) == pytest.approx(2 / 3)
