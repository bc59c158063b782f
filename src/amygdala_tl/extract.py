"""`extract`: corpus -> model -> one capture pass -> directions -> readout export (+ extract.json).

Everything a user can get wrong is checked before the model loads; the model loader is a
parameter so tests can prove it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import __version__, atomic, hooks
from .capture import POOLINGS, Activations, ProgressCallback, capture
from .corpus import Corpus, load_corpus, select_concepts
from .directions.pooled import pooled_directions
from .errors import UserError
from .model import LoadedModel, describe_layer, load_model, parse_dtype, parse_layers, relative_depth, resolve_model_spec
from .readout import Readout, build_readout, write_readout

METHODS = ("pooled",)
SIDECAR_FILE = "extract.json"


@dataclass
class ExtractConfig:
    output_dir: Path = Path("out")
    model: str | None = None
    corpus: Path | None = None
    stories_dir: Path | None = None
    paired_dir: Path | None = None
    layers: str | None = None
    method: str = "pooled"
    pooling: str = "last"
    batch_size: int = 8
    max_length: int = 512
    min_positives: int = 2
    dtype: str = "fp32"
    device: str | None = None
    device_map: str | None = None


@dataclass
class ExtractResult:
    readout: Readout
    activations: Activations
    corpus: Corpus
    concepts: list[str]
    sidecar: dict
    files: list[Path] = field(default_factory=list)


def check_options(config: ExtractConfig) -> None:
    """Option values that need no model and no files."""
    if config.method not in METHODS:
        raise UserError(f"unknown --method {config.method!r}: choose one of {', '.join(METHODS)}")
    if config.pooling not in POOLINGS:
        raise UserError(f"unknown --pooling {config.pooling!r}: choose one of {', '.join(POOLINGS)}")
    for name, value in (("--batch-size", config.batch_size), ("--max-length", config.max_length), ("--min-positives", config.min_positives)):
        if value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    if config.layers:
        parse_layers(config.layers, n_layers=10**9)  # syntax only; ranges are checked once the model is known
    if Path(config.output_dir).exists() and not Path(config.output_dir).is_dir():
        raise UserError(f"--output-dir exists and is not a directory: {config.output_dir}")


def run_extract(
    config: ExtractConfig,
    log: Callable[[str], None] = lambda _: None,
    on_progress: ProgressCallback | None = None,
    loader: Callable[..., LoadedModel] | None = None,
) -> ExtractResult:
    """Run the whole extraction; `loader` defaults to model.load_model (tests inject a cached model)."""
    started = time.perf_counter()
    check_options(config)
    dtype = parse_dtype(config.dtype)
    corpus = load_corpus(config.corpus, config.stories_dir, config.paired_dir)
    concepts = select_concepts(corpus, config.min_positives)
    spec = resolve_model_spec(config.model)
    log(f"corpus: {len(corpus.stories)} texts, {len(concepts)} concepts with >= {config.min_positives} positives")

    log(f"loading {spec.display} ({config.dtype})")
    model = (loader or load_model)(spec, dtype=dtype, device=config.device, device_map=config.device_map)
    n_layers = model.facts.n_layers
    layers = parse_layers(config.layers, n_layers)
    log(f"model: {n_layers} layers, d_model {model.facts.d_model}, {model.facts.n_heads} heads; "
        f"target {', '.join(describe_layer(layer, n_layers) for layer in layers)}")
    loaded = time.perf_counter()

    acts = capture(model, corpus.texts, layers, pooling=config.pooling, batch_size=config.batch_size,
                   max_length=config.max_length, on_progress=on_progress)
    for index in acts.truncated:
        log(f"truncated to its last {config.max_length} tokens: {corpus.stories[index].path}")
    captured = time.perf_counter()

    directions = pooled_directions(acts.resid, corpus.membership(concepts))
    sidecar = build_sidecar(config, model, corpus, concepts, layers, acts,
                            timings={"load_s": loaded - started, "capture_s": captured - loaded})
    readout = build_readout(concepts, layers, directions, metadata=flat_provenance(sidecar))
    files = list(write_readout(readout, config.output_dir))
    sidecar["timings"]["total_s"] = time.perf_counter() - started
    atomic.write_json(Path(config.output_dir) / SIDECAR_FILE, sidecar)
    files.append(Path(config.output_dir) / SIDECAR_FILE)
    return ExtractResult(readout, acts, corpus, concepts, sidecar, files)


def build_sidecar(config: ExtractConfig, model: LoadedModel, corpus: Corpus, concepts: list[str],
                  layers: list[int], acts: Activations, timings: dict[str, float]) -> dict:
    """Provenance: enough to know exactly what produced a readout and to reproduce it."""
    n_layers = model.facts.n_layers
    return {
        "tool": "amygdala-tl",
        "version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"source": model.spec.kind, "location": model.spec.location, "label": model.spec.label,
                  "identity": model.identity, "dtype": config.dtype, **model.facts.to_dict()},
        "hook": hooks.RESID_POST,
        "method": config.method,
        "pooling": config.pooling,
        "max_length": config.max_length,
        "layers": [{"layer": layer, "relative_depth": round(relative_depth(layer, n_layers), 4)} for layer in layers],
        "concepts": {c: corpus.n_positives(c) for c in concepts},
        "corpus": {"root": corpus.root, "sha256": corpus.fingerprint(), "n_texts": len(corpus.stories),
                   "n_baselines": sum(s.is_baseline for s in corpus.stories),
                   "skipped_empty": [str(p) for p in corpus.skipped]},
        "truncated": [str(corpus.stories[i].path) for i in acts.truncated],
        "n_forward_passes": acts.n_forward_passes,
        "timings": {key: round(value, 3) for key, value in timings.items()},
    }


def flat_provenance(sidecar: dict) -> dict[str, str]:
    """The sidecar's key facts as the string-valued safetensors header metadata."""
    return {
        "tool": f"amygdala-tl {sidecar['version']}",
        "created": sidecar["created"],
        "model": sidecar["model"]["location"],
        "model_identity": sidecar["model"]["identity"],
        "hook": sidecar["hook"],
        "method": sidecar["method"],
        "pooling": sidecar["pooling"],
        "corpus_sha256": sidecar["corpus"]["sha256"],
    }
