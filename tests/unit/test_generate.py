"""`generate --readout`: KV-cached generation with the readout of each step, as a server returns it at decode time."""

from __future__ import annotations

import json

import pytest
import torch

from amygdala_tl.capture import encode, running_reading
from amygdala_tl.formats.readout import build_readout, served_scores
from amygdala_tl.pipelines.generate import GenerateConfig, Steering, generate_with_readout, run_generate, run_generate_command
from amygdala_tl.pipelines.steer import generate, mean_resid_norm, prompt_tokens, steering_hook
from amygdala_tl.pipelines.vectors import open_vectors

from ..conftest import copy_starter_corpus, hf_block_outputs, make_tiny_hf, write_readout

PROMPTS = ["the cat sat on the", "she had a cup of tea at the table in the morning and"]
LAYERS = [0, 1, 2]  # every block of the tiny model, the last included


@pytest.fixture(scope="module")
def vectors_dir(tmp_path_factory):
    directions = torch.randn(len(LAYERS), 4, 32, generator=torch.Generator().manual_seed(5))
    readout = build_readout(["calm", "afraid", "bored", "joyful"], LAYERS, directions, metadata={"pooling": "tail3"})
    path = tmp_path_factory.mktemp("vec")
    write_readout(readout, path)
    return path


@pytest.mark.parametrize("prompt", PROMPTS)
def test_cached_generation_writes_what_full_forward_generation_writes(tiny_model, vectors_dir, prompt):
    readout = open_vectors(vectors_dir).readout
    ids, n_prompt, _ = generate_with_readout(tiny_model, readout, prompt, pooling="tail3", max_new_tokens=12)
    assert len(ids) - n_prompt == 12
    assert tiny_model.tokenizer.decode(ids[n_prompt:]) == generate(tiny_model, prompt, [], max_new_tokens=12)
    # sampling draws from the same generator the same way
    sampled, _, _ = generate_with_readout(tiny_model, readout, prompt, pooling="tail3", max_new_tokens=8, temperature=1.5, seed=3)
    assert tiny_model.tokenizer.decode(sampled[n_prompt:]) == generate(tiny_model, prompt, [], max_new_tokens=8, temperature=1.5, seed=3)


@pytest.mark.parametrize("steer", [False, True], ids=["plain", "steered"])
def test_each_steps_readout_equals_the_whole_text_read_at_every_position(tiny_model, vectors_dir, steer):
    """What generate returned token by token (cached steps) == the generated text re-run in one full forward
    through plain HF, scored at every position; with --steer, the same vector added in both."""
    vectors = open_vectors(vectors_dir)
    readout, prompt = vectors.readout, PROMPTS[1]
    steering = [Steering("afraid", 3.0, 1)] if steer else []
    steps = []
    result = run_generate(tiny_model, vectors, prompt, 1, steering, max_new_tokens=10, top=2, on_step=steps.append)

    ids = encode(tiny_model.tokenizer, [prompt])[0][0]
    ids = ids + tiny_model.tokenizer(result.completion, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(result.trace.tokens) == result.n_prompt_tokens + 10
    add = None
    if steer:
        scale = 3.0 * mean_resid_norm(tiny_model, prompt_tokens(tiny_model, prompt), 1)
        assert result.steering == [{"concept": "afraid", "alpha": 3.0, "layer": 1, "added_norm": scale}]
        add = {1: scale * readout.vectors[1][1].float()}
        assert result.completion != run_generate(tiny_model, vectors, prompt, 1, [], max_new_tokens=10).completion  # it steers
    hidden = hf_block_outputs(make_tiny_hf(seed=0), ids, LAYERS, add=add)
    for layer in LAYERS:
        expected = served_scores(hidden[layer], readout.vectors[layer])
        torch.testing.assert_close(result.trace.raw[layer], expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(result.trace.running[layer], running_reading(expected, "tail3"), atol=1e-4, rtol=1e-4)
    # each printed step is the running reading at its position, at the layer shown, top concepts first
    assert [step.index for step in steps] == list(range(result.n_prompt_tokens, len(ids)))
    for step in steps:
        row = result.trace.running[1][step.index]
        best = torch.argsort(row, descending=True)[:2]
        assert [name for name, _ in step.top] == [readout.concepts[int(i)] for i in best]
        assert [value for _, value in step.top] == pytest.approx([float(row[i]) for i in best], abs=1e-5)


def test_the_steering_hook_under_the_cache_is_the_full_forward_hook(tiny_model, vectors_dir):
    """Greedy steered generation with the cache == steer's full-forward generation with the same hook."""
    vectors = open_vectors(vectors_dir)
    prompt = PROMPTS[0]
    scale = 5.0 * mean_resid_norm(tiny_model, prompt_tokens(tiny_model, prompt), 2)
    hook = steering_hook(2, vectors.readout.vectors[2][0].float(), scale)
    result = run_generate(tiny_model, vectors, prompt, 2, [Steering("calm", 5.0, 2)], max_new_tokens=10)
    assert (
        result.completion.strip() == generate(tiny_model, prompt, [hook], max_new_tokens=10).strip()
    )  # the completion keeps the space that joins it to the prompt


def test_generate_command_prints_each_token_and_the_whole_result_as_json(tiny_model, vectors_dir, monkeypatch):
    from typer.testing import CliRunner

    from amygdala_tl.cli import app

    monkeypatch.setattr("amygdala_tl.pipelines.generate.load_model_for", lambda *a, **k: tiny_model)
    args = ["generate", PROMPTS[0], "--vectors", str(vectors_dir), "--max-new-tokens", "4"]
    shown = CliRunner().invoke(app, [*args, "--readout", "--layer", "2", "--steer", "bored:2@1", "--top", "2"])
    assert shown.exit_code == 0, shown.output
    lines = [line for line in shown.stdout.splitlines() if line.strip()]
    assert len([line for line in lines if line.startswith("  ")]) == 4 and "tail3" in shown.output
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    trace = payload["trace"]
    assert payload["steering"] == [] and trace["pooling"] == "tail3" and trace["z"] is None
    assert len(trace["tokens"]) == payload["n_prompt_tokens"] + 4 == len(trace["raw"]["1"])
    assert trace["text"] == PROMPTS[0] + payload["completion"]


def test_generate_checks_before_the_model_loads(vectors_dir):
    from amygdala_tl.errors import UserError

    def never(*a, **k):
        raise AssertionError("loaded")

    cases = [
        (dict(steer=["joyous:2"]), "unknown concept 'joyous'"),
        (dict(steer=["calm:2@7"]), "layer 7 is not in the vectors"),
        (dict(layer=9), "layer 9 is not in the vectors"),
        (dict(steer=["calm:inf"]), "alpha must be a number between -100 and 100"),
        (dict(steer=["calm"]), "expected CONCEPT:ALPHA"),
        (dict(prompt=" "), "the prompt is empty"),
        (dict(max_new_tokens=0), "--max-new-tokens must be at least 1, got 0"),
    ]
    for options, fragment in cases:
        config = GenerateConfig(**({"prompt": "the cat", "vectors": vectors_dir} | options))
        with pytest.raises(UserError, match=fragment):
            run_generate_command(config, loader=never)


def test_a_calibrated_generation_equals_trace_rerun_on_the_generated_text(tiny_model, tmp_path, monkeypatch):
    """With calibration.json (written by extract), each step's reading is in z, and the whole generation, written as
    the trace page, equals `trace` re-run on prompt + completion (prefill vs KV-cached steps: fp32 tolerance)."""
    from amygdala_tl.pipelines.extract import ExtractConfig, run_extract
    from amygdala_tl.pipelines.trace import trace

    for module in ("generate", "trace"):  # the run records the tiny model as a hub id: no hub here
        monkeypatch.setattr(f"amygdala_tl.pipelines.{module}.load_model_for", lambda *a, **k: tiny_model)
    out = tmp_path / "out"
    run_extract(ExtractConfig(output_dir=out, corpus=copy_starter_corpus(tmp_path / "corpus"), layers="1,2"), loader=lambda *a, **k: tiny_model)
    steps = []
    config = GenerateConfig(prompt=PROMPTS[1], vectors=out, max_new_tokens=5, html=tmp_path / "g.html")
    generation = run_generate_command(config, on_step=steps.append, loader=lambda *a, **k: tiny_model)
    again = trace(out, generation.trace.text, loader=lambda *a, **k: tiny_model)
    assert generation.trace.z is not None and again.z is not None and generation.trace.tokens == again.tokens
    for layer in (1, 2):
        torch.testing.assert_close(generation.trace.raw[layer], again.raw[layer], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(generation.trace.z[layer], again.z[layer], atol=1e-3, rtol=1e-3)
    last = steps[-1]  # what --readout printed for the last token: the top concepts of the z reading at the shown layer
    expected = sorted(zip(again.concepts, again.z[generation.layer][-1].tolist()), key=lambda item: -item[1])[: len(last.top)]
    assert [name for name, _ in last.top] == [name for name, _ in expected]
    page = (tmp_path / "g.html").read_text()
    assert page.startswith("<!doctype html>") and generation.trace.tokens[-1].strip() in page
