"""Half-precision models: statistics still accumulate in fp32/fp64, so the exported directions stay within
a stated tolerance of the fp32 run: cosine >= 0.98 for bf16 (8-bit mantissa) and >= 0.995 for fp16 on the
tiny model, two stories per concept."""

from __future__ import annotations

import pytest
import torch

from amygdala_tl.model import LoadedModel, facts_of
from amygdala_tl.model_spec import ModelSpec
from amygdala_tl.pipelines.extract import ExtractConfig, run_extract

from ..conftest import make_tiny_hf, make_tokenizer


def tiny_in(dtype: torch.dtype) -> LoadedModel:
    from transformer_lens.model_bridge import TransformerBridge

    tokenizer = make_tokenizer()
    hf_model = make_tiny_hf().to(dtype)
    bridge = TransformerBridge.boot_transformers("tiny-llama", hf_model=hf_model, tokenizer=tokenizer, device="cpu", dtype=dtype)
    return LoadedModel(bridge, tokenizer, facts_of(bridge), ModelSpec("hub", "tiny-llama", "tiny-llama"), f"tiny-llama-{dtype}", dtype)


@pytest.mark.parametrize("dtype, tolerance", [(torch.bfloat16, 0.98), (torch.float16, 0.995)])
def test_half_precision_exports_match_fp32_within_tolerance(dtype, tolerance, starter_corpus, tmp_path, tiny_model):
    runs = {}
    for name, model in (("fp32", tiny_model), ("half", tiny_in(dtype))):
        config = ExtractConfig(output_dir=tmp_path / name, corpus=starter_corpus, layers="1,2", method="pooled", use_cache=False)
        runs[name] = run_extract(config, loader=lambda *a, model=model, **k: model)
    half = runs["half"]
    assert half.activations.resid.dtype == torch.float32  # pooled statistics are fp32 whatever the model dtype
    for layer in (1, 2):
        ours, reference = half.readout.vectors[layer].float(), runs["fp32"].readout.vectors[layer].float()
        assert half.readout.vectors[layer].dtype == torch.float16
        cosines = torch.nn.functional.cosine_similarity(ours, reference, dim=-1)
        assert float(cosines.min()) >= tolerance, f"layer {layer}: {cosines}"
