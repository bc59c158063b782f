"""`heads detect`, `heads ablate`, `heads concept`: head-level probing, inputs checked before the model loads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import atomic
from ..circuits.ablation import AblationResult, Condition, check_condition, run_ablations
from ..circuits.concept import MODES as CONCEPT_MODES
from ..circuits.concept import ConceptCircuit, concept_circuit
from ..circuits.detectors import DETECTORS, DetectorResult, check_detectors, run_detectors
from ..circuits.head import Head
from ..circuits.render import ablation_html, write_detector_outputs
from ..corpus import DEFAULT_CORPUS, load_corpus, read_lines
from ..errors import UserError
from ..model import LoadedModel, load_model
from ..model_spec import resolve_model_spec
from ..preflight import checked_config, n_heads_of, n_layers_of
from ..rundir import check_output_dir
from .vectors import load_model_for, open_vectors

Loader = Callable[..., LoadedModel]
Log = Callable[[str], None]


def load_named(
    model: str | None,
    device: str | None,
    trust_remote_code: bool,
    log: Callable[[str], None],
    loader: Loader = load_model,
    heads: Sequence[Head] = (),
) -> LoadedModel:
    """The model, once every check that needs no weights passed (device, config, and `heads` against its shape)."""
    spec = resolve_model_spec(model)
    config = checked_config(spec, device, trust_remote_code)
    n_layers, n_heads = n_layers_of(config), n_heads_of(config)
    for head in heads:
        if n_layers is not None and head.layer >= n_layers:
            raise UserError(f"head {head}: layer {head.layer} is out of range for a model with {n_layers} layers")
        if n_heads is not None and head.head >= n_heads:
            raise UserError(f"head {head}: head {head.head} is out of range for a model with {n_heads} heads per layer")
    log(f"loading {spec.display}")
    return loader(spec.passed_preflight(device, trust_remote_code), device=device, trust_remote_code=trust_remote_code)


@dataclass(kw_only=True)
class DetectConfig:
    """`heads detect`'s options and their defaults (the command line builds one by keyword)."""

    detectors: Sequence[str] = tuple(DETECTORS)
    model: str | None = None
    corpus: Path = DEFAULT_CORPUS  # natural text: the corpus stories
    text_file: Path | None = None  # natural text instead of the corpus: one text per non-empty line
    length: int = 64  # tokens per natural-text sequence
    n_texts: int = 32
    output_dir: Path = Path("out/heads")
    device: str | None = None
    trust_remote_code: bool = False


def detect(config: DetectConfig, *, log: Log = lambda _: None, loader: Loader = load_model) -> tuple[dict[str, DetectorResult], list[Path]]:
    """Score every head with each detector: heads.json, heads_<detector>.png, heads.html."""
    texts = read_lines(config.text_file, "--text-file") if config.text_file is not None else load_corpus(config.corpus).texts
    check_detectors(config.detectors)
    if config.length < 2:
        raise UserError(f"--length must be at least 2 (the detectors compare a token with the one before it), got {config.length}")
    if config.n_texts < 1:
        raise UserError(f"--n-texts must be at least 1, got {config.n_texts}")
    check_output_dir(config.output_dir)
    loaded = load_named(config.model, config.device, config.trust_remote_code, log, loader)
    results = run_detectors(loaded, config.detectors, texts, config.length, config.n_texts)
    return results, write_detector_outputs(results, config.output_dir)


def parse_conditions(heads: str, mode: str, position: int | None) -> list[Condition]:
    """'L3H5;L3H5,L4H1' -> one condition per ';' group, each checked (mode, position) before the load."""
    conditions = [Condition(tuple(Head.parse_list(group)), mode, position) for group in heads.split(";") if group.strip()]
    if not conditions:
        raise UserError("--heads names no heads (e.g. L3H5,L4H1)")
    for condition in conditions:
        check_condition(condition)
    return conditions


@dataclass(kw_only=True)
class AblateConfig:
    """`heads ablate`'s options and their defaults (the command line builds one by keyword)."""

    heads: str  # heads ablated together, e.g. 'L3H5,L4H1'; several conditions with ';'
    prompts: Sequence[str]  # whose next-token prediction is examined
    mode: str = "zero"  # zero or mean (hook_z), or value (the value vectors at position)
    position: int | None = None  # ablate at this position only (negative: from the end); None: all
    top_k: int = 5  # logit increases/decreases shown
    model: str | None = None
    output_dir: Path = Path("out/heads")
    device: str | None = None
    trust_remote_code: bool = False


def ablate(config: AblateConfig, *, log: Log = lambda _: None, loader: Loader = load_model) -> tuple[list[AblationResult], list[Path]]:
    """Ablate heads for one next-token prediction per prompt; ablations.json and ablations.html."""
    conditions = parse_conditions(config.heads, config.mode, config.position)
    check_output_dir(config.output_dir)
    heads = [Head(*head) for condition in conditions for head in condition.heads]
    loaded = load_named(config.model, config.device, config.trust_remote_code, log, loader, heads)
    results = run_ablations(loaded, config.prompts, conditions, config.top_k)
    files = [
        (config.output_dir / "ablations.json", atomic.dumps_json([r.to_json() for r in results]).encode()),
        (config.output_dir / "ablations.html", ablation_html([r.to_json() for r in results]).encode()),
    ]
    atomic.commit_all(files)
    return results, [path for path, _ in files]


@dataclass(kw_only=True)
class ConceptConfig:
    """`heads concept`'s options and their defaults (the command line builds one by keyword)."""

    concept: str
    layer: int  # the readout layer, exported in vectors
    vectors: Path = Path("out")
    corpus: Path = DEFAULT_CORPUS
    negatives: int = 16  # negative stories sampled
    from_layer: int = 0  # heads in layers from_layer..layer are ablated
    mode: str = "attribution"  # or "ablation": every head ablated (one forward each)
    verify_top: int = 5  # heads ablated for real to check the estimates (attribution); the top-n compared (ablation)
    model: str | None = None
    output_dir: Path | None = None  # default: <vectors>/heads
    device: str | None = None
    trust_remote_code: bool = False


def concept(config: ConceptConfig, *, log: Log = lambda _: None, loader: Loader = load_model) -> tuple[ConceptCircuit, Path]:
    """Rank heads by the causal effect of mean-ablating them on a concept's readout (estimated by
    attribution and checked on the top `verify_top`, or every head ablated), beside diff-of-means."""
    name, layer, mode, verify_top = config.concept, config.layer, config.mode, config.verify_top
    if mode not in CONCEPT_MODES:
        raise UserError(f"unknown --mode {mode!r}: choose one of {', '.join(CONCEPT_MODES)}")
    if verify_top < 1:
        raise UserError(f"--verify-top must be at least 1, got {verify_top}")
    vectors = open_vectors(config.vectors)
    vectors.readout.check_concept(name)
    vectors.readout.check_layers([layer])
    if not 0 <= config.from_layer <= layer:
        raise UserError(f"--from-layer must be between 0 and {layer}")
    if config.negatives < 1:
        raise UserError(f"--negatives must be at least 1, got {config.negatives}")
    loaded_corpus = load_corpus(config.corpus)
    loaded_corpus.require(name)
    target = (config.output_dir or vectors.directory / "heads") / f"concept_{name}_L{layer}.json"
    check_output_dir(target.parent)
    loaded = load_model_for(vectors, config.model, config.device, config.trust_remote_code, loader, log)
    vector = vectors.readout.vectors[layer][vectors.readout.concepts.index(name)].float()
    layers = range(config.from_layer, layer + 1)
    circuit = concept_circuit(
        loaded, loaded_corpus, name, layer, vector, config.negatives, layers, max_length=vectors.max_length, mode=mode, verify_top=verify_top
    )
    atomic.write_json(target, circuit.to_json())
    return circuit, target
