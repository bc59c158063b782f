"""`generate --readout` vs the same generation without the readout: time per new token.

Both sides are the same KV-cached loop (one prefill, then one forward step per token, greedy, the
same tokens): the readout side also reads `hook_resid_post` at every exported layer of each step and
scores it against the fp16 rows, as a server does at decode time. Also printed: steer's
full-forward `generate` (the whole text re-run per token) for reference. One run, the sides
interleaved, the median of `--repeats`; the ratio is readout / without.

    python -m benchmarks.bench_generate [--vectors out] [--new-tokens 64] [--repeats 3] [--device cpu|cuda]

Without `--vectors` (or if it has no export) the readout is 60 random unit rows at the default layers:
the cost depends on the layer and concept counts only.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from amygdala_tl.formats.readout import build_readout, load_readout
from amygdala_tl.layers import parse_layers
from amygdala_tl.model import load_model
from amygdala_tl.model_spec import resolve_model_spec
from amygdala_tl.pipelines.generate import generate_with_readout
from amygdala_tl.pipelines.steer import generate

PROMPT = "The letter came on a Tuesday, and she read it twice before she sat down. It said that"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--vectors", type=Path, default=Path("out"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = load_model(resolve_model_spec(args.model), dtype=torch.float32, device=args.device)
    if (args.vectors / "readout.json").is_file():
        readout = load_readout(args.vectors)
    else:
        layers = parse_layers(None, model.facts.n_layers)
        directions = torch.randn(len(layers), 60, model.facts.d_model, generator=torch.Generator().manual_seed(0))
        readout = build_readout([f"c{i}" for i in range(60)], layers, directions)
    print(f"{len(readout.layers)} layers x {len(readout.concepts)} concepts, {args.device}, up to {args.new_tokens} new tokens")

    def run(layers: list[int] | None) -> tuple[float, int]:
        start = time.perf_counter()
        ids, n_prompt, _ = generate_with_readout(model, readout, PROMPT, pooling="tail128", max_new_tokens=args.new_tokens, readout_layers=layers)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start, len(ids) - n_prompt

    run(None), run([])  # warm-up
    with_readout, without, full_forward = [], [], []
    for _ in range(args.repeats):
        seconds, n_new = run(None)
        with_readout.append(seconds / n_new)
        seconds, n_bare = run([])
        without.append(seconds / n_bare)
        assert n_new == n_bare, "the readout changed the generation"
    start = time.perf_counter()
    generate(model, PROMPT, [], max_new_tokens=n_new)
    full_forward.append((time.perf_counter() - start) / n_new)

    ms = lambda values: 1000 * statistics.median(values)  # noqa: E731
    print(f"new tokens per run:                  {n_new} (prefill of the prompt included in each time)")
    print(f"KV cache, no readout:               {ms(without):8.2f} ms/token")
    print(f"KV cache, readout at every layer:   {ms(with_readout):8.2f} ms/token")
    print(f"full forward per token (steer):     {ms(full_forward):8.2f} ms/token")
    print(f"ratio readout / no readout:         {statistics.median(with_readout) / statistics.median(without):8.3f}x")


if __name__ == "__main__":
    main()
