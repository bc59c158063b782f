"""`compare-methods`: one capture, every direction method, one held-out table."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from . import atomic
from .capture import capture
from .directions.methods import METHODS, MethodContext, heldout_fit, learn
from .directions.subspace import SubspaceCollector
from .errors import UserError
from .extract import ExtractConfig, open_store, prepare
from .model import LoadedModel
from .quality.heldout import heldout_evaluation

COMPARE_FILE = "compare.json"


def compare_methods(config: ExtractConfig, methods: list[str], log: Callable[[str], None] = lambda _: None,
                    on_progress=None, loader: Callable[..., LoadedModel] | None = None) -> list[dict]:
    if unknown := [m for m in methods if m not in METHODS]:
        raise UserError(f"unknown method {unknown[0]!r}: choose from {', '.join(METHODS)}")
    corpus, concepts, model, layers = prepare(config, log, loader)
    collector = SubspaceCollector(layers, len(corpus.stories), config.subspace_k) if "subspace" in methods else None
    acts = capture(model, corpus.texts, layers, pooling=config.pooling, batch_size=config.batch_size, max_length=config.max_length,
                   token_sink=collector, store=open_store(config, model.identity), on_progress=on_progress)
    membership = corpus.membership(concepts)
    rows = []
    for method in methods:
        started = time.perf_counter()
        context = MethodContext(method, corpus.baseline_partner(), collector, config.subspace_eigen_k, config.l1_c)
        learn(context, acts, membership)  # timed: the cost of fitting every layer once
        learned = time.perf_counter()
        heldout = heldout_evaluation(acts.resid, layers, membership, concepts, model.facts.n_layers, heldout_fit(context, layers))
        best = heldout["layers"][str(heldout["best_layer"])]
        rows.append({"method": method, "best_layer": heldout["best_layer"], "auroc": best["mean_auroc"], "top1": best["top1"],
                     "random_auroc": best["random_auroc"], "random_top1": best["random_top1"], "protocol": heldout["protocol"],
                     "auroc_centered": best["mean_auroc_centered"], "top1_centered": best["top1_centered"],
                     "fit_s": round(learned - started, 3), "heldout_s": round(time.perf_counter() - learned, 3),
                     "per_layer": {layer: {key: block[key] for key in ("mean_auroc", "top1", "mean_auroc_centered", "top1_centered")}
                                   for layer, block in heldout["layers"].items()}})
        log(f"{method}: best layer {heldout['best_layer']}, AUROC {best['mean_auroc']:.3f}, top-1 {best['top1']:.3f} "
            f"(centred {best['mean_auroc_centered']:.3f} / {best['top1_centered']:.3f})")
    atomic.write_json(Path(config.output_dir) / COMPARE_FILE, {"layers": layers, "n_concepts": len(concepts), "methods": rows})
    return rows
