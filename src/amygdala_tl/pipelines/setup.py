"""The setup `extract` and `compare-methods` share: the options, every check before the model loads, the model
and activation store, the target layers' weights, the development set's capture, and one capture-and-learn step.

`report` reads the same weights back from the store (`stored_weights`) and builds the same quality inputs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jaxtyping import Float
from torch import Tensor

from .. import hooks
from ..capture import DEFAULT_POOLING, Activations, ActivationStore, ProgressCallback, capture, check_pooling
from ..corpus import Corpus, Story, load_corpus, select_concepts
from ..directions.heads import PerHead
from ..directions.registry import Fit, Method, MethodContext, get_method, heldout_fit, learn
from ..errors import UserError
from ..layers import describe_layer, is_index_list, parse_layers
from ..model import DeferredModel, LoadedModel, load_model, parse_dtype
from ..model_spec import ModelSpec, model_identity, resolve_model_spec
from ..preflight import check_device_map, preflight
from ..quality.heldout import FoldFit, Heldout, cv_folds, writer_folds
from ..quality.report import DevSet, QualityInputs
from ..rundir import check_output_dir
from .devset import dev_set, heldout_dir_of, load_dev_stories

Log = Callable[[str], None]
LayerWeights = dict[int, dict[str, Tensor]]  # {layer: {"W_out": [d_mlp, d_model], "W_O": [n_heads, d_head, d_model]}}


# The natural Python type of each option (the command line always passes these); layers and method take several.
OPTION_TYPES: dict[str, tuple[str, tuple[type, ...]]] = {
    **{name: ("an integer", (int,)) for name in ("batch_size", "max_length", "min_positives", "denoise_k")},
    "export_best_layers": ("an integer or None", (int, type(None))),
    "params": ("a dict of the method's parameter values", (dict,)),
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
    params: dict[str, object] = field(default_factory=dict)  # the method's parameters ({"c": 0.5}; --param c=0.5)
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
    quality_report: bool = False
    export_best_layers: int | None = None  # with quality_report: None -> DEFAULT_EXPORT_BEST, 0 -> every searched layer
    trust_remote_code: bool = False
    denoise_k: int = 0  # project out the top-k principal components of the scenario baselines (0: off), any method
    heldout: Path | None = None  # development test set for the quality report (default: <corpus>/heldout if present)


@dataclass
class Prepared:
    """What every model-using pipeline needs once the inputs are checked and the model is loaded."""

    corpus: Corpus
    concepts: list[str]
    model: LoadedModel
    layers: list[int]
    method: Method  # with its parameters bound
    dev_stories: list[Story] | None = None  # the development test set (evaluation only), when the run scores one
    dev_dir: Path | None = None


def check_options(config: ExtractConfig) -> Method:
    """Option values that need no model and no files; returns the method, its parameters bound and checked."""
    check_types(vars(config))
    method = get_method(config.method).bind(config.params)
    check_pooling(config.pooling)
    for name, value in (
        ("--batch-size", config.batch_size),
        ("--max-length", config.max_length),
        ("--min-positives", config.min_positives),
    ):
        if value is not None and value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    if config.export_best_layers is not None and config.export_best_layers < 0:
        raise UserError(f"--export-best-layers must be 0 (every searched layer) or more, got {config.export_best_layers}")
    if config.denoise_k < 0:
        raise UserError(f"--denoise-k must be 0 or more, got {config.denoise_k}")
    if config.denoise_k and method.needs_tokens:
        raise UserError(f"--denoise-k does not apply to the {method.name} method (it learns from per-token activations)")
    if config.quality_report and config.min_positives < 2:
        raise UserError("--quality-report needs --min-positives 2 or more: held-out evaluation leaves one story out")
    if config.export_best_layers is not None and not config.quality_report:
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
    if evaluate and cv_grouping(corpus, concepts, log)[1] is not None:
        cv_folds(corpus.membership(concepts), corpus.groups(by_writer=False))  # a corpus too small to cross-validate fails now
    spec = resolve_model_spec(config.model)
    n_layers = preflight(spec, config.device, config.trust_remote_code)
    if n_layers is not None:
        parse_layers(config.layers, n_layers)  # out-of-range layers fail before the load
    spec = spec.passed_preflight(config.device, config.trust_remote_code)  # the loader does not check again
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


# ---- the model and the activation store --------------------------------------------------------------------


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


def open_store(config: ExtractConfig, identity: str) -> ActivationStore | None:
    if not config.use_cache:
        return None
    return ActivationStore(cache_root(config), identity, config.pooling, config.max_length, config.dtype)


def cache_root(config: ExtractConfig) -> Path:
    return Path(config.cache_dir) if config.cache_dir else Path(config.output_dir) / "cache"


def remember_model(store: ActivationStore | None, model: LoadedModel) -> None:
    """Keep the model's record and tokenizer beside its activations, so the next run need not load it."""
    if store is not None and not isinstance(model, DeferredModel):
        store.save_model(model.record(), model.tokenizer)


# ---- the target layers' weights (W_out, W_O): off the model, or back from the store --------------------------


def model_weights(model: LoadedModel, layers: list[int]) -> LayerWeights:
    """W_out [d_mlp, d_model] (rows: what each MLP neuron writes) and W_O [n_heads, d_head, d_model] per layer, fp32 CPU."""
    from transformer_lens.model_bridge.generalized_components.base import align_offloaded_subtree

    weights: LayerWeights = {}
    for layer in layers:
        block, entry = model.bridge.blocks[layer], {}
        with align_offloaded_subtree(block):  # under accelerate's disk/CPU offload the weights sit on `meta` until materialized
            mlp = getattr(block, "mlp", None)
            if mlp is not None and hasattr(mlp, "W_out"):
                entry["W_out"] = mlp.W_out.detach().float().cpu()
            if hooks.attn_z(layer) in model.bridge.hook_dict:
                entry["W_O"] = block.attn.W_O.detach().float().cpu()
        weights[layer] = entry
    return weights


def stored_weights(store: ActivationStore, layers: list[int]) -> LayerWeights | None:
    """Every target layer's weights from the store, or None if one is absent or does not verify (that one is warned about)."""
    entries = {layer: store.load_weights(layer) for layer in layers}  # each one read: every damaged file is set aside now
    weights = {layer: entry for layer, entry in entries.items() if entry is not None}
    return weights if len(weights) == len(layers) else None


def layer_weights(model: LoadedModel, store: ActivationStore | None, layers: list[int]) -> LayerWeights:
    """The target layers' W_out / W_O: from the store when it has them all (no model load), else read off the model and
    stored (so `report` can rank neurons and heads without the model)."""
    remember_model(store, model)
    if store is not None and (stored := stored_weights(store, layers)) is not None:
        return stored
    weights = model_weights(model, layers)
    if store is not None:
        save_weights(store, weights)
    return weights


def save_weights(store: ActivationStore, weights: LayerWeights) -> None:
    for layer, entry in weights.items():
        if not store.weights_path(layer).is_file():
            store.save_weights(layer, entry)


# ---- capture: the corpus (then every method learned on it) and the development set -----------------------------


@dataclass
class Learned:
    """One method's directions at every target layer, its per-concept diagnostics, and what refits it."""

    context: MethodContext
    directions: Float[Tensor, "n_target_layers n_concepts d_model"]
    diagnostics: list[dict] | None
    fit_s: float  # the cost of fitting every layer once

    @property
    def method(self) -> Method:
        return self.context.method

    def refit(self, layers: list[int]) -> FoldFit | None:
        """The held-out refit function, None where the method's held-out is closed-form (exact leave-one-out)."""
        return None if self.method.exact_loo else heldout_fit(self.context, layers)


@dataclass
class Captured:
    acts: Activations
    learned: list[Learned]
    captured_at: float  # time.perf_counter() when the capture ended


def capture_and_learn(
    prepared: Prepared,
    config: ExtractConfig,
    methods: list[Method],
    store: ActivationStore | None,
    *,
    head_layers: Sequence[int] = (),
    on_progress: ProgressCallback | None = None,
    log: Log = lambda _: None,
) -> Captured:
    """One capture of the corpus at the target layers, pooled as `config.pooling` (per-story token bases too when a
    method learns from tokens), then every method learned at every layer on it."""
    corpus, layers = prepared.corpus, prepared.layers
    collector = next((method.collector(layers, len(corpus.stories)) for method in methods if method.needs_tokens), None)
    acts = capture(
        prepared.model,
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
    captured_at, membership, learned = time.perf_counter(), corpus.membership(prepared.concepts), []
    for method in methods:
        started = time.perf_counter()
        context = MethodContext(method, corpus.baseline_partner(), collector, corpus.neutral_mask(), config.denoise_k)
        directions, diagnostics = learn(context, acts, membership)
        learned.append(Learned(context, directions, diagnostics, round(time.perf_counter() - started, 3)))
    return Captured(acts, learned, captured_at)


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


def cv_grouping(corpus: Corpus, concepts: list[str], log: Callable[[str], None] | None = None) -> tuple[list[int], str | None]:
    """Cross-validation groups, and None when they are writers (one held out at a time: the manifest records every
    text's writer and every fold leaves each concept a positive); else scenario groups and the reason, which
    `log` prints as a warning when the corpus records writers (the figures may then overstate how well a new
    writer is read) and quality.json keeps."""
    if not corpus.writers_recorded:
        return corpus.groups(by_writer=False), "the corpus manifest does not record every text's writer"
    membership, groups = corpus.membership(concepts), corpus.groups()
    if writer_folds(membership, groups) is not None:
        return groups, None
    single = next((c for c, row in zip(concepts, membership) if len({groups[i] for i in row.nonzero().flatten().tolist()}) < 2), None)
    reason = f"every positive of {single!r} comes from one writer" if single else "no split by writer leaves every concept a positive"
    if log is not None:
        log(
            f"warning: cross-validation cannot leave one writer out ({reason}: add texts of it by another writer); "
            "it holds out paired scenarios and single texts instead, which may overstate how well a new writer is read"
        )
    return corpus.groups(by_writer=False), reason


def quality_inputs(
    corpus: Corpus,
    concepts: list[str],
    acts: Activations,
    directions: Float[Tensor, "n_target_layers n_concepts d_model"],
    weights: LayerWeights,
    n_layers: int,
    method: str,
    per_head: PerHead | None,
    subspace: dict | None,
    fit: FoldFit | None,
    heldout: Heldout | None = None,
    dev: DevSet | None = None,
) -> QualityInputs:
    """What the quality report reads, from a run's corpus, activations, served directions and weights (extract and report)."""
    groups, not_by_writer = cv_grouping(corpus, concepts)
    return QualityInputs(
        concepts=concepts,
        layers=acts.layers,
        n_layers=n_layers,
        stories=corpus.stories,
        acts=acts.resid,
        membership=corpus.membership(concepts),
        directions=directions,
        w_out={layer: weights[layer].get("W_out") for layer in acts.layers},
        per_head=per_head,
        subspace=subspace,
        method=method,
        fit=fit,
        heldout=heldout,
        groups=groups,
        not_by_writer=not_by_writer,
        dev=dev,
    )
