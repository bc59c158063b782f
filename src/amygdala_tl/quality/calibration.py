"""calibration.json: served scores in calibrated units, and thresholds that turn them into a flag.

Per exported layer and concept c, over the reference set (the training corpus texts that are not c's
positives: the other concepts' stories and the neutral baselines), the declared reading's raw score
s = <pooled h, v_c> (the pooled activation dot the fp16 row, which equals the client's aggregate of the
per-token served scores) has mean `mean` and population standard deviation `std`, so the reference
set's z = (s - mean) / std has mean 0 and standard deviation 1. On the development test set (one vs
rest: c's texts positive, every other text negative) the thresholds on z at 1% and 5% false-positive
rate, `flag = z > threshold`, with the false-positive rate, precision and recall they give there
(null without a development set). No forward pass: the run's pooled activations are in hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ..capture.activations import Activations
from ..errors import UserError
from ..formats.readout import Readout, served_scores
from ..rundir import CALIBRATION_FILE, RunRecord, read_run_json
from .heldout import Heldout
from .report import DevSet

FPR_TARGETS = (0.01, 0.05)
FORMULA = "z = (score - mean) / std; flag = z > thresholds[fpr].z (score: the declared reading of the served per-token scores)"
COMBINED_FORMULA = (
    "combined z of concept c over layers_ranked[:k] = the mean over those layers of c's z at each layer "
    "(each layer's z with its own mean and std from `calibration`)"
)


def fpr_key(fpr: float) -> str:
    return f"{fpr:g}"


def threshold_at(negatives: np.ndarray, fpr: float) -> float:
    """The lowest z threshold that flags (z > threshold) at most a fraction `fpr` of `negatives`."""
    allowed = math.floor(fpr * len(negatives) + 1e-9)
    ordered = np.sort(negatives)[::-1]
    return float(ordered[allowed]) if allowed < len(ordered) else float(ordered[-1]) - 1.0


def flag_figures(z: np.ndarray, positive: np.ndarray, threshold: float) -> dict:
    """What `flag = z > threshold` gives on a labelled set: false-positive rate, precision, recall."""
    flagged = z > threshold
    true_pos, false_pos = int((flagged & positive).sum()), int((flagged & ~positive).sum())
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return {
        "z": threshold,
        "fpr": round(false_pos / n_neg, 6) if n_neg else None,
        "precision": round(true_pos / (true_pos + false_pos), 6) if true_pos + false_pos else None,
        "recall": round(true_pos / n_pos, 6) if n_pos else None,
        "n_positives": n_pos,
        "n_negatives": n_neg,
    }


def calibrate(
    readout: Readout,
    acts: Activations,
    membership: Bool[Tensor, "n_concepts n_texts"],
    dev: DevSet | None = None,
    fprs: tuple[float, ...] = FPR_TARGETS,
) -> dict[str, dict[str, dict]]:
    """{layer: {concept: {mean, std, n_reference, thresholds}}} for the readout's layers (see the module doc)."""
    out: dict[str, dict[str, dict]] = {}
    for layer in readout.layers:
        scores = served_scores(acts.at(layer), readout.vectors[layer]).double().numpy()
        dev_scores = served_scores(dev.acts[acts.layers.index(layer)], readout.vectors[layer]).double().numpy() if dev is not None else None
        entries = {}
        for c, concept in enumerate(readout.concepts):
            reference = scores[~membership[c].numpy(), c]
            mean, std = float(reference.mean()), float(reference.std())
            std = std if std > 0 else 1.0
            thresholds = None
            if dev_scores is not None and dev is not None:
                z = (dev_scores[:, c] - mean) / std
                positive = dev.labels.numpy() == c
                if (~positive).any():
                    thresholds = {fpr_key(fpr): flag_figures(z, positive, threshold_at(z[~positive], fpr)) for fpr in fprs}
            entries[concept] = {"mean": mean, "std": std, "n_reference": len(reference), "thresholds": thresholds}
        out[str(layer)] = entries
    return out


def calibration_payload(
    record: RunRecord,
    readout: Readout,
    acts: Activations,
    membership: Bool[Tensor, "n_concepts n_texts"],
    dev: DevSet | None,
    heldout: Heldout | None = None,
) -> dict:
    """calibration.json's content (the run id is stamped by rundir.json_payload): the declared reading and its calibration,
    the exported layers best first (`layers_ranked`, by the run's held-out evaluation; the file's order without one) and
    the multi-layer reading the evaluation recommends (`combined`: {layers_combined, layers}, or null)."""
    ranked = [layer for layer in heldout.recommended_layers if layer in readout.layers] if heldout is not None else list(readout.layers)
    combined = heldout.recommended_combined if heldout is not None else None
    return {
        **record.reading_payload(),
        "formula": FORMULA,
        "combined_formula": COMBINED_FORMULA,
        "layers_ranked": ranked,
        "combined": {"layers_combined": combined.k, "layers": combined.layers} if combined is not None else None,
        "reference": "the training corpus texts that are not the concept's positives (other concepts' stories, neutral baselines)",
        "development_set": dev.directory if dev is not None else None,
        "fpr_targets": list(FPR_TARGETS),
        "calibration": calibrate(readout, acts, membership, dev),
    }


@dataclass
class Calibration:
    """calibration.json as readers use it: per layer, each concept's reference mean and std (manifest order)."""

    concepts: list[str]
    mean: dict[int, Float[Tensor, " n_concepts"]]
    std: dict[int, Float[Tensor, " n_concepts"]]
    thresholds: dict[int, dict[str, dict | None]]  # layer -> concept -> {fpr: figures} or None
    layers_ranked: list[int] = field(default_factory=list)  # the exported layers, best first (--layers-combined K reads the first K)

    def z(self, layer: int, scores: Float[Tensor, "... n_concepts"]) -> Float[Tensor, "... n_concepts"]:
        """Raw declared-reading scores in calibrated units."""
        return ((scores.double() - self.mean[layer]) / self.std[layer]).to(scores.dtype)

    def combined_layers(self, k: int) -> list[int]:
        """The K layers `--layers-combined K` averages: the first K of layers_ranked."""
        if not 1 <= k <= len(self.layers_ranked):
            raise UserError(f"--layers-combined must be between 1 and the {len(self.layers_ranked)} exported layers, got {k}")
        return self.layers_ranked[:k]

    def combined_z(self, scores: dict[int, Float[Tensor, "... n_concepts"]], k: int) -> Float[Tensor, "... n_concepts"]:
        """The multi-layer reading: each concept's z averaged over the K best exported layers (COMBINED_FORMULA)."""
        layers = self.combined_layers(k)
        return torch.stack([self.z(layer, scores[layer]).double() for layer in layers]).mean(0).to(scores[layers[0]].dtype)

    @classmethod
    def from_json(cls, payload: dict, concepts: list[str], layers: list[int], path: Path) -> Calibration:
        try:
            table = payload["calibration"]
            entries = {layer: [table[str(layer)][c] for c in concepts] for layer in layers}
            return cls(
                list(concepts),
                {layer: torch.tensor([e["mean"] for e in rows], dtype=torch.float64) for layer, rows in entries.items()},
                {layer: torch.tensor([e["std"] for e in rows], dtype=torch.float64) for layer, rows in entries.items()},
                {layer: {c: e.get("thresholds") for c, e in zip(concepts, rows)} for layer, rows in entries.items()},
                [int(layer) for layer in payload.get("layers_ranked", layers) if int(layer) in layers],
            )
        except (KeyError, TypeError) as error:
            raise UserError(f"{path} does not calibrate every exported layer and concept ({error!r}): re-run `amygdala-tl extract`") from None


def read_calibration(vectors_dir: Path, record: RunRecord | None, readout: Readout) -> Calibration | None:
    """calibration.json beside the vectors (None without one or without extract.json), refused if another run wrote it."""
    if record is None:
        return None
    payload = read_run_json(vectors_dir, CALIBRATION_FILE, record)
    if payload is None or "calibration" not in payload:
        return None
    return Calibration.from_json(payload, readout.concepts, readout.layers, Path(vectors_dir) / CALIBRATION_FILE)
