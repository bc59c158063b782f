"""`report`: rebuild quality.json and report.html from an extract's output and its activation store.

No model is loaded: activations, W_out and W_O come from the store; directions from
directions.safetensors. The held-out evaluation uses the method's own protocol; the subspace
method's needs per-token activations, so its held-out block is kept from the existing quality.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from .corpus import load_corpus
from .directions.methods import MethodContext, heldout_fit
from .errors import UserError
from .extract import head_analysis
from .quality.output import quality_payloads, served
from .quality.report import QualityInputs
from .readout import load_directions
from .rundir import (DIRECTIONS_FILE, QUALITY_FILE, SIDECAR_FILE, SUBSPACE_FILE, check_same_run, commit_run, read_run_json,
                     read_sidecar)
from .store import ActivationStore, activations_from_store


def corpus_of(sidecar: dict, corpus_dir: Path | None):
    """The corpus extract used: --corpus if given, else the directories extract.json records."""
    if corpus_dir is not None:
        return load_corpus(Path(corpus_dir))
    recorded = sidecar["corpus"]
    paths = [Path(recorded[key]) if recorded.get(key) else None for key in ("corpus", "stories_dir", "paired_dir")]
    return load_corpus(*paths) if any(paths) else load_corpus(Path(recorded["root"]))


def previous_heldout(output_dir: Path, sidecar: dict) -> dict:
    quality = read_run_json(output_dir, QUALITY_FILE, sidecar)
    if quality is None or "heldout" not in quality:
        raise UserError(f"the subspace method's held-out evaluation needs the model; run `extract --quality-report` "
                        f"({output_dir / QUALITY_FILE} is missing)")
    return quality["heldout"]


def run_report(output_dir: Path, corpus_dir: Path | None = None, cache_dir: Path | None = None, head_concept: str | None = None):
    output_dir = Path(output_dir)
    sidecar = read_sidecar(output_dir)
    corpus = corpus_of(sidecar, corpus_dir)
    if corpus.fingerprint() != sidecar["corpus"]["sha256"]:
        raise UserError(f"the corpus at {corpus.root} changed since extract (hash differs): re-run `amygdala-tl extract`")
    concepts = list(sidecar["concepts"])
    if head_concept is not None and head_concept not in concepts:
        raise UserError(f"unknown --concept {head_concept!r}")
    layers = [entry["layer"] for entry in sidecar["layers"]]
    head_layers = sidecar.get("head_layers", [])
    model = sidecar["model"]
    store = ActivationStore(Path(cache_dir or sidecar["cache"]["dir"]), model["identity"], sidecar["pooling"], sidecar["max_length"])
    if not store.dir.is_dir():
        raise UserError(f"the activation cache {store.dir.parent} has no entries for this run (key {store.key}); "
                        "pass the --cache-dir extract used, or re-run `amygdala-tl extract`")
    acts = activations_from_store(store, corpus.texts, layers, head_layers, model["d_model"], model["n_heads"], model["d_head"])
    directions = load_directions(output_dir / DIRECTIONS_FILE)
    check_same_run(output_dir / DIRECTIONS_FILE, directions.metadata.get("run_id"), sidecar)
    if directions.concepts != concepts or directions.layers != layers:
        raise UserError(f"{output_dir / DIRECTIONS_FILE} does not match {SIDECAR_FILE}: re-run `amygdala-tl extract`")
    served_directions = served(directions.vectors, layers)
    weights = {layer: store.load_weights(layer) for layer in layers}
    membership = corpus.membership(concepts)
    per_head = None
    if sidecar.get("heads"):
        skipped = [layer for layer in layers if layer not in head_layers]
        per_head = head_analysis({layer: weights[layer]["W_O"] for layer in head_layers}, acts, membership,
                                 served_directions, concepts, skipped)
    method = sidecar["method"]
    subspace = read_run_json(output_dir, SUBSPACE_FILE, sidecar) if method == "subspace" else None
    if subspace is not None:
        subspace.pop("run_id")
    context = MethodContext(method, corpus.baseline_partner(), l1_c=sidecar.get("l1_c", 0.05))
    inputs = QualityInputs(concepts, layers, model["n_layers"], corpus.stories, acts.resid, membership, served_directions,
                           {layer: weights[layer].get("W_out") for layer in layers}, per_head, subspace, method,
                           fit=None if method == "subspace" else heldout_fit(context, layers),
                           heldout=previous_heldout(output_dir, sidecar) if method == "subspace" else None)
    quality, payloads = quality_payloads(inputs, model["n_heads"], sidecar["run_id"], head_concept)
    kept = {name: (output_dir / name).read_bytes() for name in sidecar["files"] if name != SIDECAR_FILE and name not in payloads}
    paths = commit_run(output_dir, kept | payloads, sidecar)
    return quality, [path for path in paths if path.name in payloads]
