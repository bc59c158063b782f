"""`evaluate`: the exported vectors on a development test set, read exactly as the server reads them.

Only the exported files are read (fp16 rows, the layers they hold); each evaluation text is run
through the model once (the activation store keeps it) and read the way the export declares
(the pooling the vectors were learned with: the mean of the per-token served scores by default).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..capture import ActivationStore, capture
from ..corpus import DEFAULT_HELDOUT, NEUTRAL, load_heldout
from ..errors import UserError
from ..layers import describe_layer
from ..model import LoadedModel, load_model
from ..quality.calibration import read_calibration
from ..quality.evaluation import ServedEvaluation, evaluate_combined, evaluate_served
from ..quality.heldout import CombinedReading
from .devset import dev_labels
from .vectors import load_model_for, open_vectors


@dataclass
class Evaluation:
    """Per exported layer, the served-view figures on one evaluation set (evaluate --json)."""

    heldout: str
    n_texts: int
    n_neutral: int
    concepts_covered: list[str]
    concepts_exported: int
    layers: dict[int, ServedEvaluation] = field(default_factory=dict)
    skipped_concepts: list[str] = field(default_factory=list)  # in the set but not exported: read as neutral texts
    combined: CombinedReading | None = None  # --layers-combined K: the mean-of-z reading over the K best exported layers

    @property
    def best_layer(self) -> int:
        return max(self.layers, key=lambda layer: self.layers[layer].mean_auroc or 0.0)

    def to_json(self) -> dict:
        return {
            "heldout": self.heldout,
            "n_texts": self.n_texts,
            "n_neutral": self.n_neutral,
            "concepts_covered": self.concepts_covered,
            "concepts_exported": self.concepts_exported,
            "skipped_concepts": self.skipped_concepts,
            "best_layer": self.best_layer,
            "layers": {str(layer): result.to_json() for layer, result in self.layers.items()},
            "combined": self.combined.to_json() if self.combined is not None else None,
        }

    def title(self) -> str:
        return (
            f"{self.heldout}: {self.n_texts} texts ({self.n_neutral} neutral), "
            f"{len(self.concepts_covered)} of {self.concepts_exported} exported concepts"
        )

    def rows(self, n_layers: int | None = None) -> list[list[str]]:
        describe = (lambda layer: describe_layer(layer, n_layers)) if n_layers else (lambda layer: f"layer {layer}")
        readings = list(self.layers.items())
        if self.combined is not None:
            readings.append((-1, self.combined.figures))
        return [
            [
                (describe(layer) if layer >= 0 else f"mean of z, layers {','.join(map(str, self.combined.layers))}")  # type: ignore[union-attr]
                + (" *" if layer == self.best_layer else ""),
                f"{r.mean_auroc:.3f}",
                f"{r.top1:.3f}",
                f"{r.random_auroc:.2f} / {r.random_top1:.3f}",
                ", ".join(f"{c['concept']}->{c['read_as']} {c['count']}" for c in r.confusions[:3]),
            ]
            for layer, r in readings
        ]


COLUMNS = ["layer", "AUROC", "top-1", "random AUROC / top-1", "most confused (concept->read as)"]


@dataclass(kw_only=True)
class EvaluateConfig:
    """`evaluate`'s options and their defaults (the command line builds one by keyword)."""

    vectors: Path = Path("out")
    heldout: Path = DEFAULT_HELDOUT  # <concept>/*.txt and _neutral/*.txt, never trained on
    model: str | None = None
    device: str | None = None
    trust_remote_code: bool = False
    batch_size: int = 8
    layers_combined: int | None = None  # also the mean of z over the K best exported layers (calibration.json's layers_ranked)


def evaluate_vectors(
    config: EvaluateConfig, *, log: Callable[[str], None] = lambda _: None, loader: Callable[..., LoadedModel] = load_model
) -> Evaluation:
    vectors_dir, heldout_dir = config.vectors, config.heldout
    vectors = open_vectors(vectors_dir)
    readout = vectors.readout
    stories = load_heldout(heldout_dir)
    covered = sorted({s.label for s in stories if s.label != NEUTRAL})
    skipped = [c for c in covered if c not in readout.concepts]
    labels = dev_labels(stories, readout.concepts)
    if not (labels >= 0).any():
        raise UserError(f"{heldout_dir} has no text of a concept in {vectors_dir}/readout.json: nothing to score")
    loaded = load_model_for(vectors, config.model, config.device, config.trust_remote_code, loader, log)
    store = None
    if vectors.record is not None and vectors.record.cache.get("enabled"):
        store = ActivationStore.of_run(vectors.record, model=loaded)
    texts = [s.text for s in stories]
    acts = capture(loaded, texts, readout.layers, pooling=vectors.pooling, batch_size=config.batch_size, max_length=vectors.max_length, store=store)
    result = Evaluation(
        str(heldout_dir), len(stories), sum(s.label == NEUTRAL for s in stories), covered, len(readout.concepts), skipped_concepts=skipped
    )
    for layer in readout.layers:
        result.layers[layer] = evaluate_served(acts.at(layer), readout.vectors[layer], labels, readout.concepts)
    if config.layers_combined is not None:
        layers = combined_layers(config.layers_combined, readout.layers, ranked_by_run(vectors_dir, vectors.record, readout), result)
        figures = evaluate_combined([acts.at(layer) for layer in layers], [readout.vectors[layer] for layer in layers], labels, readout.concepts)
        result.combined = CombinedReading(len(layers), layers, figures)
    return result


def ranked_by_run(vectors_dir: Path, record, readout) -> list[int] | None:
    """The exported layers best first, as the run's held-out evaluation ranked them (calibration.json), if it did."""
    calibration = read_calibration(vectors_dir, record, readout)
    return calibration.layers_ranked if calibration is not None else None


def combined_layers(k: int, exported: list[int], ranked: list[int] | None, result: Evaluation) -> list[int]:
    """The K layers --layers-combined K reads: the first K of the run's ranking, else the K best on this set."""
    if not 1 <= k <= len(exported):
        raise UserError(f"--layers-combined must be between 1 and the {len(exported)} exported layers, got {k}")
    order = ranked or sorted(exported, key=lambda layer: -(result.layers[layer].mean_auroc or 0.0))
    return order[:k]
