"""`score`: a user's own sentences through exported vectors, exactly as the serving side reads them."""

from __future__ import annotations

from pathlib import Path


from .capture import capture
from .errors import UserError
from .corpus import read_lines
from .rundir import SIDECAR_FILE, recorded_run
from .preflight import preflight
from .model import BUNDLED_HUB_ID, load_model, resolve_model_spec
from .readout import Readout, load_readout, score

DEFAULT_MAX_LENGTH = 512  # extract's default, for vectors without an extract.json


def read_texts(texts: list[str], file: Path | None) -> list[str]:
    texts = list(texts) + (read_lines(file, "--file") if file is not None else [])
    if not texts:
        raise UserError("nothing to score: pass texts or --file")
    return texts


def recorded_model(vectors_dir: Path, readout: Readout) -> str | None:
    """The model extract.json says the vectors came from (None: the bundled one)."""
    sidecar = recorded_run(vectors_dir, readout)
    if sidecar is None:
        return None
    model = sidecar["model"]
    return None if model["label"] == BUNDLED_HUB_ID and model["source"] == "gguf" else model["location"]


def read_offsets(vectors_dir: Path, readout: Readout) -> dict[int, dict[str, float]]:
    """Per-layer, per-concept offsets mu . v_c recorded by extract (for --centered)."""
    sidecar = recorded_run(vectors_dir, readout)
    offsets = sidecar.get("score_offsets") if sidecar else None
    if not offsets or any(str(layer) not in offsets for layer in readout.layers):
        raise UserError(f"--centered needs the score offsets that `amygdala-tl extract` writes to {Path(vectors_dir) / SIDECAR_FILE}")
    return {layer: offsets[str(layer)] for layer in readout.layers}


def score_texts(vectors_dir: Path, texts: list[str], file: Path | None, model: str | None, device: str | None,
                loader=load_model, centered: bool = False, trust_remote_code: bool = False,
                warn=lambda message: None) -> list[dict]:
    """Serving-convention scores of each text; `centered` subtracts each concept's corpus offset.

    A text longer than extract's --max-length keeps its end, as extract did (`warn` names it)."""
    texts = read_texts(texts, file)
    readout = load_readout(vectors_dir)
    offsets = read_offsets(vectors_dir, readout) if centered else None
    sidecar = recorded_run(vectors_dir, readout) or {}
    max_length = int(sidecar.get("max_length", DEFAULT_MAX_LENGTH))
    spec = resolve_model_spec(model or recorded_model(vectors_dir, readout))
    n_layers = preflight(spec, device, trust_remote_code)
    if n_layers is not None and max(readout.layers) >= n_layers:
        raise UserError(f"the vectors use layer {max(readout.layers)}, the model {spec.display} has {n_layers} layers")
    loaded = loader(spec, device=device, trust_remote_code=trust_remote_code)
    if loaded.facts.d_model != readout.hidden_size:
        raise UserError(f"the vectors in {vectors_dir} have hidden size {readout.hidden_size}, the model {spec.display} has {loaded.facts.d_model}")
    if max(readout.layers) >= loaded.facts.n_layers:
        raise UserError(f"the vectors use layer {max(readout.layers)}, the model has {loaded.facts.n_layers} layers")
    acts = capture(loaded, texts, readout.layers, pooling="last", max_length=max_length)
    for index in acts.truncated:
        warn(f"text {index + 1} is longer than {max_length} tokens: scored on its last {max_length}, as extract read the corpus")
    scores = score(readout, {layer: acts.at(layer) for layer in readout.layers})
    shift = (lambda layer, concept: offsets[layer][concept]) if offsets else (lambda layer, concept: 0.0)
    return [
        {"text": text, "centered": centered,
         "scores": {str(layer): {c: round(float(v) - shift(layer, c), 4) for c, v in zip(readout.concepts, scores[layer][i])}
                    for layer in readout.layers}}
        for i, text in enumerate(texts)
    ]
