"""The bundled GGUF is dequantized once into an HF checkpoint that loads 15x faster: it must be the same model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from amygdala_tl import gguf_cache
from amygdala_tl.model_spec import model_identity, resolve_model_spec


def bundled_checkpoint() -> Path:
    spec = resolve_model_spec(None)
    converted = gguf_cache.converted_checkpoint(Path(spec.location), model_identity(spec).removeprefix("sha256:"))
    assert converted is not None and (converted / gguf_cache.DONE_FILE).is_file()
    return converted


@pytest.mark.integration
def test_the_converted_checkpoint_is_the_gguf_bit_for_bit(bundled, hf_reference):
    """`bundled` loaded through the checkpoint; `hf_reference` straight from the GGUF (transformers' own dequantization)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    converted = AutoModelForCausalLM.from_pretrained(bundled_checkpoint(), dtype=torch.float32).state_dict()
    reference = hf_reference.state_dict()
    assert converted.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(converted[name], tensor), name
    spec = resolve_model_spec(None)
    gguf_tokenizer = AutoTokenizer.from_pretrained(Path(spec.location).parent, gguf_file=Path(spec.location).name)
    text = "She didn't cry, not once.\nThen 42 cats - and a café."
    assert bundled.tokenizer(text)["input_ids"] == gguf_tokenizer(text)["input_ids"]
    assert (bundled.tokenizer.bos_token, bundled.tokenizer.eos_token) == (gguf_tokenizer.bos_token, gguf_tokenizer.eos_token)


def test_large_files_and_the_switch_are_not_converted(tmp_path, monkeypatch):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(64))
    monkeypatch.setenv("AMYGDALA_TL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(gguf_cache, "MAX_GGUF_BYTES", 16)
    assert gguf_cache.converted_checkpoint(gguf, "0" * 64) is None
    monkeypatch.setattr(gguf_cache, "MAX_GGUF_BYTES", 1 << 30)
    monkeypatch.setenv("AMYGDALA_TL_GGUF_CACHE", "0")
    assert gguf_cache.converted_checkpoint(gguf, "0" * 64) is None
    assert not (tmp_path / "cache").exists()
