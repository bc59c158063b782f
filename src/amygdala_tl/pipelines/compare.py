"""`compare-methods`: one capture, every direction method, one held-out table."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

from .. import atomic
from ..capture import capture
from ..directions.registry import MethodContext, get_method, heldout_fit, learn
from ..directions.subspace import SubspaceCollector
from ..model import LoadedModel
from ..quality.heldout import heldout_evaluation
from .extract import ExtractConfig, Log, open_store, prepare

COMPARE_FILE = "compare.json"


@dataclass
class CompareRow:
    """One method's held-out figures at its best layer (compare.json's `methods` entries)."""

    method: str
    best_layer: int
    auroc: float
    top1: float
    random_auroc: float
    random_top1: float
    protocol: str
    auroc_centered: float
    top1_centered: float
    fit_s: float
    heldout_s: float
    per_layer: dict[str, dict[str, float]] = field(default_factory=dict)

    COLUMNS: ClassVar[list[str]] = [
        "method",
        "best layer",
        "AUROC",
        "top-1",
        "centred AUROC / top-1",
        "random AUROC / top-1",
        "fit s",
        "held-out s",
        "protocol",
    ]

    def to_json(self) -> dict:
        return asdict(self)

    def cells(self) -> list[str]:
        return [
            self.method,
            str(self.best_layer),
            f"{self.auroc:.3f}",
            f"{self.top1:.3f}",
            f"{self.auroc_centered:.3f} / {self.top1_centered:.3f}",
            f"{self.random_auroc:.2f} / {self.random_top1:.3f}",
            f"{self.fit_s:.2f}",
            f"{self.heldout_s:.1f}",
            self.protocol,
        ]


def compare_methods(
    config: ExtractConfig, methods: list[str], log: Log = lambda _: None, on_progress=None, loader: Callable[..., LoadedModel] | None = None
) -> list[CompareRow]:
    chosen = [get_method(name) for name in methods]
    prepared = prepare(config, log, loader)
    corpus, concepts, model, layers = prepared.corpus, prepared.concepts, prepared.model, prepared.layers
    collector = SubspaceCollector(layers, len(corpus.stories), config.subspace_k) if any(m.needs_tokens for m in chosen) else None
    acts = capture(
        model,
        corpus.texts,
        layers,
        pooling=config.pooling,
        batch_size=config.batch_size,
        max_length=config.max_length,
        token_sink=collector,
        store=open_store(config, model.identity),
        on_progress=on_progress,
    )
    membership = corpus.membership(concepts)
    rows = []
    for method in chosen:
        started = time.perf_counter()
        context = MethodContext(method, corpus.baseline_partner(), collector, config.subspace_eigen_k, config.l1_c)
        learn(context, acts, membership)  # timed: the cost of fitting every layer once
        learned = time.perf_counter()
        heldout = heldout_evaluation(
            acts.resid, layers, membership, concepts, model.facts.n_layers, None if method.exact_loo else heldout_fit(context, layers)
        )
        best = heldout["layers"][str(heldout["best_layer"])]
        rows.append(
            CompareRow(
                method.name,
                heldout["best_layer"],
                best["mean_auroc"],
                best["top1"],
                best["random_auroc"],
                best["random_top1"],
                heldout["protocol"],
                best["mean_auroc_centered"],
                best["top1_centered"],
                round(learned - started, 3),
                round(time.perf_counter() - learned, 3),
                {
                    layer: {key: block[key] for key in ("mean_auroc", "top1", "mean_auroc_centered", "top1_centered")}
                    for layer, block in heldout["layers"].items()
                },
            )
        )
        log(
            f"{method.name}: best layer {heldout['best_layer']}, AUROC {best['mean_auroc']:.3f}, top-1 {best['top1']:.3f} "
            f"(centred {best['mean_auroc_centered']:.3f} / {best['top1_centered']:.3f})"
        )
    atomic.write_json(
        Path(config.output_dir) / COMPARE_FILE, {"layers": layers, "n_concepts": len(concepts), "methods": [row.to_json() for row in rows]}
    )
    return rows
