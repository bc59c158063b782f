"""`extract`: corpus -> model -> one capture pass -> directions -> readout export (+ quality report).

Everything a user can get wrong is checked before the model loads; the model loader is injectable
so tests can prove it. All files are written in one atomic commit at the end (see rundir).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from numbers import Real
from pathlib import Path
from typing import Any

import torch

from .. import __version__, hooks
from ..capture import DEFAULT_POOLING, Activations, ActivationStore, ProgressCallback, capture, check_pooling
from ..corpus import Corpus, Story, load_corpus, select_concepts
from ..directions.aggregators import DEFAULT_L1_C
from ..directions.pooled import diff_of_means
from ..directions.registry import Fit, Method, MethodContext, get_method, heldout_fit, learn
from ..directions.subspace import SubspaceCollector
from ..errors import UserError
from ..formats.readout import Readout, build_readout, directions_payload, readout_payloads, score
from ..layers import describe_layer, is_index_list, parse_layers, relative_depth
from ..model import DeferredModel, LoadedModel, load_model, parse_dtype
from ..model_spec import ModelSpec, model_identity, resolve_model_spec
from ..preflight import check_device_map, preflight
from ..quality.calibration import calibration_payload, read_calibration
from ..quality.heldout import cv_folds
from ..quality.output import quality_payloads, served, summary_lines
from ..quality.report import DevSet
from ..rundir import CALIBRATION_FILE, DIRECTIONS_FILE, PER_HEAD_FILE, SUBSPACE_FILE, RunRecord, check_output_dir, commit_run, json_payload
from ..tracing import Trace, trace_text
from .analysis import (
    LayerWeights,
    dev_set,
    head_analysis,
    heldout_dir_of,
    heldout_fingerprint,
    load_dev_stories,
    model_weights,
    quality_inputs,
    save_weights,
    stored_weights,
)

Log = Callable[[str], None]
DEGENERATE_RELATIVE_GAP = 1e-6  # |mean(P) - mean(N)| below this share of the mean activation norm: no signal


# The natural Python type of each option (the command line always passes these); layers and method take several.
OPTION_TYPES: dict[str, tuple[str, tuple[type, ...]]] = {
    **{name: ("an integer", (int,)) for name in ("batch_size", "max_length", "min_positives", "subspace_eigen_k", "denoise_k")},
    **{name: ("an integer or None", (int, type(None))) for name in ("subspace_k", "export_best_layers")},
    "l1_c": ("a number", (Real,)),
    **{name: ("True or False", (bool,)) for name in ("heads", "use_cache", "quality_report", "trust_remote_code")},
    **{name: ("a string", (str,)) for name in ("pooling", "dtype")},
    **{name: ("a string or None", (str, type(None))) for name in ("model", "device", "device_map")},
    "output_dir": ("a path", (str, os.PathLike)),
    **{name: ("a path or None", (str, os.PathLike, type(None))) for name in ("corpus", "stories_dir", "paired_dir", "cache_dir", "heldout")},
}
PATH_OPTIONS = ("output_dir", "corpus", "stories_dir", "paired_dir", "cache_dir", "heldout")


def check_types(options: dict[str, object]) -> None:
    """From Python an option can be anything: a wrong type is refused by the option's name, before any work."""
    for name, value in options.items():
        expected, types = OPTION_TYPES.get(name, ("", (object,)))
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise UserError(f"{name} must be {expected}, got {value!r}")
    layers = options.get("layers")
    if not (layers is None or isinstance(layers, str) or is_index_list(layers)):
        raise UserError(f"layers must be a list of block indices or a string such as '12,14', got {layers!r}")


@dataclass
class ExtractConfig:
    output_dir: Path = Path("out")
    model: str | None = None
    corpus: Path | None = None
    stories_dir: Path | None = None
    paired_dir: Path | None = None
    layers: str | Sequence[int] | None = None  # '12,14,-3' or a list of block indices
    method: str | Method | Fit = "lda"
    pooling: str = DEFAULT_POOLING  # the training pooling, which is also the declared reading (capture/pooling.py)
    batch_size: int = 8
    max_length: int = 512
    min_positives: int = 2
    dtype: str = "fp32"
    device: str | None = None
    device_map: str | None = None
    heads: bool = True
    cache_dir: Path | None = None  # default: <output_dir>/cache
    use_cache: bool = True
    subspace_k: int | None = None
    subspace_eigen_k: int = 5
    l1_c: float = DEFAULT_L1_C
    quality_report: bool = False
    export_best_layers: int | None = None
    trust_remote_code: bool = False
    denoise_k: int = 0  # project out the top-k principal components of the scenario baselines (0: off)
    heldout: Path | None = None  # development test set for the quality report (default: <corpus>/heldout if present)


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
class Prepared:
    """What every model-using pipeline needs once the inputs are checked and the model is loaded."""

    corpus: Corpus
    concepts: list[str]
    model: LoadedModel
    layers: list[int]
    method: Method
    dev_stories: list[Story] | None = None  # the development test set (evaluation only), when the run scores one
    dev_dir: Path | None = None


def check_options(config: ExtractConfig) -> Method:
    """Option values that need no model and no files; returns the method."""
    check_types(vars(config))
    method = get_method(config.method)
    check_pooling(config.pooling)
    for name, value in (
        ("--batch-size", config.batch_size),
        ("--max-length", config.max_length),
        ("--min-positives", config.min_positives),
        ("--subspace-eigen-k", config.subspace_eigen_k),
        ("--subspace-k", config.subspace_k),
        ("--export-best-layers", config.export_best_layers),
    ):
        if value is not None and value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    if config.denoise_k < 0:
        raise UserError(f"--denoise-k must be 0 or more, got {config.denoise_k}")
    if config.denoise_k and method.needs_tokens:
        raise UserError(f"--denoise-k does not apply to the {method.name} method (it learns from per-token activations)")
    if config.quality_report and config.min_positives < 2:
        raise UserError("--quality-report needs --min-positives 2 or more: held-out evaluation leaves one story out")
    if not math.isfinite(config.l1_c) or config.l1_c <= 0:
        raise UserError(f"--l1-c must be a finite positive number, got {config.l1_c}")
    if config.export_best_layers and not config.quality_report:
        raise UserError("--export-best-layers needs --quality-report (the held-out evaluation ranks the layers)")
    check_device_map(config.device_map, config.device)  # before the load, and a fully cached run never loads
    if config.layers is not None:
        parse_layers(config.layers, n_layers=10**9)  # syntax only; ranges once the model's depth is known
    check_output_dir(Path(config.output_dir))
    if config.use_cache:
        check_output_dir(cache_root(config), "--cache-dir")
    return method


def prepare(config: ExtractConfig, log: Log, loader: Callable[..., LoadedModel] | None, evaluate: bool = False) -> Prepared:
    """Validate options, corpus and (when the run evaluates) its folds and test set before the model; load it; resolve layers."""
    method = check_options(config)
    parse_dtype(config.dtype)
    corpus = load_corpus(*(Path(p).resolve() if p is not None else None for p in (config.corpus, config.stories_dir, config.paired_dir)))
    concepts = select_concepts(corpus, config.min_positives)
    check_denoise_k(config.denoise_k, corpus)
    dev_dir = heldout_dir_of(config.corpus, config.heldout) if evaluate else None
    dev_stories = load_dev_stories(dev_dir, corpus, concepts, log) if dev_dir is not None else None
    if evaluate:
        cv_folds(corpus.membership(concepts), corpus.groups())  # a corpus too small to cross-validate fails now
    spec = resolve_model_spec(config.model)
    n_layers = preflight(spec, config.device, config.trust_remote_code)
    spec = spec.passed_preflight(config.device, config.trust_remote_code)  # the loader does not check again
    if n_layers is not None:
        parse_layers(config.layers, n_layers)  # out-of-range layers fail before the load
    log(f"corpus: {len(corpus.stories)} texts, {len(concepts)} concepts with >= {config.min_positives} positives")
    model = open_model(config, spec, log, loader)
    layers = parse_layers(config.layers, model.facts.n_layers)
    log(
        f"model: {model.facts.n_layers} layers, d_model {model.facts.d_model}, {model.facts.n_heads} heads; "
        f"target {', '.join(describe_layer(layer, model.facts.n_layers) for layer in layers)}"
    )
    return Prepared(corpus, concepts, model, layers, method, dev_stories, dev_dir)


def check_denoise_k(denoise_k: int, corpus: Corpus) -> None:
    """n centred baseline texts span at most n - 1 directions: asking for more would silently project out fewer."""
    n_baselines = int(corpus.neutral_mask().sum())
    if denoise_k > max(n_baselines - 1, 0):
        raise UserError(
            f"--denoise-k {denoise_k} is more than the {max(n_baselines - 1, 0)} directions the corpus's {n_baselines} "
            "baseline texts span (at most one fewer than the baselines; add paired/<scenario>/baseline.txt files)"
        )


def open_model(config: ExtractConfig, spec: ModelSpec, log: Log, loader: Callable[..., LoadedModel] | None) -> LoadedModel:
    """The model, loaded now, or (when the activation store knows it) a DeferredModel whose weights load only
    if something runs the model: a fully cached re-run needs just the stored tokenizer, facts and weights."""
    dtype = parse_dtype(config.dtype)

    def load() -> LoadedModel:
        log(f"loading {spec.display} ({config.dtype})")
        return (loader or load_model)(
            spec, dtype=dtype, device=config.device, device_map=config.device_map, trust_remote_code=config.trust_remote_code
        )

    identity = model_identity(spec)  # weight files hashed once per version (model_spec.content_sha256)
    store = open_store(config, identity)
    known = store.load_model_record(identity) if store is not None else None
    if store is None or known is None:
        return load()
    log(f"model facts and tokenizer from the cache {store.dir}: the weights load only if a forward pass is needed")
    record, tokenizer = known
    return DeferredModel(record, tokenizer, spec, dtype, load)


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
    every ExtractConfig field is a keyword (`method` also takes a Method or a plain fit callable)."""
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
    corpus, concepts, model, layers, method = prepared.corpus, prepared.concepts, prepared.model, prepared.layers, prepared.method
    loaded = time.perf_counter()

    head_layers = [layer for layer in layers if layer in model.attention_layers()] if config.heads else []
    skipped_head_layers = [layer for layer in layers if config.heads and layer not in head_layers]
    collector = SubspaceCollector(layers, len(corpus.stories), config.subspace_k) if method.needs_tokens else None
    store = open_store(config, model.identity)
    weights = layer_weights(model, store, layers)
    acts = capture(
        model,
        corpus.texts,
        layers,
        pooling=config.pooling,
        head_layers=head_layers,
        batch_size=config.batch_size,
        max_length=config.max_length,
        token_sink=collector,
        store=store,
        on_progress=on_progress,
    )
    log(f"forward passes: {acts.n_forward_passes} batches" + (f" (cache: {store.dir})" if store is not None else ""))
    for index in acts.truncated:
        log(f"truncated to its last {config.max_length} tokens: {corpus.stories[index].path}")
    captured = time.perf_counter()

    membership = corpus.membership(concepts)
    context = MethodContext(
        method, corpus.baseline_partner(), collector, config.subspace_eigen_k, config.l1_c, corpus.neutral_mask(), config.denoise_k
    )
    directions, diagnostics = learn(context, acts, membership)
    check_directions(directions, acts, membership, concepts, method.name)
    subspace = {"eigen_k": config.subspace_eigen_k, "concepts": dict(zip(concepts, diagnostics))} if diagnostics is not None else None
    all_layers = build_readout(concepts, layers, directions)
    served_directions = served(all_layers.vectors, layers)
    per_head = head_analysis(weights, acts, membership, served_directions, concepts, skipped_head_layers) if config.heads else None
    learned = time.perf_counter()

    record = run_record(config, method, model, corpus, concepts, layers, acts)
    payloads = {
        name: json_payload(payload, record.run_id) for name, payload in ((PER_HEAD_FILE, per_head), (SUBSPACE_FILE, subspace)) if payload is not None
    }
    quality, export_layers = None, layers
    dev = capture_dev_set(prepared, config, store)
    if dev is not None and prepared.dev_stories is not None:
        record.heldout, record.heldout_sha256 = dev.directory, heldout_fingerprint(prepared.dev_stories)
        log(f"development test set: {dev.acts.shape[1]} texts from {prepared.dev_dir} (evaluation only, never trained on)")
    if config.quality_report:
        inputs = quality_inputs(
            corpus,
            concepts,
            acts,
            served_directions,
            weights,
            model.facts.n_layers,
            method.name,
            per_head,
            subspace,
            None if method.exact_loo else heldout_fit(context, layers),
            dev=dev,
        )
        quality, quality_files = quality_payloads(inputs, model.facts.n_heads, record.run_id)
        payloads |= quality_files
        for line in summary_lines(quality):
            log(line)
        if config.export_best_layers:
            export_layers = sorted(quality["heldout"]["recommended_layers"][: config.export_best_layers])
            log(f"exporting the {len(export_layers)} best layers: {', '.join(map(str, export_layers))}")

    record.exported_layers = export_layers
    record.score_offsets = score_offsets(acts, served_directions, concepts)
    slots = [layers.index(layer) for layer in export_layers]
    readout = build_readout(concepts, export_layers, directions[slots], metadata=record.provenance())
    all_layers.metadata = {"run_id": record.run_id}
    payloads |= readout_payloads(readout) | {
        DIRECTIONS_FILE: directions_payload(all_layers),
        CALIBRATION_FILE: json_payload(calibration_payload(record, readout, acts, membership, dev), record.run_id),
    }
    record.timings = {
        "load_s": round(loaded - started, 3),
        "capture_s": round(captured - loaded, 3),
        "directions_s": round(learned - captured, 3),
        "total_s": round(time.perf_counter() - started, 3),
    }
    files = commit_run(Path(config.output_dir), payloads, record)
    return ExtractResult(readout, acts, corpus, concepts, record, model, per_head, subspace, quality, files)


def capture_dev_set(prepared: Prepared, config: ExtractConfig, store: ActivationStore | None) -> DevSet | None:
    """The development test set's activations at the target layers, pooled as the run reads (the run's store)."""
    if prepared.dev_stories is None or prepared.dev_dir is None:
        return None
    model, layers = prepared.model, prepared.layers
    return dev_set(
        prepared.dev_stories,
        prepared.dev_dir,
        prepared.concepts,
        lambda texts: (
            capture(model, texts, layers, pooling=config.pooling, batch_size=config.batch_size, max_length=config.max_length, store=store).resid
        ),
    )


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


def open_store(config: ExtractConfig, identity: str) -> ActivationStore | None:
    if not config.use_cache:
        return None
    return ActivationStore(cache_root(config), identity, config.pooling, config.max_length, config.dtype)


def remember_model(store: ActivationStore | None, model: LoadedModel) -> None:
    """Keep the model's record and tokenizer beside its activations, so the next run need not load it."""
    if store is not None and not isinstance(model, DeferredModel):
        store.save_model(model.record(), model.tokenizer)


def layer_weights(model: LoadedModel, store: ActivationStore | None, layers: list[int]) -> LayerWeights:
    """The target layers' W_out / W_O: from the store when it has them all (no model load), else read off the model and stored."""
    remember_model(store, model)
    if store is not None and (stored := stored_weights(store, layers)) is not None:
        return stored
    weights = model_weights(model, layers)
    if store is not None:
        save_weights(store, weights)
    return weights


def cache_root(config: ExtractConfig) -> Path:
    return Path(config.cache_dir) if config.cache_dir else Path(config.output_dir) / "cache"


def run_record(
    config: ExtractConfig, method: Method, model: LoadedModel, corpus: Corpus, concepts: list[str], layers: list[int], acts: Activations
) -> RunRecord:
    """Provenance: enough to know exactly what produced a readout, to reproduce it, and for `report`."""
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
        subspace={"subspace_k": config.subspace_k, "subspace_eigen_k": config.subspace_eigen_k} if method.needs_tokens else None,
        l1_c=config.l1_c,
        denoise_k=config.denoise_k,
        pooling=config.pooling,
        max_length=config.max_length,
        min_positives=config.min_positives,
        heads=config.heads,
        layers=[{"layer": layer, "relative_depth": round(relative_depth(layer, n_layers), 4)} for layer in layers],
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
