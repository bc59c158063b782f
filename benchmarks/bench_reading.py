"""How should a text be read? Training pooling x served reading x span, on the development sets.

One forward pass per text (the shipped corpus and every development set) keeps the residual at the
given layers pooled every way at once; each method learns from the corpus under each training pooling,
and each development set is read under each reading exactly as `amygdala-tl evaluate` reads an export
(fp16 rows, each concept's scores z-scored over the set, mean one-vs-rest AUROC and 60-way top-1).
Matched cells (trained and read the same way, what an export declares) carry a 90% bootstrap interval.
The development sets are never trained on.

    python -m benchmarks.bench_reading [--layers 12,17,20,23,27,29] [--methods lda,pooled]
                                       [--sets corpus/heldout,corpus/heldout_forms] [--json out/bench_reading.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from amygdala_tl import hooks
from amygdala_tl.capture import encode, make_batches, pool, read_batch
from amygdala_tl.corpus import load_heldout
from amygdala_tl.directions.registry import METHODS, MethodInputs, fit_layer
from amygdala_tl.pipelines.devset import dev_labels
from amygdala_tl.quality.evaluation import evaluate_served, rank_metrics, zscore

from .start import bench_start

TRAINED = ("last", "mean", "second_half")
SPANS = ("mean", "tail16", "tail32", "tail64", "tail128", "ema16", "ema32", "ema64", "last")


def pooled_every_way(model, texts: list[str], layers: list[int], poolings: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """{pooling: [n_layers, n_texts, d_model]} from one forward pass per batch."""
    token_ids, _ = encode(model.tokenizer, texts, max_length)
    out = {p: torch.zeros(len(layers), len(texts), model.facts.d_model) for p in poolings}
    names = [hooks.resid_post(layer) for layer in layers]
    batches = make_batches(token_ids, 8, model.tokenizer.pad_token_id)
    started = time.perf_counter()
    for done, batch in enumerate(batches, 1):
        acts = read_batch(model, batch, names)
        for p in poolings:
            for slot, name in enumerate(names):
                out[p][slot, batch.indices] = pool(acts[name], batch.attention_mask, p).cpu()
        if done % 10 == 0 or done == len(batches):
            print(f"  {done}/{len(batches)} batches, {time.perf_counter() - started:.0f} s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="corpus")
    parser.add_argument("--layers", default="12,17,20,23,27,29")
    parser.add_argument("--methods", default="lda,pooled")
    parser.add_argument("--sets", default="corpus/heldout,corpus/heldout_forms")
    parser.add_argument("--json", default="out/bench_reading.json")
    args = parser.parse_args()

    start = bench_start(args.corpus, args.layers)
    default, corpus, concepts, model, layers = start.default, start.corpus, start.concepts, start.model, start.layers
    sets = {Path(path).name: load_heldout(path) for path in args.sets.split(",")}
    poolings = sorted({*TRAINED, *SPANS})
    print(f"{len(corpus.texts)} training texts, development sets {', '.join(f'{k} ({len(v)})' for k, v in sets.items())}, layers {layers}")
    train = pooled_every_way(model, corpus.texts, layers, poolings, default.max_length)
    dev = {name: pooled_every_way(model, [s.text for s in stories], layers, poolings, default.max_length) for name, stories in sets.items()}
    labels = {name: dev_labels(stories, concepts) for name, stories in sets.items()}

    membership, inputs = corpus.membership(concepts), MethodInputs(corpus.baseline_partner(), neutral=corpus.neutral_mask())
    rows = []
    cells = [(t, r) for t in TRAINED for r in TRAINED] + [(s, s) for s in SPANS if s not in TRAINED] + [("mean", s) for s in SPANS]
    for method in args.methods.split(","):
        for trained in dict.fromkeys(t for t, _ in cells):
            directions = [fit_layer(METHODS[method], train[trained][slot], membership, inputs).half().float() for slot in range(len(layers))]
            for read in dict.fromkeys(r for t, r in cells if t == trained):
                for name in sets:
                    for slot, layer in enumerate(layers):
                        hidden = dev[name][read][slot]
                        row = {"method": method, "trained": trained, "read": read, "set": name, "layer": layer}
                        if trained == read:
                            figures = evaluate_served(hidden, directions[slot], labels[name], concepts)
                            row |= {
                                "auroc": figures.mean_auroc,
                                "top1": figures.top1,
                                "auroc_ci": figures.auroc_interval,
                                "top1_ci": figures.top1_interval,
                            }
                        else:
                            result = rank_metrics(zscore(hidden @ directions[slot].T), labels[name], concepts)
                            row |= {"auroc": result.mean_auroc, "top1": result.top1}
                        rows.append(row)
    print(f"\n{'method':7s} {'trained':12s} {'read':12s} {'set':14s} " + " ".join(f"{'L' + str(layer):>18s}" for layer in layers))
    for key in dict.fromkeys((r["method"], r["trained"], r["read"], r["set"]) for r in rows):
        line = [r for r in rows if (r["method"], r["trained"], r["read"], r["set"]) == key]
        print(f"{key[0]:7s} {key[1]:12s} {key[2]:12s} {key[3]:14s} " + " ".join(f"{r['auroc']:8.3f} / {r['top1']:5.2f}  " for r in line))
    matched = [r for r in rows if r["trained"] == r["read"]]
    print("\nmatched cells (trained = read), 90% bootstrap intervals over the set's texts:")
    for r in matched:
        print(
            f"{r['method']:7s} {r['read']:12s} {r['set']:14s} L{r['layer']:<3d} AUROC {r['auroc']:.3f} "
            f"[{r['auroc_ci'][0]:.3f}, {r['auroc_ci'][1]:.3f}]  top-1 {r['top1']:.3f} [{r['top1_ci'][0]:.3f}, {r['top1_ci'][1]:.3f}]"
        )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"layers": layers, "rows": rows}, indent=1))
    print(f"\nwritten {args.json}")


if __name__ == "__main__":
    main()
