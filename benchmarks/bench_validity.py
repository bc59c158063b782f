"""Which directions read new text? method x training positions x denoising x layer, on the development test set.

Every configuration learns from the shipped corpus and is scored exactly as `amygdala-tl evaluate`
scores an export: the exported fp16 rows, the raw dot product with each development-set text's
residual pooled as the configuration declares (its training pooling is its reading), each concept's
scores z-scored over the set, mean one-vs-rest AUROC and 60-way top-1, beside random unit directions. The development set (corpus/heldout) is never trained on.
Prints one row per configuration (best first), the best configuration, and the default's.

    python -m benchmarks.bench_validity [--layers 12,14,17,20,23] [--methods pooled,lda,logistic]
                                        [--poolings mean,last,second_half] [--denoise 0,8] [--cache out/cache]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from amygdala_tl.capture import ActivationStore, capture
from amygdala_tl.corpus import load_heldout
from amygdala_tl.directions.registry import METHODS, MethodInputs, fit_layer
from amygdala_tl.pipelines.devset import dev_set
from amygdala_tl.quality.evaluation import evaluate_served

from .start import bench_start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="corpus")
    parser.add_argument("--layers", default=None, help="default: the extract defaults (40-80%% depth)")
    parser.add_argument("--methods", default="pooled,lda,mean,logistic")
    parser.add_argument("--poolings", default="mean,last,second_half")
    parser.add_argument("--denoise", default="0,8")
    parser.add_argument("--cache", default="out/cache", help="activation store shared with `make demo` (re-runs cost no forward pass)")
    args = parser.parse_args()

    start = bench_start(args.corpus, args.layers)
    default, corpus, concepts, model, layers = start.default, start.corpus, start.concepts, start.model, start.layers
    stores = {pooling: ActivationStore(args.cache, model.identity, pooling, default.max_length) for pooling in args.poolings.split(",")}
    started = time.perf_counter()
    train = {pooling: capture(model, corpus.texts, layers, pooling=pooling, store=store) for pooling, store in stores.items()}
    heldout = Path(args.corpus) / "heldout"
    dev = {
        pooling: dev_set(
            load_heldout(heldout), heldout, concepts, lambda texts, p=pooling: capture(model, texts, layers, pooling=p, store=stores[p]).resid
        )
        for pooling in stores
    }
    print(
        f"captured {len(corpus.texts)} training texts x {len(stores)} poolings and {len(load_heldout(heldout))} development texts "
        f"in {time.perf_counter() - started:.0f} s; layers {layers}"
    )

    membership, partner, neutral = corpus.membership(concepts), corpus.baseline_partner(), corpus.neutral_mask()
    rows = []
    for method in args.methods.split(","):
        for pooling, acts in train.items():
            for k in (int(value) for value in args.denoise.split(",")):
                for slot, layer in enumerate(layers):
                    fit_started = time.perf_counter()
                    inputs = MethodInputs(partner, neutral=neutral, denoise_k=k)
                    directions = fit_layer(METHODS[method], acts.resid[slot], membership, inputs)
                    fit_s = time.perf_counter() - fit_started
                    figures = evaluate_served(dev[pooling].acts[slot], directions.half().float(), dev[pooling].labels, concepts)
                    rows.append((method, pooling, k, layer, figures.mean_auroc, figures.top1, figures.random_auroc, figures.random_top1, fit_s))
    rows.sort(key=lambda row: -row[4])
    print(f"{'method':12s} {'positions':12s} {'denoise':>7s} {'layer':>5s} {'AUROC':>6s} {'top-1':>6s} {'random':>13s} {'fit s':>6s}")
    for method, pooling, k, layer, auroc, top1, random_auroc, random_top1, fit_s in rows:
        print(f"{method:12s} {pooling:12s} {k:7d} {layer:5d} {auroc:6.3f} {top1:6.3f} {random_auroc:6.3f}/{random_top1:6.3f} {fit_s:6.2f}")
    best = rows[0]
    print(f"best: {best[0]}, positions {best[1]}, denoise {best[2]}, layer {best[3]}: AUROC {best[4]:.3f}, top-1 {best[5]:.3f}")
    ours = [row for row in rows if (row[0], row[1], row[2]) == (default.method, default.pooling, default.denoise_k)]
    if ours:
        top = max(ours, key=lambda row: row[4])
        print(
            f"default ({default.method}, positions {default.pooling}, denoise {default.denoise_k}): best layer {top[3]}, "
            f"AUROC {top[4]:.3f}, top-1 {top[5]:.3f}"
        )


if __name__ == "__main__":
    main()
