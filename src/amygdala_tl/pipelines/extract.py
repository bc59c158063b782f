"""`extract`: corpus -> model -> one capture pass -> directions -> readout export (+ quality report).

Everything a user can get wrong is checked before the model loads (pipelines/setup.py, shared with
compare-methods); the model loader is injectable so tests can prove it. All files are written in one
atomic commit at the end (see rundir).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import __version__, hooks
from ..capture import Activations, ActivationStore, ProgressCallback, capture
from ..corpus import Corpus, stories_fingerprint
from ..directions.heads import PerHead, head_analysis
from ..directions.pooled import diff_of_means
from ..errors import UserError
from ..formats.readout import Readout, build_readout, directions_payload, readout_payloads, score
from ..layers import relative_depth
from ..model import LoadedModel
from ..quality.calibration import calibration_payload, read_calibration
from ..quality.heldout import Heldout
from ..quality.output import quality_payloads, summary_lines
from ..quality.report import DevSet
from ..rundir import CALIBRATION_FILE, DIRECTIONS_FILE, PER_HEAD_FILE, SUBSPACE_FILE, RunRecord, commit_run, json_payload
from ..tracing import Trace, trace_text
from .setup import (
    PATH_OPTIONS,
    ExtractConfig,
    LayerWeights,
    Learned,
    Log,
    Prepared,
    cache_root,
    capture_and_learn,
    capture_dev_set,
    check_types,
    layer_weights,
    open_store,
    prepare,
    quality_inputs,
)

__all__ = ["ExtractConfig", "ExtractResult", "extract", "run_extract"]
DEFAULT_EXPORT_BEST = 3  # --quality-report exports this many of the best held-out layers unless --export-best-layers says
DEGENERATE_RELATIVE_GAP = 1e-6  # |mean(P) - mean(N)| below this share of the mean activation norm: no signal


@dataclass
class ExtractResult:
    readout: Readout
    activations: Activations
    corpus: Corpus
    concepts: list[str]
    record: RunRecord
    model: LoadedModel
    per_head: dict | None = None
    subspace: dict | None = None
    quality: dict | None = None
    files: list[Path] = field(default_factory=list)

    def score(self, texts: list[str]) -> dict[int, torch.Tensor]:
        """Served scores [n_texts, n_concepts] per exported layer for new texts, with the run's model (no reload)."""
        acts = capture(self.model, texts, self.readout.layers, pooling=self.record.pooling, max_length=self.record.max_length)
        return score(self.readout, {layer: acts.at(layer) for layer in self.readout.layers})

    def trace(self, text: str) -> Trace:
        """The served readout of `text` at every token (tracing.Trace), calibrated by this run's calibration.json."""
        calibration = read_calibration(self.files[-1].parent, self.record, self.readout)
        return trace_text(self.model, self.readout, text, self.record.pooling, max_length=self.record.max_length, calibration=calibration)


@dataclass
class Analysis:
    """What a run learned, before anything is written: the method's directions and the per-head and per-method extras."""

    acts: Activations
    learned: Learned
    served: Tensor  # the directions as served (fp16 rows, as fp32) [n_target_layers, n_concepts, d_model]
    all_layers: Readout  # every target layer's directions (directions.safetensors)
    weights: LayerWeights
    per_head: PerHead | None
    subspace: dict | None
    captured_at: float  # time.perf_counter() when the capture ended


def extract(
    corpus: str | Path | None = "corpus",
    output_dir: str | Path = "out",
    model: str | None = None,
    *,
    log: Log = lambda _: None,
    loader: Callable[..., LoadedModel] | None = None,
    **options,
) -> ExtractResult:
    """The Python entry point: `amygdala_tl.extract(corpus, output_dir, model, layers="12,14", method="pooled", ...)`;
    every ExtractConfig field is a keyword (`method` also takes a Method or a plain fit callable; `params` its parameters)."""
    if unknown := sorted(set(options) - {f.name for f in fields(ExtractConfig)}):
        raise UserError(f"extract() got an unknown option {unknown[0]!r}; the options are ExtractConfig's fields")
    options |= {"output_dir": output_dir, "model": model, "corpus": corpus}
    check_types(options)
    paths: dict[str, Any] = {name: Path(v) for name, v in options.items() if name in PATH_OPTIONS and v is not None}
    config = ExtractConfig(**(options | paths))
    return run_extract(config, log=log, loader=loader)


def run_extract(
    config: ExtractConfig, log: Log = lambda _: None, on_progress: ProgressCallback | None = None, loader: Callable[..., LoadedModel] | None = None
) -> ExtractResult:
    """Run the whole extraction; `loader` defaults to model.load_model (tests inject a cached model)."""
    started = time.perf_counter()
    prepared = prepare(config, log, loader, evaluate=config.quality_report)
    loaded = time.perf_counter()
    store = open_store(config, prepared.model.identity)
    analysis = analyse(prepared, config, store, on_progress, log)
    learned = time.perf_counter()

    record = run_record(config, prepared, analysis.acts)
    payloads = {
        name: json_payload(payload, record.run_id)
        for name, payload in ((PER_HEAD_FILE, analysis.per_head.to_json() if analysis.per_head else None), (SUBSPACE_FILE, analysis.subspace))
        if payload is not None
    }
    dev = capture_dev_set(prepared, config, store)
    quality, quality_files, export_layers, heldout = evaluate_run(prepared, config, analysis, record, dev, log)
    readout, export_files = export_payloads(prepared, analysis, record, export_layers, dev, heldout)
    record.timings = {
        "load_s": round(loaded - started, 3),
        "capture_s": round(analysis.captured_at - loaded, 3),
        "directions_s": round(learned - analysis.captured_at, 3),
        "total_s": round(time.perf_counter() - started, 3),
    }
    files = commit_run(Path(config.output_dir), payloads | quality_files | export_files, record)
    corpus, concepts, model = prepared.corpus, prepared.concepts, prepared.model
    per_head = analysis.per_head.to_json() if analysis.per_head else None
    return ExtractResult(readout, analysis.acts, corpus, concepts, record, model, per_head, analysis.subspace, quality, files)


def analyse(prepared: Prepared, config: ExtractConfig, store: ActivationStore | None, on_progress: ProgressCallback | None, log: Log) -> Analysis:
    """One capture, the method learned at every target layer and checked, then the per-head decomposition."""
    model, layers, concepts = prepared.model, prepared.layers, prepared.concepts
    head_layers = [layer for layer in layers if layer in model.attention_layers()] if config.heads else []
    skipped_head_layers = [layer for layer in layers if config.heads and layer not in head_layers]
    weights = layer_weights(model, store, layers)
    captured = capture_and_learn(prepared, config, [prepared.method], store, head_layers=head_layers, on_progress=on_progress, log=log)
    acts, learned = captured.acts, captured.learned[0]
    membership = prepared.corpus.membership(concepts)
    check_directions(learned.directions, acts, membership, concepts, learned.method.name)
    diagnostics = learned.diagnostics  # per concept {layer: ...}, for methods that have them (subspace.json)
    subspace = {**learned.method.values, "concepts": dict(zip(concepts, diagnostics))} if diagnostics is not None else None
    all_layers = build_readout(concepts, layers, learned.directions)
    served_directions = all_layers.stacked()
    per_head = head_analysis(weights, acts, membership, served_directions, concepts, skipped_head_layers) if config.heads else None
    return Analysis(acts, learned, served_directions, all_layers, weights, per_head, subspace, captured.captured_at)


def evaluate_run(
    prepared: Prepared, config: ExtractConfig, analysis: Analysis, record: RunRecord, dev: DevSet | None, log: Log
) -> tuple[dict | None, dict[str, bytes], list[int], Heldout | None]:
    """With --quality-report: quality.json and report.html (led by the development set when there is one), and the
    layers to export (--export-best-layers, default 3: the best held-out ones; 0: every target layer). Without: nothing,
    and every target layer."""
    if dev is not None and prepared.dev_stories is not None:
        record.heldout, record.heldout_sha256 = dev.directory, stories_fingerprint(prepared.dev_stories)
        log(f"development test set: {dev.acts.shape[1]} texts from {prepared.dev_dir} (evaluation only, never trained on)")
    if not config.quality_report:
        return None, {}, prepared.layers, None
    model, learned = prepared.model, analysis.learned
    inputs = quality_inputs(
        prepared.corpus,
        prepared.concepts,
        analysis.acts,
        analysis.served,
        analysis.weights,
        model.facts.n_layers,
        learned.method.name,
        analysis.per_head,
        analysis.subspace,
        learned.refit(prepared.layers),
        dev=dev,
    )
    built, files = quality_payloads(inputs, model.facts.n_heads, record.run_id)
    for line in summary_lines(built):
        log(line)
    export_layers = prepared.layers
    n_best = DEFAULT_EXPORT_BEST if config.export_best_layers is None else config.export_best_layers
    if n_best and n_best < len(prepared.layers):
        chosen = set(built.heldout.recommended_layers[:n_best])
        if (combined := built.heldout.recommended_combined) is not None and not chosen >= set(combined.layers):
            chosen |= set(combined.layers)  # the recommended multi-layer reading needs its layers in the file
            log(f"the recommended reading combines layers {', '.join(map(str, combined.layers))}: exported too")
        export_layers = sorted(chosen)
        log(f"exporting the {len(export_layers)} best layers: {', '.join(map(str, export_layers))}")
    return built.to_json(), files, export_layers, built.heldout


def export_payloads(
    prepared: Prepared, analysis: Analysis, record: RunRecord, export_layers: list[int], dev: DevSet | None, heldout: Heldout | None = None
) -> tuple[Readout, dict[str, bytes]]:
    """The readout (the exported layers, stamped with the record's provenance), every layer's directions, and calibration.json
    (the declared reading, and each concept's reference statistics and development-set thresholds)."""
    record.exported_layers = export_layers
    record.score_offsets = score_offsets(analysis.acts, analysis.served, prepared.concepts)
    slots = [prepared.layers.index(layer) for layer in export_layers]
    readout = build_readout(prepared.concepts, export_layers, analysis.learned.directions[slots], metadata=record.provenance())
    analysis.all_layers.metadata = {"run_id": record.run_id}
    return readout, readout_payloads(readout) | {
        DIRECTIONS_FILE: directions_payload(analysis.all_layers),
        CALIBRATION_FILE: json_payload(
            calibration_payload(record, readout, analysis.acts, prepared.corpus.membership(prepared.concepts), dev, heldout), record.run_id
        ),
    }


def check_directions(directions: torch.Tensor, acts: Activations, membership: torch.Tensor, concepts: list[str], method: str) -> None:
    """Refuse (before anything is written) a zero, non-finite or degenerate direction: the server needs unit rows."""
    for slot, layer in enumerate(acts.layers):
        norms = directions[slot].double().norm(dim=-1)
        gaps = diff_of_means(acts.resid[slot], membership).norm(dim=-1)
        scale = float(acts.resid[slot].double().norm(dim=-1).mean())
        for c, concept in enumerate(concepts):
            if not torch.isfinite(directions[slot, c]).all():
                problem = "has NaN or infinite values"
            elif norms[c] < 1e-8 or gaps[c] <= DEGENERATE_RELATIVE_GAP * scale:
                problem = "is degenerate (its positive and negative texts have the same mean activation)"
            else:
                continue
            raise UserError(
                f"the {method} direction for {concept!r} at layer {layer} {problem}; nothing was written "
                "(a --max-length too small to keep the stories' text gives this)"
            )


def run_record(config: ExtractConfig, prepared: Prepared, acts: Activations) -> RunRecord:
    """Provenance: enough to know exactly what produced a readout, to reproduce it, and for `report`."""
    model, corpus, concepts, method = prepared.model, prepared.corpus, prepared.concepts, prepared.method
    n_layers = model.facts.n_layers
    return RunRecord(
        tool="amygdala-tl",
        version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model={
            "source": model.spec.kind,
            "location": model.spec.location,
            "label": model.spec.label,
            "identity": model.identity,
            "dtype": config.dtype,
            "model_type": model.model_type(),
            **model.facts.to_dict(),
        },
        hook=hooks.RESID_POST,
        method=method.name,
        params=method.values,
        denoise_k=config.denoise_k,
        pooling=config.pooling,
        max_length=config.max_length,
        min_positives=config.min_positives,
        heads=config.heads,
        layers=[{"layer": layer, "relative_depth": round(relative_depth(layer, n_layers), 4)} for layer in prepared.layers],
        head_layers=acts.head_layers,
        concepts={c: corpus.n_positives(c) for c in concepts},
        corpus={
            "root": str(Path(corpus.root).resolve()),
            "sha256": corpus.fingerprint(),
            "n_texts": len(corpus.stories),
            **{key: str(Path(getattr(config, key)).resolve()) if getattr(config, key) else None for key in ("corpus", "stories_dir", "paired_dir")},
            "n_baselines": sum(s.is_baseline for s in corpus.stories),
            "skipped_empty": [str(p) for p in corpus.skipped],
        },
        truncated=[str(corpus.stories[i].path) for i in acts.truncated],
        cache={"dir": str(cache_root(config).resolve()), "enabled": config.use_cache},
        n_forward_passes=acts.n_forward_passes,
        timings={},
    )


def score_offsets(acts: Activations, directions: torch.Tensor, concepts: list[str]) -> dict:
    """mu . v_c per layer and concept, mu = the corpus texts' mean pooled activation.

    Raw served scores carry this per-concept offset; subtracting it (`score --centered`) makes
    concepts comparable with each other (held-out top-1 rises several-fold on the bundled model)."""
    return {
        str(layer): {c: round(float(value), 4) for c, value in zip(concepts, directions[slot] @ acts.resid[slot].mean(0))}
        for slot, layer in enumerate(acts.layers)
    }
