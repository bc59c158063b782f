"""`compare-methods`: every direction method under every pooling, one held-out table.

A pooling is also the reading (capture/pooling.py), so each row is learned with its pooling and read
the same way on the development set: the rows show which pooling reads new text best, with intervals."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import torch

from .. import atomic
from ..capture import Activations, check_pooling
from ..capture.pooling import COMPARED_POOLINGS
from ..directions.registry import METHODS, Method, get_method
from ..errors import UserError
from ..model import LoadedModel
from ..quality.heldout import DevLayer, Heldout, cv_evaluation, development_set_evaluation
from ..quality.report import DevSet
from .setup import ExtractConfig, Learned, Log, Prepared, capture_and_learn, capture_dev_set, cv_grouping, open_store, prepare, remember_model

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
        "CV AUROC / top-1",
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

    def summary(self) -> str:
        return (
            f"{self.method} ({self.pooling}): best layer {self.best_layer}, AUROC {self.auroc:.3f}, top-1 {self.top1:.3f} "
            f"({self.protocol}; cross-validation {self.cv_auroc:.3f} / {self.cv_top1:.3f})"
        )


def compare_methods(
    config: ExtractConfig,
    methods: list[str],
    poolings: Sequence[str] = COMPARED_POOLINGS,
    log: Log = lambda _: None,
    on_progress=None,
    loader: Callable[..., LoadedModel] | None = None,
) -> list[CompareRow]:
    """Every method under every pooling: each learns every layer and is scored on the held-out protocols,
    reading texts the way its pooling declares. One capture per pooling (the activation store keeps it).
    `config.params` go to every compared method that has a parameter of that name."""
    if not methods:
        raise UserError(f"--methods is empty: name one or more of {', '.join(METHODS)}")
    if not poolings:
        raise UserError("--poolings is empty: name one or more of mean, last, second_half, tail<N>, ema<N>")
    chosen = bind_each([get_method(name) for name in methods], config.params)
    poolings = [check_pooling(pooling, "--poolings") for pooling in poolings]
    prepared = prepare(replace(config, params={}), log, loader, evaluate=True)  # the params are the compared methods'
    rows = []
    for pooling in poolings:
        log(f"pooling {pooling}: learned and read over {'the text' if pooling == 'mean' else pooling}")
        rows += compare_pooling(replace(config, pooling=pooling), prepared, chosen, log, on_progress)
    atomic.write_json(
        Path(config.output_dir) / COMPARE_FILE,
        {"layers": prepared.layers, "n_concepts": len(prepared.concepts), "methods": [row.to_json() for row in rows]},
    )
    return rows


def bind_each(methods: list[Method], params: Mapping[str, object]) -> list[Method]:
    """Each method with the parameters it has; a parameter none of them has is an error (before the model loads)."""
    names = [{param.name for param in method.params} for method in methods]
    for name in params:
        if not any(name in own for own in names):
            raise UserError(f"unknown --param {name!r}: none of the compared methods ({', '.join(m.name for m in methods)}) takes it")
    return [method.bind({name: value for name, value in params.items() if name in own}) for method, own in zip(methods, names)]


def compare_pooling(config: ExtractConfig, prepared: Prepared, chosen: list[Method], log: Log, on_progress) -> list[CompareRow]:
    store = open_store(config, prepared.model.identity)
    remember_model(store, prepared.model)
    captured = capture_and_learn(prepared, config, chosen, store, on_progress=on_progress)
    dev = capture_dev_set(prepared, config, store)
    rows = []
    for learned in captured.learned:
        rows.append(compare_row(prepared, config.pooling, captured.acts, learned, dev))
        log(rows[-1].summary())
    return rows


def compare_row(prepared: Prepared, pooling: str, acts: Activations, learned: Learned, dev: DevSet | None) -> CompareRow:
    """One method's held-out figures: the development set when there is one (read as served), and grouped cross-validation."""
    started = time.perf_counter()
    corpus, concepts, layers, n_layers = prepared.corpus, prepared.concepts, prepared.layers, prepared.model.facts.n_layers
    served_directions = torch.stack([row.half().float() for row in learned.directions])
    groups, not_by_writer = cv_grouping(corpus, concepts)
    cv = cv_evaluation(acts.resid, layers, corpus.membership(concepts), concepts, groups, n_layers, learned.refit(layers), not_by_writer is None)
    dev_block = development_set_evaluation(dev.acts, layers, served_directions, dev.labels, concepts, n_layers) if dev else None
    heldout = Heldout(cv, dev_block)
    best_layer = heldout.best_layer
    best, best_cv = heldout.layers[best_layer], cv.layers[best_layer]
    interval = best.figures if isinstance(best, DevLayer) else None
    per_layer = {
        str(layer): {"auroc": block.mean_auroc, "top1": block.top1, "cv_auroc": cv.layers[layer].mean_auroc, "cv_top1": cv.layers[layer].top1}
        for layer, block in heldout.layers.items()
    }
    return CompareRow(
        learned.method.name,
        pooling,
        best_layer,
        best.mean_auroc,
        best.top1,
        best.random_auroc,
        best.random_top1,
        heldout.protocol,
        best_cv.mean_auroc,
        best_cv.top1,
        learned.fit_s,
        round(time.perf_counter() - started, 3),
        per_layer,
        interval.auroc_interval if interval else None,
        interval.top1_interval if interval else None,
    )
