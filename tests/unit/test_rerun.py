"""A fully cached re-run loads no model weights: the store keeps the tokenizer, the model's facts and the weights reports need."""

from __future__ import annotations

import json
import os
import shutil
import warnings

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import amygdala_tl
from amygdala_tl import model_spec as model_module
from amygdala_tl.capture.store import ActivationStore, StoreWarning, store_key
from amygdala_tl.model import DeferredModel, load_model
from amygdala_tl.model_spec import ModelSpec, model_identity
from amygdala_tl.rundir import PER_HEAD_FILE, VECTORS_FILE

from ..conftest import copy_starter_corpus, make_tiny_hf, make_tokenizer, write


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """A tiny Llama saved as a local model directory (loaded by the real load_model), a small corpus, a counting loader."""
    monkeypatch.setenv("AMYGDALA_TL_CACHE", str(tmp_path / "home-cache"))  # the weight files' remembered hashes
    model_dir = tmp_path / "model"
    make_tiny_hf(3).save_pretrained(model_dir)
    make_tokenizer().save_pretrained(model_dir)
    corpus = copy_starter_corpus(tmp_path / "corpus", ("calm", "afraid", "grateful"), paired=False)
    loads: list[str] = []

    def loader(spec, **options):
        loads.append(spec.location)
        return load_model(spec, **options)

    def run(output: str, **options):
        return amygdala_tl.extract(corpus, tmp_path / output, str(model_dir), loader=loader, cache_dir=tmp_path / "cache", max_length=48, **options)

    return run, loads, corpus, tmp_path


def vectors(result) -> dict[str, torch.Tensor]:
    return load_file(next(p for p in result.files if p.name == VECTORS_FILE))


def test_cached_rerun_loads_no_weights_and_writes_the_same_run(setup):
    run, loads, _, tmp_path = setup
    first = run("first")
    assert len(loads) == 1 and not isinstance(first.model, DeferredModel)
    again = run("again")
    assert len(loads) == 1, "the re-run loaded the model although every activation was in the store"
    assert isinstance(again.model, DeferredModel)
    assert again.record.n_forward_passes == 0
    first_vectors, again_vectors = vectors(first), vectors(again)
    assert first_vectors.keys() == again_vectors.keys()
    for name in first_vectors:
        assert torch.equal(first_vectors[name], again_vectors[name])
    for field in ("model", "head_layers", "truncated", "score_offsets"):
        assert getattr(again.record, field) == getattr(first.record, field), field
    assert again.record.truncated, "max_length 48 truncates these stories: the stored tokenizer must see that too"
    per_head = [json.loads((tmp_path / out / PER_HEAD_FILE).read_text()) for out in ("first", "again")]
    assert [{k: v for k, v in p.items() if k != "run_id"} for p in per_head][0] == {k: v for k, v in per_head[1].items() if k != "run_id"}


def test_a_new_text_loads_the_model_then(setup):
    run, loads, corpus, _ = setup
    run("first")
    write(corpus / "stories" / "calm" / "new_one.txt", "She sat by the window with her tea and let the rain go on.")
    grown = run("grown")
    assert len(loads) == 2 and grown.record.n_forward_passes == 1
    uncached = amygdala_tl.extract(corpus, setup[3] / "uncached", grown.model.spec.location, use_cache=False, max_length=48)
    for name, tensor in vectors(uncached).items():  # fp16 rows; batch padding differs, so a few ulps apart
        assert torch.allclose(vectors(grown)[name].float(), tensor.float(), atol=1e-3), name


def test_another_dtype_does_not_reuse_the_store(setup):
    run, loads, _, _ = setup
    run("fp32")
    run("bf16", dtype="bf16")
    assert len(loads) == 2
    assert store_key("m", "last", 48, "fp32") != store_key("m", "last", 48, "bf16")


def test_a_damaged_model_record_means_a_load_not_a_crash(setup):
    run, loads, _, tmp_path = setup
    run("first")
    (record,) = (tmp_path / "cache").glob("*/model.json")
    record.write_text("{not json")
    with pytest.warns(StoreWarning, match="model.json"):
        run("again")
    assert len(loads) == 2


def test_a_record_for_another_model_is_not_used(tmp_path, tiny_model):
    store = ActivationStore(tmp_path, tiny_model.identity, "last", 48)
    store.save_model(tiny_model.record(), tiny_model.tokenizer)
    with warnings.catch_warnings(record=True):
        assert store.load_model_record("some-other-identity") is None
    record, tokenizer = store.load_model_record(tiny_model.identity)
    assert record["attention_layers"] == [0, 1, 2] and record["facts"]["d_model"] == 32
    text = "the cat sat on the mat"
    assert tokenizer(text)["input_ids"] == tiny_model.tokenizer(text)["input_ids"]
    shutil.rmtree(store.tokenizer_dir())
    with pytest.warns(StoreWarning):
        assert store.load_model_record(tiny_model.identity) is None


def test_a_deferred_model_refuses_weights_that_are_not_its_own(tiny_model):
    record = tiny_model.record() | {"identity": "recorded"}
    loads: list[int] = []
    deferred = DeferredModel(record, tiny_model.tokenizer, tiny_model.spec, torch.float32, lambda: loads.append(1) or tiny_model)
    assert deferred.attention_layers() == [0, 1, 2] and not loads
    with pytest.raises(amygdala_tl.UserError, match="not the model its cache record describes"):
        _ = deferred.bridge


def test_weights_edited_in_place_are_another_model(setup):
    """Same names, same sizes, even the mtime put back: the old activations must not be reused."""
    run, loads, corpus, tmp_path = setup
    first = run("first")
    weights = tmp_path / "model" / "model.safetensors"
    before = weights.stat()
    tensors = load_file(weights)
    for name in tensors:
        if "down_proj" in name:
            tensors[name] = torch.zeros_like(tensors[name])
    save_file(tensors, weights, metadata={"format": "pt"})
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert weights.stat().st_size == before.st_size
    edited = run("edited")
    assert len(loads) == 2 and edited.record.n_forward_passes > 0
    assert edited.record.model["identity"] != first.record.model["identity"]
    uncached = amygdala_tl.extract(corpus, tmp_path / "uncached", str(tmp_path / "model"), use_cache=False, max_length=48)
    assert vectors(edited).keys() == vectors(uncached).keys()
    for name, tensor in vectors(uncached).items():
        assert torch.equal(vectors(edited)[name], tensor), name
    assert any(not torch.equal(vectors(first)[name], tensor) for name, tensor in vectors(edited).items())


def test_a_weight_file_is_hashed_once_per_version(tmp_path, monkeypatch):
    monkeypatch.setenv("AMYGDALA_TL_CACHE", str(tmp_path / "home-cache"))
    spec = ModelSpec("local", str(tmp_path / "model"), "llama")
    write(tmp_path / "model" / "config.json", "{}")
    weights = tmp_path / "model" / "model.safetensors"
    weights.write_bytes(b"1" * 64)
    identity = model_identity(spec)
    hashed = []
    monkeypatch.setattr(model_module, "file_sha256", lambda path: hashed.append(path) or "0" * 64)
    assert model_identity(spec) == identity and hashed == []  # remembered: a 50 GB checkpoint is not hashed per command
    monkeypatch.undo()
    monkeypatch.setenv("AMYGDALA_TL_CACHE", str(tmp_path / "home-cache"))
    weights.write_bytes(b"2" * 64)
    assert model_identity(spec) != identity


def same_run(first, again) -> None:
    """The same vectors, model record and per-head analysis as the first run."""
    for name, tensor in vectors(first).items():
        assert torch.equal(vectors(again)[name], tensor), name
    assert again.record.model == first.record.model
    per_head = [json.loads(next(p for p in result.files if p.name == PER_HEAD_FILE).read_text()) for result in (first, again)]
    assert [{k: v for k, v in p.items() if k != "run_id"} for p in per_head][0] == {k: v for k, v in per_head[1].items() if k != "run_id"}


def rerun_warning_once(run, loads, path, name: str):
    """A run that warns about `path` by name, moves it aside and loads the model; then a run that does neither."""
    with pytest.warns(StoreWarning, match=path.name):
        again = run(name)
    assert len(loads) == 2, "a damaged cache file must mean a model load"
    assert path.with_suffix(".corrupt").is_file() and path.is_file(), "moved aside, then written anew"
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)
        run(name + "_third")
    assert len(loads) == 2
    return again


@pytest.mark.parametrize("damage", ["overwritten_values", "no_metadata", "garbage"])
def test_damaged_stored_weights_are_set_aside_and_read_off_the_model(setup, damage):
    """Overwritten W_O gave per_head.json a top contribution of 123.9 instead of 2.30, with exit 0."""
    run, loads, _, tmp_path = setup
    first = run("first")
    path = sorted((tmp_path / "cache").glob("*/weights-layer*.safetensors"))[-1]
    with safe_open(str(path), framework="pt") as handle:
        metadata, tensors = handle.metadata(), {name: handle.get_tensor(name) for name in handle.keys()}
    if damage == "overwritten_values":
        save_file({name: tensor * 50 for name, tensor in tensors.items()}, path, metadata=metadata)
    elif damage == "no_metadata":
        save_file(tensors, path)
    else:
        path.write_bytes(b"\x00not safetensors")
    same_run(first, rerun_warning_once(run, loads, path, "again"))


def test_report_refuses_damaged_stored_weights_naming_the_file(setup):
    """`report` has no model to read the weights off again: it names the file and stops."""
    from amygdala_tl.pipelines.report import run_report

    run, _, _, tmp_path = setup
    run("first")
    path = sorted((tmp_path / "cache").glob("*/weights-layer*.safetensors"))[-1]
    path.write_bytes(b"\x00not safetensors")
    with pytest.warns(StoreWarning, match=path.name), pytest.raises(amygdala_tl.UserError, match="lacks usable weights"):
        run_report(tmp_path / "first")


@pytest.mark.parametrize("edit", ["n_layers", "model_type", "tokenizer"])
def test_an_edited_model_record_is_set_aside_and_the_model_loaded(setup, edit):
    """An edited n_layers 40 / model_type gemma2 was accepted (and exported as the llama.cpp hint)."""
    run, loads, _, tmp_path = setup
    first = run("first")
    (path,) = (tmp_path / "cache").glob("*/model.json")
    stored = json.loads(path.read_text())
    if edit == "n_layers":
        stored["record"]["facts"]["n_layers"] = 40
    elif edit == "model_type":
        stored["record"]["model_type"] = "gemma2"
    else:  # two words swap their token ids: every text tokenizes differently
        tokenizer_file = path.parent / "tokenizer" / "tokenizer.json"
        tokenizer = json.loads(tokenizer_file.read_text())
        vocab = tokenizer["model"]["vocab"]
        vocab["cat"], vocab["dog"] = vocab["dog"], vocab["cat"]
        tokenizer_file.write_text(json.dumps(tokenizer))
    path.write_text(json.dumps(stored))
    same_run(first, rerun_warning_once(run, loads, path, "again"))
