"""`report`: rebuild quality.json and report.html from an extract's output and its activation store.

No model is loaded: activations, W_out and W_O come from the store; directions from
directions.safetensors. The held-out evaluation uses the method's own protocol; a method that
learns from per-token activations (subspace) cannot be refit from the pooled store, so its held-out
block is kept from the existing quality.json.
"""

from __future__ import annotations

from pathlib import Path

from ..capture import ActivationStore, activations_from_store
from ..corpus import load_corpus, load_heldout, stories_fingerprint
from ..directions.heads import head_analysis
from ..directions.registry import METHODS, MethodContext, get_method, heldout_fit
from ..errors import UserError
from ..formats.readout import load_directions
from ..quality.heldout import Heldout
from ..quality.output import quality_payloads
from ..quality.report import DevSet
from ..rundir import (
    DIRECTIONS_FILE,
    HTML_FILE,
    QUALITY_FILE,
    SIDECAR_FILE,
    SUBSPACE_FILE,
    RunRecord,
    check_output_dir,
    check_same_run,
    commit_run,
    read_run_json,
)
from .devset import dev_set
from .setup import quality_inputs, stored_weights


def corpus_of(record: RunRecord, corpus_dir: Path | None):
    """The corpus extract used: --corpus if given, else the (absolute) directories extract.json records."""
    if corpus_dir is not None:
        return load_corpus(Path(corpus_dir))
    paths = [Path(record.corpus[key]) if record.corpus.get(key) else None for key in ("corpus", "stories_dir", "paired_dir")]
    return load_corpus(*paths) if any(paths) else load_corpus(Path(record.corpus["root"]))


def kept_files(output_dir: Path, record: RunRecord) -> dict[str, bytes]:
    """The run's files that `report` does not rebuild (all but quality.json and report.html), each a regular file."""
    kept = {}
    for name in record.files:
        path = output_dir / name
        if name in (QUALITY_FILE, HTML_FILE, SIDECAR_FILE):
            continue
        if path.is_symlink() or not path.is_file():
            raise UserError(f"{path}, a file of the run in {SIDECAR_FILE}, is missing or not a regular file: re-run `amygdala-tl extract`")
        kept[name] = path.read_bytes()
    return kept


def previous_heldout(output_dir: Path, record: RunRecord) -> Heldout:
    quality = read_run_json(output_dir, QUALITY_FILE, record)
    if quality is None or "heldout" not in quality:
        raise UserError(
            f"the {record.method} method's held-out evaluation needs the model; run `extract --quality-report` "
            f"({output_dir / QUALITY_FILE} is missing)"
        )
    return Heldout.from_json(quality["heldout"])


def stored_dev_set(record: RunRecord, store: ActivationStore, concepts: list[str], layers: list[int]) -> DevSet | None:
    """The development test set extract scored, read back from the run's store (pooled as the run reads)."""
    if record.heldout is None:
        return None
    model = record.model
    stories = load_heldout(record.heldout)
    if record.heldout_sha256 is not None and stories_fingerprint(stories) != record.heldout_sha256:
        raise UserError(f"the development test set {record.heldout} changed since extract: re-run `amygdala-tl extract --quality-report`")
    return dev_set(
        stories,
        Path(record.heldout),
        concepts,
        lambda texts: activations_from_store(store, texts, layers, [], model["d_model"], model["n_heads"], model["d_head"]).resid,
    )


def run_report(output_dir: Path, corpus_dir: Path | None = None, cache_dir: Path | None = None, head_concept: str | None = None):
    output_dir = Path(output_dir)
    record = RunRecord.read(output_dir)
    check_output_dir(output_dir)
    kept = kept_files(output_dir, record)
    corpus = corpus_of(record, corpus_dir)
    if corpus.fingerprint() != record.corpus["sha256"]:
        raise UserError(f"the corpus at {corpus.root} changed since extract (hash differs): re-run `amygdala-tl extract`")
    concepts, layers, model = list(record.concepts), record.target_layers, record.model
    if head_concept is not None and head_concept not in concepts:
        raise UserError(f"unknown --concept {head_concept!r}")
    store = ActivationStore.of_run(record, cache_dir)
    if not store.dir.is_dir():
        raise UserError(
            f"the activation cache {store.dir.parent} has no entries for this run (key {store.key}); "
            "pass the --cache-dir extract used, or re-run `amygdala-tl extract`"
        )
    acts = activations_from_store(store, corpus.texts, layers, record.head_layers, model["d_model"], model["n_heads"], model["d_head"])
    directions = load_directions(output_dir / DIRECTIONS_FILE)
    check_same_run(output_dir / DIRECTIONS_FILE, directions.metadata.get("run_id"), record)
    if directions.concepts != concepts or directions.layers != layers:
        raise UserError(f"{output_dir / DIRECTIONS_FILE} does not match {SIDECAR_FILE}: re-run `amygdala-tl extract`")
    served_directions = directions.stacked()
    weights = stored_weights(store, layers)
    if weights is None:
        raise UserError(f"the activation cache {store.dir} lacks usable weights for layers {layers}: re-run `amygdala-tl extract`")
    membership = corpus.membership(concepts)
    skipped = [layer for layer in layers if layer not in record.head_layers]
    per_head = head_analysis(weights, acts, membership, served_directions, concepts, skipped) if record.heads else None
    if record.method not in METHODS:
        raise UserError(f"the run used a user-supplied method ({record.method!r}): `report` cannot refit it; re-run extract from Python")
    method = get_method(record.method).bind(record.params)
    subspace = read_run_json(output_dir, SUBSPACE_FILE, record) if method.needs_tokens else None
    context = MethodContext(method, corpus.baseline_partner(), neutral=corpus.neutral_mask(), denoise_k=record.denoise_k)
    inputs = quality_inputs(
        corpus,
        concepts,
        acts,
        served_directions,
        weights,
        model["n_layers"],
        method.name,
        per_head,
        subspace,
        fit=None if method.exact_loo or method.needs_tokens else heldout_fit(context, layers),
        heldout=previous_heldout(output_dir, record) if method.needs_tokens else None,
        dev=stored_dev_set(record, store, concepts, layers),
    )
    quality, payloads = quality_payloads(inputs, model["n_heads"], record.run_id, head_concept)
    paths = commit_run(output_dir, kept | payloads, record)
    return quality.to_json(), [path for path in paths if path.name in payloads]
