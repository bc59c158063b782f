"""`heads detect`, `heads ablate`, `heads concept`: head-level probing, inputs checked before the model loads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from .. import atomic
from ..circuits.ablation import AblationResult, Condition, check_condition, run_ablations
from ..circuits.concept import MODES as CONCEPT_MODES
from ..circuits.concept import ConceptCircuit, concept_circuit
from ..circuits.detectors import DetectorResult, check_detectors, run_detectors
from ..circuits.head import Head
from ..circuits.render import ablation_html, write_detector_outputs
from ..corpus import load_corpus, read_lines
from ..errors import UserError
from ..model import LoadedModel, check_output_dir, load_model, resolve_model_spec
from ..preflight import checked_config, n_heads_of, n_layers_of
from .vectors import load_model_for, open_vectors

Loader = Callable[..., LoadedModel]


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
    return loader(spec, device=device, trust_remote_code=trust_remote_code)


def detect(
    detectors: list[str],
    model: str | None,
    corpus: Path,
    text_file: Path | None,
    length: int,
    n_texts: int,
    output_dir: Path,
    device: str | None = None,
    trust_remote_code: bool = False,
    log=lambda _: None,
    loader: Loader = load_model,
) -> tuple[dict[str, DetectorResult], list[Path]]:
    """Score every head with each detector: heads.json, heads_<detector>.png, heads.html."""
    texts = read_lines(text_file, "--text-file") if text_file is not None else load_corpus(corpus).texts
    check_detectors(detectors)
    if length < 2:
        raise UserError(f"--length must be at least 2 (the detectors compare a token with the one before it), got {length}")
    if n_texts < 1:
        raise UserError(f"--n-texts must be at least 1, got {n_texts}")
    check_output_dir(output_dir)
    loaded = load_named(model, device, trust_remote_code, log, loader)
    results = run_detectors(loaded, detectors, texts, length, n_texts)
    return results, write_detector_outputs(results, output_dir)


def parse_conditions(heads: str, mode: str, position: int | None) -> list[Condition]:
    """'L3H5;L3H5,L4H1' -> one condition per ';' group, each checked (mode, position) before the load."""
    conditions = [Condition(tuple(Head.parse_list(group)), mode, position) for group in heads.split(";") if group.strip()]
    if not conditions:
        raise UserError("--heads names no heads (e.g. L3H5,L4H1)")
    for condition in conditions:
        check_condition(condition)
    return conditions


def ablate(
    heads: str,
    prompts: list[str],
    mode: str,
    position: int | None,
    top_k: int,
    model: str | None,
    output_dir: Path,
    device: str | None = None,
    trust_remote_code: bool = False,
    log=lambda _: None,
    loader: Loader = load_model,
) -> tuple[list[AblationResult], list[Path]]:
    """Ablate heads for one next-token prediction per prompt; ablations.json and ablations.html."""
    conditions = parse_conditions(heads, mode, position)
    check_output_dir(output_dir)
    loaded = load_named(model, device, trust_remote_code, log, loader, [Head(*head) for condition in conditions for head in condition.heads])
    results = run_ablations(loaded, prompts, conditions, top_k)
    files = [
        (output_dir / "ablations.json", atomic.dumps_json([r.to_json() for r in results]).encode()),
        (output_dir / "ablations.html", ablation_html([r.to_json() for r in results]).encode()),
    ]
    atomic.commit_all(files)
    return results, [path for path, _ in files]


def concept(
    concept: str,
    layer: int,
    vectors_dir: Path,
    corpus: Path,
    negatives: int,
    from_layer: int,
    mode: str,
    verify_top: int,
    model: str | None,
    output_dir: Path | None,
    device: str | None = None,
    trust_remote_code: bool = False,
    log=lambda _: None,
    loader: Loader = load_model,
) -> tuple[ConceptCircuit, Path]:
    """Rank heads by the causal effect of mean-ablating them on a concept's readout (estimated by
    attribution and checked on the top `verify_top`, or every head ablated), beside diff-of-means."""
    if mode not in CONCEPT_MODES:
        raise UserError(f"unknown --mode {mode!r}: choose one of {', '.join(CONCEPT_MODES)}")
    if verify_top < 1:
        raise UserError(f"--verify-top must be at least 1, got {verify_top}")
    vectors = open_vectors(vectors_dir)
    vectors.readout.check_concept(concept)
    vectors.readout.check_layers([layer])
    if not 0 <= from_layer <= layer:
        raise UserError(f"--from-layer must be between 0 and {layer}")
    if negatives < 1:
        raise UserError(f"--negatives must be at least 1, got {negatives}")
    loaded_corpus = load_corpus(corpus)
    loaded_corpus.require(concept)
    target = (output_dir or vectors.directory / "heads") / f"concept_{concept}_L{layer}.json"
    check_output_dir(target.parent)
    loaded = load_model_for(vectors, model, device, trust_remote_code, loader, log)
    vector = vectors.readout.vectors[layer][vectors.readout.concepts.index(concept)].float()
    layers = range(from_layer, layer + 1)
    circuit = concept_circuit(
        loaded, loaded_corpus, concept, layer, vector, negatives, layers, max_length=vectors.max_length, mode=mode, verify_top=verify_top
    )
    atomic.write_json(target, circuit.to_json())
    return circuit, target
