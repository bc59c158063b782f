"""`export`: one concept of an extract's vectors in another serving format (llama.cpp / repeng)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..formats.gguf import write_control_vector
from ..layers import parse_layers
from ..rundir import check_output_dir
from .vectors import open_vectors

FORMATS = ("gguf-control",)


def export_control_vector(
    vectors_dir: Path,
    concept: str,
    layers: str | None = None,
    scale: float = 1.0,
    model_hint: str | None = None,
    output: Path | None = None,
    format: str = "gguf-control",
) -> tuple[Path, str]:
    """Write VECTORS/<concept>.gguf (or `output`); `layers` are HF block indices, negatives from the recorded model's end."""
    if format not in FORMATS:
        raise UserError(f"unknown --format {format!r}: choose {', '.join(FORMATS)}")
    vectors = open_vectors(vectors_dir)
    recorded = vectors.record.model if vectors.record else {}
    n_layers = recorded.get("n_layers")
    chosen = parse_layers(layers, n_layers) if layers is not None else None
    hint = model_hint or recorded.get("model_type") or "llama"
    target = Path(output) if output else vectors.directory / f"{concept}.gguf"
    if target.is_dir():
        raise UserError(f"--output {target} is a directory: name the file, e.g. {target / f'{concept}.gguf'}")
    check_output_dir(target.parent, "--output")
    return write_control_vector(vectors.readout, concept, target, hint, chosen, scale, n_layers), hint
