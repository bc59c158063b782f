"""`compare-methods`: one capture, every direction method, one held-out table."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from .. import atomic
from ..capture import capture
from ..directions.registry import METHODS, MethodContext, get_method, heldout_fit, learn
from ..directions.subspace import SubspaceCollector
from ..errors import UserError
from ..model import LoadedModel
from ..quality.heldout import cv_evaluation, development_set_evaluation, leading_heldout
from .extract import ExtractConfig, Log, capture_dev_set, open_store, prepare, remember_model

COMPARE_FILE = "compare.json"


@dataclass
class CompareRow:
    """One method's held-out figures at its best layer (compare.json's `methods` entries): the development
    test set when the corpus has one, else grouped cross-validation, read as the server reads."""

    method: str
    best_layer: int
    auroc: float
    top1: float
    random_auroc: float
    random_top1: float
    protocol: str
    cv_auroc: float
    cv_top1: float
    fit_s: float
    heldout_s: float
    per_layer: dict[str, dict[str, float]] = field(default_factory=dict)

    COLUMNS: ClassVar[list[str]] = [
        "method",
        "best layer",
        "AUROC",
        "top-1",
        "random AUROC / top-1",
        "grouped CV AUROC / top-1",
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
            f"{self.random_auroc:.2f} / {self.random_top1:.3f}",
            f"{self.cv_auroc:.3f} / {self.cv_top1:.3f}",
            f"{self.fit_s:.2f}",
            f"{self.heldout_s:.1f}",
            self.protocol,
        ]


def compare_methods(
    config: ExtractConfig, methods: list[str], log: Log = lambda _: None, on_progress=None, loader: Callable[..., LoadedModel] | None = None
) -> list[CompareRow]:
    """One capture, every method: each learns every layer and is scored on the held-out protocols."""
    if not methods:
        raise UserError(f"--methods is empty: name one or more of {', '.join(METHODS)}")
    chosen = [get_method(name) for name in methods]
    prepared = prepare(config, log, loader, evaluate=True)
    corpus, concepts, model, layers = prepared.corpus, prepared.concepts, prepared.model, prepared.layers
    collector = SubspaceCollector(layers, len(corpus.stories), config.subspace_k) if any(m.needs_tokens for m in chosen) else None
    store = open_store(config, model.identity)
    remember_model(store, model)
    acts = capture(
        model,
        corpus.texts,
        layers,
        pooling=config.pooling,
        batch_size=config.batch_size,
        max_length=config.max_length,
        token_sink=collector,
        store=store,
        on_progress=on_progress,
    )
    dev = capture_dev_set(prepared, config, store)
    membership, groups, n_layers = corpus.membership(concepts), corpus.groups(), model.facts.n_layers
    rows = []
    for method in chosen:
        started = time.perf_counter()
        context = MethodContext(
            method, corpus.baseline_partner(), collector, config.subspace_eigen_k, config.l1_c, corpus.neutral_mask(), config.denoise_k
        )
        directions, _ = learn(context, acts, membership)  # timed: the cost of fitting every layer once
        learned = time.perf_counter()
        served_directions = torch.stack([row.half().float() for row in directions])
        cv = cv_evaluation(acts.resid, layers, membership, concepts, groups, n_layers, None if method.exact_loo else heldout_fit(context, layers))
        dev_block = development_set_evaluation(dev.acts, layers, served_directions, dev.labels, concepts, n_layers) if dev else None
        heldout = leading_heldout(None, cv, dev_block)
        best_layer = str(heldout["best_layer"])
        best, best_cv = heldout["layers"][best_layer], cv["layers"][best_layer]
        rows.append(
            CompareRow(
                method.name,
                heldout["best_layer"],
                best["mean_auroc"],
                best["top1"],
                best["random_auroc"],
                best["random_top1"],
                heldout["protocol"],
                best_cv["mean_auroc"],
                best_cv["top1"],
                round(learned - started, 3),
                round(time.perf_counter() - learned, 3),
                {
                    layer: {
                        "auroc": block["mean_auroc"],
                        "top1": block["top1"],
                        "cv_auroc": cv["layers"][layer]["mean_auroc"],
                        "cv_top1": cv["layers"][layer]["top1"],
                    }
                    for layer, block in heldout["layers"].items()
                },
            )
        )
        log(
            f"{method.name}: best layer {best_layer}, AUROC {best['mean_auroc']:.3f}, top-1 {best['top1']:.3f} ({heldout['protocol']}; "
            f"grouped CV {best_cv['mean_auroc']:.3f} / {best_cv['top1']:.3f})"
        )
    atomic.write_json(
        Path(config.output_dir) / COMPARE_FILE, {"layers": layers, "n_concepts": len(concepts), "methods": [row.to_json() for row in rows]}
    )
    return rows
