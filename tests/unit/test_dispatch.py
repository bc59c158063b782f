"""`--device-map`: accelerate dispatch through load_model, forced to split a tiny local Llama across CPU and disk offload.

The split runs the same CPU kernels on the same weights as the single-device run (accelerate only
moves each offloaded module's weights in for its own forward), so activations and exports agree to
atol 1e-6, rtol 0, in practice bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from amygdala_tl.capture import capture
from amygdala_tl.errors import UserError
from amygdala_tl.formats.readout import load_readout
from amygdala_tl.model import LoadedModel, load_model
from amygdala_tl.model_spec import resolve_model_spec
from amygdala_tl.pipelines.extract import ExtractConfig, ExtractResult, run_extract

from ..conftest import copy_starter_corpus, make_tiny_hf, make_tokenizer

N_LAYERS, LAYERS, MAX_LENGTH = 4, [1, 2, 3], 64
TOLERANCE = dict(atol=1e-6, rtol=0.0)
BLOCKS_ON_DISK = {
    "model.embed_tokens": "cpu",
    "model.rotary_emb": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "disk",
    "model.layers.2": "disk",
    "model.layers.3": "cpu",
    "model.norm": "cpu",
    "lm_head": "cpu",
}
SPLITS = {
    "explicit map: blocks 1-2 on disk": dict(device_map=BLOCKS_ON_DISK),
    # what `--device-map auto` does when the budget is short: 60 kB of CPU holds the embedding, not one 37 kB block beside it
    "auto under max_memory": dict(device_map="auto", max_memory={"cpu": 60_000, "disk": 10**9}),
    "everything on disk, embedding included": dict(device_map={"": "disk"}),
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny-llama")
    make_tiny_hf(N_LAYERS).save_pretrained(root)
    make_tokenizer().save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """conftest's starter corpus, once per module: 6 concepts x 2 stories plus the paired commute."""
    return copy_starter_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def single_run(model_dir, corpus, tmp_path_factory) -> tuple[ExtractResult, Path]:
    """The reference: extract on one device (cpu), the path every other test takes."""
    out = tmp_path_factory.mktemp("single")
    return extract(model_dir, corpus, out, device="cpu"), out


def extract(model_dir: Path, corpus: Path, out: Path, loader=None, **options) -> ExtractResult:
    config = ExtractConfig(
        output_dir=out, model=str(model_dir), corpus=corpus, layers="1,2,3", batch_size=4, max_length=MAX_LENGTH, use_cache=False, **options
    )
    return run_extract(config, loader=loader)


def load_split(model_dir: Path, offload: Path, split: dict) -> LoadedModel:
    return load_model(resolve_model_spec(str(model_dir)), offload_folder=offload, **split)


def assert_really_split(model: LoadedModel, split: dict) -> None:
    """accelerate dispatched it (some weights offloaded to disk, still on `meta` after the bridge booted); inputs go to the CPU."""
    hf_model = model.bridge.original_model
    placement = getattr(hf_model, "hf_device_map", {})
    assert "disk" in placement.values()
    if split["device_map"] == BLOCKS_ON_DISK:
        assert placement == BLOCKS_ON_DISK
    if split["device_map"] == "auto":
        assert set(placement.values()) == {"cpu", "disk"}
    devices = {parameter.device.type for parameter in hf_model.parameters()}
    assert "meta" in devices, "every weight was materialized: nothing is offloaded"
    assert model.device == torch.device("cpu") and model.bridge.cfg.device == "cpu"


def test_single_device_load_is_not_dispatched(single_run):
    single = single_run[0].model
    assert getattr(single.bridge.original_model, "hf_device_map", None) is None
    assert {parameter.device.type for parameter in single.bridge.parameters()} == {"cpu"}
    assert single.device == torch.device("cpu")


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS.keys())
def test_hooks_fire_on_offloaded_blocks_with_single_device_values(model_dir, single_run, split, tmp_path):
    model = load_split(model_dir, tmp_path / "offload", split)
    assert_really_split(model, split)
    expected = single_run[0].activations
    got = capture(model, single_run[0].corpus.texts, LAYERS, head_layers=LAYERS, batch_size=4, max_length=MAX_LENGTH)
    assert got.n_forward_passes == expected.n_forward_passes > 0
    torch.testing.assert_close(got.resid, expected.resid, **TOLERANCE)
    torch.testing.assert_close(got.z, expected.z, **TOLERANCE)


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS.keys())
def test_split_extraction_exports_what_one_device_exports(model_dir, corpus, single_run, split, tmp_path):
    baseline, baseline_out = single_run
    loaded: list[LoadedModel] = []

    def loader(spec, **kwargs) -> LoadedModel:  # extract's own loader call, plus the placement the CLI does not spell
        dispatch = {**kwargs, **split, "offload_folder": tmp_path / "offload"}
        loaded.append(load_model(spec, **dispatch))
        return loaded[-1]

    run = extract(model_dir, corpus, tmp_path / "split", loader=loader, device_map="auto")
    assert len(loaded) == 1
    assert_really_split(loaded[0], split)
    assert run.activations.n_forward_passes > 0
    torch.testing.assert_close(run.activations.resid, baseline.activations.resid, **TOLERANCE)
    expected, got = load_file(baseline_out / "readout.safetensors"), load_file(tmp_path / "split" / "readout.safetensors")
    assert got.keys() == expected.keys() and len(got) == len(LAYERS)
    for name, vectors in expected.items():
        torch.testing.assert_close(got[name].float(), vectors.float(), **TOLERANCE)
    readout = load_readout(tmp_path / "split")
    assert readout.layers == LAYERS and readout.concepts == baseline.readout.concepts
    assert run.per_head == baseline.per_head


def test_dispatch_mistakes_are_user_errors(model_dir):
    spec = resolve_model_spec(str(model_dir))
    with pytest.raises(UserError, match="exclude each other"):
        load_model(spec, device="cpu", device_map="auto")
    with pytest.raises(UserError, match="only with a device_map"):
        load_model(spec, device="cpu", max_memory={"cpu": "1GiB"})
    # a placement refused (by transformers >= 5.2x at load, by TransformerLens at boot before): one line, not a traceback
    with pytest.raises(UserError, match="unsupported offload targets|Unsupported device type 'meta'"):
        load_model(spec, device_map={**BLOCKS_ON_DISK, "model.layers.1": "meta"})
