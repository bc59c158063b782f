"""Capture throughput: a bare HF forward over the corpus's batches vs the toolkit's capture of the same texts.

Both sides see the same tokens in the same right-padded batches. The bare side is a plain
`AutoModelForCausalLM` forward (all blocks, logits); the toolkit side is `capture` at the default
target layers with per-head z (it stops after the last needed block and pools every hook at once).
Prints tokens per second for both, their ratio (toolkit / bare), and peak memory.

    python -m benchmarks.bench_capture [--device cpu|cuda] [--dtype fp32|bf16] [--max-texts N] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch

from amygdala_tl import hooks
from amygdala_tl.capture import capture, encode, make_batches
from amygdala_tl.corpus import load_corpus
from amygdala_tl.layers import parse_layers
from amygdala_tl.model import DTYPES, load_model
from amygdala_tl.model_spec import resolve_model_spec

from .timing import bare_forward_s, synchronize


def peak_memory(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB on the GPU"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB resident (process peak)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--corpus", default="corpus")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-texts", type=int, default=None)
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM

    spec = resolve_model_spec(args.model)
    dtype = DTYPES[args.dtype]
    texts = load_corpus(args.corpus).texts[: args.max_texts]
    model = load_model(spec, dtype=dtype, device=args.device)
    source = Path(spec.location)
    extra = {"gguf_file": source.name} if spec.kind == "gguf" else {}
    bare = (
        AutoModelForCausalLM.from_pretrained(
            source.parent if spec.kind == "gguf" else spec.location, dtype=dtype, attn_implementation="eager", **extra
        )
        .to(args.device)
        .eval()
    )
    layers = parse_layers(None, model.facts.n_layers)
    token_ids, _ = encode(model.tokenizer, texts, 512)
    batches = make_batches(token_ids, args.batch_size, model.tokenizer.pad_token_id)
    n_tokens = sum(len(ids) for ids in token_ids)

    capture(model, [texts[i] for i in batches[0].indices], layers, head_layers=layers, batch_size=args.batch_size)  # warm-up
    bare_s = bare_forward_s(bare, batches, args.device)
    head_layers = [layer for layer in layers if hooks.attn_z(layer) in model.bridge.hook_dict]
    started = time.perf_counter()
    capture(model, texts, layers, head_layers=head_layers, batch_size=args.batch_size)
    synchronize(args.device)
    capture_s = time.perf_counter() - started
    print(
        f"{spec.display}, {args.device}, {args.dtype}: {len(texts)} texts, {n_tokens} tokens, {len(batches)} batches of {args.batch_size}; "
        f"capture at layers {layers} with per-head z"
    )
    print(f"bare HF forward      {n_tokens / bare_s:9.0f} tokens/s  ({bare_s:.1f} s)")
    print(f"toolkit capture      {n_tokens / capture_s:9.0f} tokens/s  ({capture_s:.1f} s)")
    print(f"ratio toolkit / bare {bare_s / capture_s:9.2f}x throughput; peak memory {peak_memory(args.device)}")


if __name__ == "__main__":
    main()
