"""What `trace` costs beyond the model: trace of a 512-token text against one bare forward of the same text.

`trace` runs one forward pass read at the exported layers (it stops after the last of them) and reads
every token through the fp16 rows; the bare forward is the full model with logits, what a server's
prefill of the text costs. Medians over --repeats, after one warm-up each. Vectors: --vectors (an
extract output), else random unit rows for 60 concepts at --layers, with a unit calibration.

    python -m benchmarks.bench_trace [--tokens 512] [--layers 8,14,20] [--vectors out] [--device cpu] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from amygdala_tl.capture import encode, forward
from amygdala_tl.corpus import load_corpus
from amygdala_tl.formats.readout import build_readout, load_readout
from amygdala_tl.model import load_model
from amygdala_tl.model_spec import resolve_model_spec
from amygdala_tl.quality.calibration import Calibration
from amygdala_tl.tracing import trace_text


def long_text(model, n_tokens: int, corpus: str) -> str:
    """Corpus stories joined until the text has exactly `n_tokens` tokens (cut at a token boundary)."""
    text = ""
    for story in load_corpus(Path(corpus)).stories:
        text += story.text + "\n\n"
        ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) >= n_tokens:
            break
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    return model.tokenizer.decode(ids[: n_tokens - (len(encode(model.tokenizer, ["x"])[0][0]) - 1)])


def median_seconds(run, repeats: int, device: str) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        run()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--layers", default="8,14,20")
    parser.add_argument("--vectors", default=None)
    parser.add_argument("--corpus", default="corpus")
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    model = load_model(resolve_model_spec(args.model), dtype=torch.float32, device=args.device)
    if args.vectors:
        readout = load_readout(args.vectors)
    else:
        layers = [int(x) for x in args.layers.split(",")]
        readout = build_readout([f"c{i}" for i in range(60)], layers, torch.randn(len(layers), 60, model.facts.d_model))
    calibration = Calibration(
        readout.concepts,
        {layer: torch.zeros(len(readout.concepts), dtype=torch.float64) for layer in readout.layers},
        {layer: torch.ones(len(readout.concepts), dtype=torch.float64) for layer in readout.layers},
        {},
    )
    text = long_text(model, args.tokens, args.corpus)
    (ids,), _ = encode(model.tokenizer, [text])
    tokens = torch.tensor([ids])
    print(f"{model.spec.display}, {args.device}: a {len(ids)}-token text, layers {readout.layers}, {len(readout.concepts)} concepts")

    bare = median_seconds(lambda: forward(model, tokens, logits=True), args.repeats, args.device)
    same_depth = median_seconds(lambda: forward(model, tokens, read=[f"blocks.{max(readout.layers)}.hook_resid_post"]), args.repeats, args.device)
    traced = median_seconds(lambda: trace_text(model, readout, text, "tail128", calibration=calibration), args.repeats, args.device)
    print(f"bare forward (logits): {bare * 1000:.1f} ms")
    print(f"trace (raw + running + z, every layer and concept): {traced * 1000:.1f} ms")
    print(f"forward to the last exported layer: {same_depth * 1000:.1f} ms")
    print(f"ratio trace / bare forward: {traced / bare:.3f}; trace / forward to the same depth: {traced / same_depth:.3f}")


if __name__ == "__main__":
    main()
