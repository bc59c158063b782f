"""The all-layer extract (every block, quality report, per-head analysis) vs one bare HF forward pass over the same texts.

One run of each, on the same loaded model (no activation store, so every text is run): a bare
`AutoModelForCausalLM` forward (all blocks, logits) over the corpus's and the development set's texts
in the toolkit's own length-sorted batches; `extract --quality-report` at every block with per-head z; and the
same extract at the five 40-80% depth layers (the default before issue 19). Prints the seconds of each, the
all-layer extract / bare ratio and the all-layer / five-layer ratio. The ratio includes everything after the
pass too (directions, held-out evaluation of every layer, per-head analysis, report, files).

`--concepts N --per-concept M` copy a subset of the corpus (the first N concepts, M stories each, no paired
scenarios, M development texts each, and the manifest) into a temporary directory: the bare forward pass
alone over the full corpus takes about 15 minutes on a 2-core CPU.

    python -m benchmarks.bench_all_layers [--corpus corpus] [--concepts 12] [--per-concept 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from amygdala_tl.capture import encode, make_batches
from amygdala_tl.corpus import load_corpus, load_heldout
from amygdala_tl.layers import mid_depth_layers
from amygdala_tl.model import DTYPES, load_model
from amygdala_tl.model_spec import resolve_model_spec
from amygdala_tl.pipelines.extract import ExtractConfig, run_extract

from .timing import bare_forward_s, synchronize


def subset_corpus(corpus: Path, target: Path, n_concepts: int | None, per_concept: int | None) -> Path:
    """The first `n_concepts` concepts with `per_concept` stories and development texts each (None: the whole corpus)."""
    if n_concepts is None and per_concept is None:
        return corpus
    concepts = sorted(p.name for p in (corpus / "stories").iterdir() if p.is_dir())[:n_concepts]
    for part in ("stories", "heldout"):
        for concept in [*concepts, "_neutral"]:
            source = corpus / part / concept
            if not source.is_dir():
                continue
            (target / part / concept).mkdir(parents=True)
            files = sorted(source.glob("*.txt"))
            for path in files[:: max(1, len(files) // (per_concept or len(files)))][:per_concept]:  # spread over the writers
                shutil.copy(path, target / part / concept / path.name)
    for record in ("manifest.tsv", "writers.tsv"):  # the writers, so cross-validation leaves one out as `make demo` does
        if (corpus / record).is_file():
            shutil.copy(corpus / record, target / record)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--corpus", default="corpus")
    parser.add_argument("--concepts", type=int, default=None)
    parser.add_argument("--per-concept", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM

    spec = resolve_model_spec(args.model)
    dtype = DTYPES[args.dtype]
    model = load_model(spec, dtype=dtype, device=args.device)
    source = Path(spec.location)
    extra = {"gguf_file": source.name} if spec.kind == "gguf" else {}
    bare = AutoModelForCausalLM.from_pretrained(
        source.parent if spec.kind == "gguf" else spec.location, dtype=dtype, attn_implementation="eager", **extra
    )
    bare = bare.to(args.device).eval()

    with tempfile.TemporaryDirectory() as scratch:
        corpus = subset_corpus(Path(args.corpus), Path(scratch) / "corpus", args.concepts, args.per_concept)
        heldout = corpus / "heldout"
        texts = load_corpus(corpus).texts + ([s.text for s in load_heldout(heldout)] if heldout.is_dir() else [])
        token_ids, _ = encode(model.tokenizer, texts, 512)
        batches = make_batches(token_ids, args.batch_size, model.tokenizer.pad_token_id)
        n_tokens = sum(len(ids) for ids in token_ids)
        bare_s = bare_forward_s(bare, batches, args.device)

        def extract(name: str, layers: list[int] | None) -> tuple[float, dict]:
            config = ExtractConfig(
                output_dir=Path(scratch) / name,
                corpus=corpus,
                layers=layers,
                quality_report=True,
                heads=True,
                use_cache=False,
                batch_size=args.batch_size,
                device=args.device,
                dtype=args.dtype,
            )
            started = time.perf_counter()
            result = run_extract(config, loader=lambda *a, **k: model)
            synchronize(args.device)
            return time.perf_counter() - started, result.record.timings

        all_s, all_timings = extract("all", None)
        five = mid_depth_layers(model.facts.n_layers)
        five_s, five_timings = extract("five", five)

    print(f"{spec.display}, {args.device}, {args.dtype}: {len(texts)} texts (corpus + development set), {n_tokens} tokens, {len(batches)} batches")
    print(f"bare HF forward (every block, logits)     {bare_s:8.1f} s")
    print(f"extract, all {model.facts.n_layers} layers, report, heads  {all_s:8.1f} s   {all_timings}")
    print(f"extract, layers {five}, report, heads  {five_s:8.1f} s   {five_timings}")
    print(f"ratio all-layer extract / bare forward     {all_s / bare_s:8.2f}x")
    print(f"ratio all-layer / five-layer extract       {all_s / five_s:8.2f}x")


if __name__ == "__main__":
    main()
