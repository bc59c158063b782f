"""Shared fixtures: a tiny random Llama for logic tests, the bundled SmolLM2 (loaded once) for integration."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from amygdala_tl.model import LoadedModel, facts_of, load_model
from amygdala_tl.model_spec import ModelSpec, resolve_model_spec

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "corpus"
WORDS = (
    "the a and of to in was she he it that his her on with as had at for but they were you is "
    "cat dog sat mat door window rain sun light cold warm quiet loud slow fast hand face room "
    "sky tree road house water river stone bread tea cup table chair night morning"
).split()


def make_tokenizer():
    """A whitespace word-level tokenizer built in memory (no files, no hub)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]")  # no BOS: TL would reload it by name


def make_tiny_hf(n_layers: int = 3, seed: int = 0, vocab_size: int = len(WORDS) + 2):
    """A random Llama with grouped-query attention (4 query heads over 2 KV heads), plain HF."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=None,
    )
    return LlamaForCausalLM(config).eval()


def make_tiny_model(n_layers: int = 3, seed: int = 0) -> LoadedModel:
    """make_tiny_hf's model through the bridge (the same seed gives the same weights)."""
    from transformer_lens.model_bridge import TransformerBridge

    tokenizer = make_tokenizer()
    hf_model = make_tiny_hf(n_layers, seed)
    bridge = TransformerBridge.boot_transformers("tiny-llama", hf_model=hf_model, tokenizer=tokenizer, device="cpu")
    spec = ModelSpec("hub", "tiny-llama", "tiny-llama")
    return LoadedModel(bridge, tokenizer, facts_of(bridge), spec, f"tiny-llama-seed{seed}", torch.float32)


@pytest.fixture(scope="session")
def tiny_model() -> LoadedModel:
    return make_tiny_model()


@pytest.fixture(scope="session")
def bundled() -> LoadedModel:
    return load_model(resolve_model_spec(None), dtype=torch.float32, device="cpu")


@pytest.fixture(scope="session")
def hf_reference():
    """A second, plain HF copy of the bundled model: the bridge wraps its own copy's modules in place."""
    from transformers import AutoModelForCausalLM

    path = Path(resolve_model_spec(None).location)
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32, attn_implementation="eager").eval()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


STARTER_CONCEPTS = ("calm", "afraid", "grateful", "furious", "bored", "joyful")


def first_sessions_corpus():
    """The shipped corpus's 653 texts by its first writers (s0, s1 in corpus/manifest.tsv): a fixed set for tests
    that read a whole corpus, so the suite does not grow as the corpus does."""
    from amygdala_tl.corpus import Corpus, load_corpus

    shipped = load_corpus(CORPUS)
    return Corpus([story for story in shipped.stories if story.writer in ("s0", "s1")], root=shipped.root)


def copy_starter_corpus(root: Path, concepts: tuple[str, ...] = STARTER_CONCEPTS, paired: bool = True) -> Path:
    """A small real corpus at `root`: 2 stories per concept (and the paired commute scenario), copied from corpus/."""
    for concept in concepts:
        for story in sorted((CORPUS / "stories" / concept).glob("*.txt"))[:2]:
            write(root / "stories" / concept / story.name, story.read_text())
    if paired:
        shutil.copytree(CORPUS / "paired" / "the_morning_commute", root / "paired" / "the_morning_commute")
    return root


@pytest.fixture
def starter_corpus(tmp_path) -> Path:
    """A small real corpus: 6 concepts x 2 stories plus one paired scenario, copied from corpus/."""
    return copy_starter_corpus(tmp_path / "corpus")


@pytest.fixture(scope="session")
def bundled_tokenizer():
    """The bundled model's tokenizer alone (vocabulary 49152), read from its GGUF once per session."""
    from transformers import AutoTokenizer

    path = Path(resolve_model_spec(None).location)
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def client_reading(per_token: torch.Tensor, declared: dict) -> torch.Tensor:
    """What a client of the server computes from the per-token values [pos, ...] (served scores, or the block
    outputs they are linear in) under a declared reading, written from the README's formula alone."""
    if declared["pool"] == "last":
        return per_token[-1]
    if declared["pool"] == "mean":
        if declared["span"] == "last_tokens":
            return per_token[-declared["n"] :].mean(0)
        return per_token[len(per_token) // 2 :].mean(0) if declared["span"] == "second_half" else per_token.mean(0)
    state = per_token[0]
    for value in per_token[1:]:
        state = declared["alpha"] * value + (1 - declared["alpha"]) * state
    return state


def write_readout(readout, output_dir: Path) -> tuple[Path, Path]:
    """Both serving files of a readout, written as a run commits them."""
    from amygdala_tl import atomic
    from amygdala_tl.formats.readout import MANIFEST_FILE, VECTORS_FILE, readout_payloads

    output_dir = Path(output_dir)
    atomic.commit_all([(output_dir / name, data) for name, data in readout_payloads(readout).items()])
    return output_dir / VECTORS_FILE, output_dir / MANIFEST_FILE


def hf_block_outputs(
    hf_model, ids: list[int], layers: list[int], *, add: dict[int, torch.Tensor] | None = None, padding: int = 0, left: bool = False
) -> dict[int, torch.Tensor]:
    """{layer: block output at every real token [n_tokens, d_model]} from plain PyTorch forward hooks on
    model.layers[layer] (no TransformerLens): what the serving side reads. `add` {layer: vector} is added to
    those blocks' outputs first (steering); `padding` pad tokens go on the right or, with position ids, the left."""
    captured, handles = {}, []
    for layer, vector in (add or {}).items():
        handles.append(
            hf_model.model.layers[layer].register_forward_hook(
                lambda m, a, out, v=vector: (out[0] + v, *out[1:]) if isinstance(out, tuple) else out + v
            )
        )
    for layer in layers:
        handles.append(
            hf_model.model.layers[layer].register_forward_hook(
                lambda m, a, out, l=layer: captured.__setitem__(l, (out[0] if isinstance(out, tuple) else out)[0].clone())
            )
        )
    real, pad = torch.tensor(ids), torch.zeros(padding, dtype=torch.long)
    ones, zeros = torch.ones(len(ids), dtype=torch.long), torch.zeros(padding, dtype=torch.long)
    input_ids = torch.cat([pad, real] if left else [real, pad])[None]
    mask = torch.cat([zeros, ones] if left else [ones, zeros])[None]
    try:
        with torch.inference_mode():
            hf_model(input_ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0))
    finally:
        for handle in handles:
            handle.remove()
    return {layer: hidden[padding:] if left else hidden[: len(ids)] for layer, hidden in captured.items()}
