"""Does more training text still help? The learning curve on both development sets, per form.

Trains the default method on seeded 25 / 50 / 100 % subsets of each concept's unpaired texts (every
paired scenario kept, so the baselines and framings stay), at the given layers, and reads the prose
development set (corpus/heldout) and the forms set (corpus/heldout_forms) exactly as `evaluate` reads an
export under the default declared reading, with 90% bootstrap intervals. Activations come from the
activation store `make demo` fills (only texts it has not seen cost a forward pass). Prints the table
and writes a plot.

    python -m benchmarks.bench_learning_curve [--layers 15,16,21] [--seeds 3] [--fractions 0.25,0.5,1] [--plot docs/learning_curve.png]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
import torch

from amygdala_tl.capture import ActivationStore, capture
from amygdala_tl.corpus import load_heldout
from amygdala_tl.directions.registry import METHODS, MethodInputs, fit_layer
from amygdala_tl.pipelines.devset import dev_labels
from amygdala_tl.quality.evaluation import evaluate_served

from .start import bench_start

FRACTIONS = (0.25, 0.5, 1.0)


def subset(corpus, concepts: list[str], fraction: float, seed: int) -> torch.Tensor:
    """Kept text mask: every paired text and baseline, and `fraction` of each concept's unpaired texts (at least one)."""
    keep = torch.ones(len(corpus.stories), dtype=torch.bool)
    rng = random.Random(seed)
    for concept in concepts:
        unpaired = [i for i, s in enumerate(corpus.stories) if s.label == concept and s.scenario is None]
        drop = rng.sample(unpaired, len(unpaired) - max(1, round(fraction * len(unpaired))))
        keep[drop] = False
    return keep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="corpus")
    parser.add_argument("--layers", default="15,16,21")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--fractions", default=",".join(map(str, FRACTIONS)), help="1 alone, with every layer in --layers: the all-layer table of both sets"
    )
    parser.add_argument("--cache", default="out/cache")
    parser.add_argument("--plot", default="docs/learning_curve.png")
    args = parser.parse_args()

    start = bench_start(args.corpus, args.layers)
    config, corpus, concepts, model, layers = start.default, start.corpus, start.concepts, start.model, start.layers
    store = ActivationStore(Path(args.cache), model.identity, config.pooling, config.max_length, config.dtype)
    read = lambda texts: capture(model, texts, layers, pooling=config.pooling, store=store).resid  # noqa: E731
    train = read(corpus.texts)
    sets = {}
    for name in ("heldout", "heldout_forms"):
        stories = load_heldout(Path(args.corpus) / name)
        sets[name] = (read([s.text for s in stories]), dev_labels(stories, concepts))
    membership = corpus.membership(concepts)
    method = METHODS[config.method]
    rows = []
    fractions = [float(f) for f in args.fractions.split(",")]
    for fraction in fractions:
        for seed in range(args.seeds if fraction < 1 else 1):
            keep = subset(corpus, concepts, fraction, seed)
            inputs = MethodInputs(corpus.baseline_partner(), neutral=corpus.neutral_mask()).subset(keep.nonzero().flatten())
            positives = float(membership[:, keep].sum(1).float().mean())
            for slot, layer in enumerate(layers):
                rows_served = fit_layer(method, train[slot][keep], membership[:, keep], inputs).half().float()
                for name, (acts, labels) in sets.items():
                    figures = evaluate_served(acts[slot], rows_served, labels, concepts)
                    rows.append((fraction, seed, positives, layer, name, figures))
    print(f"{config.method}, reading {config.pooling}, layers {layers}; mean over seeds, 90% bootstrap interval of seed 0")
    print(f"{'fraction':>8s} {'pos/concept':>11s} {'layer':>5s} {'set':14s} {'AUROC':>22s} {'top-1':>22s}")
    curve: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    for fraction in fractions:
        for layer in layers:
            for name in sets:
                cell = [r for r in rows if r[0] == fraction and r[3] == layer and r[4] == name]
                auroc = float(np.mean([r[5].mean_auroc for r in cell]))
                top1 = float(np.mean([r[5].top1 for r in cell]))
                first = cell[0][5]
                positives = float(np.mean([r[2] for r in cell]))
                curve.setdefault((name, layer), []).append((positives, auroc, top1))
                print(
                    f"{fraction:8.2f} {positives:11.1f} {layer:5d} {name:14s} {auroc:7.3f} [{first.auroc_interval[0]:.3f}, {first.auroc_interval[1]:.3f}]"
                    f" {top1:7.3f} [{first.top1_interval[0]:.3f}, {first.top1_interval[1]:.3f}]"
                )
    plot(curve, Path(args.plot))
    print(f"wrote {args.plot}")


def plot(curve: dict[tuple[str, int], list[tuple[float, float, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for (name, layer), points in sorted(curve.items()):
        x = [p[0] for p in points]
        style = "-" if name == "heldout" else "--"
        axes[0].plot(x, [p[1] for p in points], style, marker="o", label=f"{name} L{layer}")
        axes[1].plot(x, [p[2] for p in points], style, marker="o", label=f"{name} L{layer}")
    for ax, title in zip(axes, ("mean AUROC", "60-way top-1")):
        ax.set_xlabel("training positives per concept")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
