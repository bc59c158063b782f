"""`compare-methods`: every direction method under every pooling, one held-out table.

A pooling is also the reading (capture/pooling.py), so each row is learned with its pooling and read
the same way on the development set: the rows show which pooling reads new text best, with intervals."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import torch

from .. import atomic
from ..capture import capture, check_pooling
from ..capture.pooling import COMPARED_POOLINGS
from ..directions.registry import METHODS, Method, MethodContext, get_method, heldout_fit, learn
from ..directions.subspace import SubspaceCollector
from ..errors import UserError
from ..model import LoadedModel
from ..quality.heldout import DevLayer, Heldout, cv_evaluation, development_set_evaluation
from .extract import ExtractConfig, Log, Prepared, capture_dev_set, open_store, prepare, remember_model

COMPARE_FILE = "compare.json"


@dataclass
class CompareRow:
    """One method and pooling's held-out figures at its best layer (compare.json's `methods` entries): the
    development test set when the corpus has one (with its 90% bootstrap interval), else grouped
    cross-validation, read the way the pooling declares."""

    method: str
    pooling: str
    best_layer: int
    auroc: float | None
    top1: float | None
    random_auroc: float | None
    random_top1: float | None
    protocol: str
    cv_auroc: float | None
    cv_top1: float | None
    fit_s: float
    heldout_s: float
    per_layer: dict[str, dict[str, float | None]] = field(default_factory=dict)
    auroc_interval: list[float] | None = None
    top1_interval: list[float] | None = None

    COLUMNS: ClassVar[list[str]] = [
        "method",
        "pooling = reading",
        "best layer",
        "AUROC [90%]",
        "top-1 [90%]",
        "random AUROC / top-1",
        "grouped CV AUROC / top-1",
        "fit s",
        "held-out s",
        "protocol",
    ]

    def to_json(self) -> dict:
        return asdict(self)

    def cells(self) -> list[str]:
        interval = lambda bounds: f" [{bounds[0]:.3f}, {bounds[1]:.3f}]" if bounds else ""
        return [
            self.method,
            self.pooling,
            str(self.best_layer),
            f"{self.auroc:.3f}" + interval(self.auroc_interval),
            f"{self.top1:.3f}" + interval(self.top1_interval),
            f"{self.random_auroc:.2f} / {self.random_top1:.3f}",
            f"{self.cv_auroc:.3f} / {self.cv_top1:.3f}",
            f"{self.fit_s:.2f}",
            f"{self.heldout_s:.1f}",
            self.protocol,
        ]


def compare_methods(
    config: ExtractConfig,
    methods: list[str],
    poolings: Sequence[str] = COMPARED_POOLINGS,
    log: Log = lambda _: None,
    on_progress=None,
    loader: Callable[..., LoadedModel] | None = None,
) -> list[CompareRow]:
    """Every method under every pooling: each learns every layer and is scored on the held-out protocols,
    reading texts the way its pooling declares. One capture per pooling (the activation store keeps it)."""
    if not methods:
        raise UserError(f"--methods is empty: name one or more of {', '.join(METHODS)}")
    if not poolings:
        raise UserError("--poolings is empty: name one or more of mean, last, second_half, tail<N>, ema<N>")
    chosen = [get_method(name) for name in methods]
    poolings = [check_pooling(pooling, "--poolings") for pooling in poolings]
    prepared = prepare(config, log, loader, evaluate=True)
    rows = []
    for pooling in poolings:
        log(f"pooling {pooling}: learned and read over {'the text' if pooling == 'mean' else pooling}")
        rows += compare_pooling(replace(config, pooling=pooling), prepared, chosen, log, on_progress)
    atomic.write_json(
        Path(config.output_dir) / COMPARE_FILE,
        {"layers": prepared.layers, "n_concepts": len(prepared.concepts), "methods": [row.to_json() for row in rows]},
    )
    return rows


def compare_pooling(config: ExtractConfig, prepared: Prepared, chosen: list[Method], log: Log, on_progress) -> list[CompareRow]:
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
        heldout = Heldout(cv, dev_block)
        best_layer = heldout.best_layer
        best, best_cv = heldout.layers[best_layer], cv.layers[best_layer]
        interval = best.figures if isinstance(best, DevLayer) else None
        rows.append(
            CompareRow(
                method.name,
                config.pooling,
                best_layer,
                best.mean_auroc,
                best.top1,
                best.random_auroc,
                best.random_top1,
                heldout.protocol,
                best_cv.mean_auroc,
                best_cv.top1,
                round(learned - started, 3),
                round(time.perf_counter() - learned, 3),
                {
                    str(layer): {
                        "auroc": block.mean_auroc,
                        "top1": block.top1,
                        "cv_auroc": cv.layers[layer].mean_auroc,
                        "cv_top1": cv.layers[layer].top1,
                    }
                    for layer, block in heldout.layers.items()
                },
                interval.auroc_interval if interval else None,
                interval.top1_interval if interval else None,
            )
        )
        log(
            f"{method.name} ({config.pooling}): best layer {best_layer}, AUROC {best.mean_auroc:.3f}, top-1 {best.top1:.3f} "
            f"({heldout.protocol}; grouped CV {best_cv.mean_auroc:.3f} / {best_cv.top1:.3f})"
        )
    return rows
