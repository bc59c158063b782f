"""The architecture matrix: `extract` on a tiny random model of every family we claim, checked without TransformerLens.

Each model is built from a `transformers` config (hidden size 64, a few layers, the bundled tokenizer's
vocabulary), saved as an HF checkpoint directory and loaded by `extract` itself, as a user's model is.
The reference is the in-memory HF model that was saved: plain torch forward hooks on its own
decoder-block list (found here, not through the project), one text at a time (no padding), the last
token of each block's output. Every exported vector must equal that reference's diff-of-means, every
block included (the last one too, whose HF `hidden_states` entry would carry the final norm), and
the per-head analysis must cover exactly the standard-attention layers.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from amygdala_tl.capture import DEFAULT_POOLING, reading
from amygdala_tl.formats.readout import load_readout
from amygdala_tl.pipelines.extract import ExtractConfig, run_extract

from ..conftest import client_reading

VOCAB = 49152  # the bundled SmolLM2 tokenizer's vocabulary
MAX_LENGTH = 200  # the stories run 126-228 tokens: some keep their end, the others are right-padded in a batch
LINEAR = "linear_attention"


@dataclass(frozen=True)
class Arch:
    """One family: how to build its tiny model, and where its decoder blocks sit (for the reference)."""

    name: str
    build: Callable[[], nn.Module]
    blocks: Callable[[nn.Module], nn.ModuleList]


def _sizes(n_layers: int, **extra) -> dict:
    return dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        **extra,
    )


# Gated delta net layers small enough for 64 dims; full-attention heads of 16 dims.
_HYBRID = dict(head_dim=16, linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4)


def _causal(config_class: str, **kwargs) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import transformers
        from transformers import AutoModelForCausalLM

        config = getattr(transformers, config_class)(**kwargs)
        return AutoModelForCausalLM.from_config(config, attn_implementation="eager")

    return build


def _qwen3_5_multimodal() -> nn.Module:
    """The Qwen3.5 vision-language model (the family a user ran at 27B): text layers under
    `model.language_model`, their config nested as `text_config`, beside a (tiny) vision tower."""
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration, Qwen3_5TextConfig, Qwen3_5VisionConfig

    text = Qwen3_5TextConfig(**_sizes(4, **_HYBRID))  # the checkpoints' own pattern: three linear layers, then a full one
    vision = Qwen3_5VisionConfig(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, num_position_embeddings=16)
    config = Qwen3_5Config(text_config=text.to_dict(), vision_config=vision.to_dict())
    return Qwen3_5ForConditionalGeneration(config)


def _gemma3_multimodal() -> nn.Module:
    """Gemma 3 as released from 4B up: the text model under `model.language_model` beside a (tiny) SigLIP tower.
    Booting it makes TransformerLens look for an image processor (and once `pip install`ed torchvision)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    text = Gemma3TextConfig(**_sizes(3, head_dim=16, sliding_window=32, layer_types=["sliding_attention", "sliding_attention", "full_attention"]))
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14)
    return Gemma3ForConditionalGeneration(Gemma3Config(text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4))


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    return model.model.layers


ARCHS = [
    Arch("llama", _causal("LlamaConfig", **_sizes(3)), _decoder_layers),
    Arch("mistral", _causal("MistralConfig", **_sizes(3, sliding_window=32)), _decoder_layers),
    Arch("qwen3", _causal("Qwen3Config", **_sizes(3, head_dim=16)), _decoder_layers),
    Arch(
        "gemma3",
        _causal(
            "Gemma3TextConfig", **_sizes(3, head_dim=16, sliding_window=32, layer_types=["sliding_attention", "full_attention", "sliding_attention"])
        ),
        _decoder_layers,
    ),
    Arch("gemma3_multimodal", _gemma3_multimodal, lambda m: m.model.language_model.layers),
    Arch("phi3", _causal("Phi3Config", **_sizes(3)), _decoder_layers),
    Arch("gpt2", _causal("GPT2Config", vocab_size=VOCAB, n_embd=64, n_layer=3, n_head=4, n_positions=512), lambda m: m.transformer.h),
    Arch(
        "qwen3_5_text",  # linear and full attention mixed, the last block a linear one
        _causal("Qwen3_5TextConfig", **_sizes(4, layer_types=[LINEAR, "full_attention", LINEAR, LINEAR], **_HYBRID)),
        _decoder_layers,
    ),
    Arch(
        "qwen3_next",  # hybrid attention with a sparse mixture-of-experts MLP
        _causal(
            "Qwen3NextConfig",
            **_sizes(4, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32, **_HYBRID),
        ),
        _decoder_layers,
    ),
    Arch("qwen3_5_multimodal", _qwen3_5_multimodal, lambda m: m.model.language_model.layers),
]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices run faster on one thread: with two, the gated delta rule's batched triangular solves
    take 100x longer on a busy 2-core machine (1 s instead of 8 ms each)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_subprocess(monkeypatch):
    """Loading a model runs no program: TransformerLens once ran `pip install torchvision` mid-boot (and a
    swallowed error would hide a refused one, so every attempt is recorded and must not happen)."""
    attempts: list = []

    def refuse(args, *rest, **kwargs):
        attempts.append(args)
        raise OSError(f"the architecture matrix runs no program, but was asked to run {args}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    yield
    assert not attempts, f"loading the model tried to run {attempts}"


@pytest.fixture(scope="session")
def tokenizer_dir(bundled_tokenizer, tmp_path_factory) -> Path:
    """The bundled tokenizer as HF tokenizer files, written once and copied into every checkpoint."""
    directory = tmp_path_factory.mktemp("bundled-tokenizer")
    bundled_tokenizer.save_pretrained(directory)
    return directory


def text_config(model: nn.Module):
    config = model.config
    return getattr(config, "text_config", None) or config


def layer_kinds(model: nn.Module) -> list[str]:
    """Each decoder block's attention kind, from the config (a model without `layer_types` has only full attention)."""
    config = text_config(model)
    n_layers = getattr(config, "num_hidden_layers", None) or config.n_layer
    return list(getattr(config, "layer_types", None) or ["full_attention"] * n_layers)


def labelled_texts(corpus: Path) -> list[tuple[str, str]]:
    """(text, label) for every file: stories/<concept>/*.txt, paired/<scenario>/<concept or baseline>.txt.
    A text is its file's content stripped of surrounding whitespace, as the corpus guide defines it."""
    files = [(p, p.parent.name) for p in sorted(corpus.glob("stories/*/*.txt"))] + [(p, p.stem) for p in sorted(corpus.glob("paired/*/*.txt"))]
    return [(path.read_text(encoding="utf-8").strip(), label) for path, label in files]


def block_outputs(model: nn.Module, blocks: nn.ModuleList, token_ids: list[int]) -> torch.Tensor:
    """[n_layers, d_model]: every decoder block's output read as a default export declares (the client's
    aggregate over the text's tokens: conftest.client_reading), from plain forward hooks."""
    seen: dict[int, torch.Tensor] = {}

    def keep(index: int):
        def hook(module, args, output) -> None:  # noqa: ARG001 - torch hook signature
            seen[index] = client_reading((output[0] if isinstance(output, tuple) else output)[0].double(), reading(DEFAULT_POOLING))

        return hook

    handles = [block.register_forward_hook(keep(index)) for index, block in enumerate(blocks)]
    try:
        with torch.inference_mode():
            model(input_ids=torch.tensor([token_ids]), use_cache=False, logits_to_keep=1)  # the hooks see every position
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack([seen[index] for index in range(len(blocks))])


@pytest.mark.parametrize("arch", ARCHS, ids=[arch.name for arch in ARCHS])
def test_extract_matches_plain_hooks(arch, bundled_tokenizer, tokenizer_dir, starter_corpus, tmp_path):
    """A family the bridge maps wrongly (a block off, padding leaking into a linear-attention state, a nested
    text model read from the wrong list) would export vectors that this plain-HF reference does not reproduce."""
    torch.manual_seed(0)
    reference = arch.build().eval()
    blocks = arch.blocks(reference)
    kinds = layer_kinds(reference)
    assert len(kinds) == len(blocks)
    checkpoint = tmp_path / arch.name
    reference.save_pretrained(checkpoint)
    for tokenizer_file in tokenizer_dir.iterdir():
        (checkpoint / tokenizer_file.name).write_bytes(tokenizer_file.read_bytes())

    every_layer = list(range(len(blocks)))
    config = ExtractConfig(
        output_dir=tmp_path / "out",
        corpus=starter_corpus,
        model=str(checkpoint),
        device="cpu",
        layers=",".join(map(str, every_layer)),
        method="pooled",
        max_length=MAX_LENGTH,
        use_cache=False,
    )
    result = run_extract(config)

    # The reference: each text alone through the HF model, the end of a longer one kept (the tokenizer adds no special tokens).
    texts, labels = zip(*labelled_texts(starter_corpus))
    assert sorted(texts) == sorted(result.corpus.texts)
    token_ids = [bundled_tokenizer(text)["input_ids"] for text in texts]
    assert token_ids == [bundled_tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    assert any(len(ids) > MAX_LENGTH for ids in token_ids) and any(len(ids) < MAX_LENGTH for ids in token_ids)
    acts = torch.stack([block_outputs(reference, blocks, ids[-MAX_LENGTH:]) for ids in token_ids], dim=1)  # [layer, text, d]

    # The captured residual is that block output, text by text, whatever the batch padding.
    order = [texts.index(text) for text in result.corpus.texts]
    assert result.activations.layers == every_layer
    torch.testing.assert_close(result.activations.resid.double(), acts[:, order], rtol=1e-4, atol=1e-4)

    readout = load_readout(tmp_path / "out")
    concepts = sorted({label for label in labels if label != "baseline" and labels.count(label) >= 2})
    assert readout.concepts == concepts and readout.layers == every_layer
    positives = torch.tensor([[label == concept for label in labels] for concept in concepts])  # negatives: every other text
    for layer in every_layer:
        diff = torch.stack([acts[layer][row].mean(0) - acts[layer][~row].mean(0) for row in positives])
        expected = diff / diff.norm(dim=-1, keepdim=True)
        exported = readout.vectors[layer].double()
        assert exported.shape == (len(concepts), 64)
        torch.testing.assert_close(exported, expected, rtol=0, atol=2e-3)
        cosine = torch.nn.functional.cosine_similarity(exported, expected, dim=-1)
        assert cosine.min() > 0.99999, f"layer {layer}: cosine {cosine.min():.6f}"

    # Per-head: exactly the standard-attention layers (full or sliding window), every other one listed as skipped.
    per_head = json.loads((tmp_path / "out" / "per_head.json").read_text())
    head_layers = [layer for layer, kind in enumerate(kinds) if kind != LINEAR]
    assert [entry["layer"] for entry in per_head["skipped_layers"]] == [layer for layer, kind in enumerate(kinds) if kind == LINEAR]
    assert per_head["n_heads"] == 4
    for concept in concepts:
        assert sorted(map(int, per_head["concepts"][concept])) == head_layers
        for entry in per_head["concepts"][concept].values():
            assert len(entry["top_heads"]) == 4 and len(entry["direct_contribution"]) == 4
    if "linear_attention" in kinds:  # a hybrid: both kinds present, so the split above is a real one
        assert head_layers and len(head_layers) < len(kinds)
