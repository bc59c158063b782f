"""`score`: a user's own sentences through exported vectors, exactly as the serving side reads them."""

from __future__ import annotations

from pathlib import Path


from .capture import capture
from .errors import UserError
from .extract import SIDECAR_FILE, read_sidecar
from .model import BUNDLED_HUB_ID, load_model, resolve_model_spec
from .readout import load_readout, score


def read_texts(texts: list[str], file: Path | None) -> list[str]:
    texts = list(texts)
    if file is not None:
        if not Path(file).is_file():
            raise UserError(f"--file not found: {file}")
        texts += [line.strip() for line in Path(file).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise UserError("nothing to score: pass texts or --file")
    return texts


def recorded_model(vectors_dir: Path) -> str | None:
    """The model extract.json says the vectors came from (None: the bundled one)."""
    if not (Path(vectors_dir) / SIDECAR_FILE).is_file():
        return None
    model = read_sidecar(vectors_dir)["model"]
    return None if model["label"] == BUNDLED_HUB_ID and model["source"] == "gguf" else model["location"]


def read_offsets(vectors_dir: Path, readout) -> dict[int, dict[str, float]]:
    """Per-layer, per-concept offsets mu . v_c recorded by extract (for --centered)."""
    sidecar = Path(vectors_dir) / SIDECAR_FILE
    offsets = read_sidecar(vectors_dir).get("score_offsets") if sidecar.is_file() else None
    if not offsets or any(str(layer) not in offsets for layer in readout.layers):
        raise UserError(f"--centered needs the score offsets that `amygdala-tl extract` writes to {sidecar}")
    return {layer: offsets[str(layer)] for layer in readout.layers}


def score_texts(vectors_dir: Path, texts: list[str], file: Path | None, model: str | None, device: str | None,
                loader=load_model, centered: bool = False) -> list[dict]:
    """Serving-convention scores of each text; `centered` subtracts each concept's corpus offset."""
    texts = read_texts(texts, file)
    readout = load_readout(vectors_dir)
    offsets = read_offsets(vectors_dir, readout) if centered else None
    spec = resolve_model_spec(model or recorded_model(vectors_dir))
    loaded = loader(spec, device=device)
    if loaded.facts.d_model != readout.hidden_size:
        raise UserError(f"the vectors in {vectors_dir} have hidden size {readout.hidden_size}, the model {spec.display} has {loaded.facts.d_model}")
    if max(readout.layers) >= loaded.facts.n_layers:
        raise UserError(f"the vectors use layer {max(readout.layers)}, the model has {loaded.facts.n_layers} layers")
    acts = capture(loaded, texts, readout.layers, pooling="last", max_length=10**6)
    scores = score(readout, {layer: acts.at(layer) for layer in readout.layers})
    shift = (lambda layer, concept: offsets[layer][concept]) if offsets else (lambda layer, concept: 0.0)
    return [
        {"text": text, "centered": centered,
         "scores": {str(layer): {c: round(float(v) - shift(layer, c), 4) for c, v in zip(readout.concepts, scores[layer][i])}
                    for layer in readout.layers}}
        for i, text in enumerate(texts)
    ]
