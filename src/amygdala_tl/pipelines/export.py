"""`export`: one concept of an extract's vectors in another serving format (llama.cpp / repeng)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..formats.gguf import write_control_vector
from ..model import check_output_dir, parse_layers
from .vectors import open_vectors

FORMATS = ("gguf-control",)


@dataclass(kw_only=True)
class ExportConfig:
    """`export`'s options and their defaults (the command line builds one by keyword)."""

    concept: str
    vectors: Path = Path("out")
    format: str = "gguf-control"
    layers: str | None = None  # HF block indices among the exported layers, negatives from the recorded model's end; None: all
    scale: float = 1.0  # multiplies the unit vectors
    model_hint: str | None = None  # controlvector.model_hint (default: model_type from extract.json)
    output: Path | None = None  # default: <vectors>/<concept>.gguf


def export_control_vector(config: ExportConfig) -> tuple[Path, str]:
    """Write VECTORS/<concept>.gguf (or `output`); `layers` are HF block indices, negatives from the recorded model's end."""
    concept = config.concept
    if config.format not in FORMATS:
        raise UserError(f"unknown --format {config.format!r}: choose {', '.join(FORMATS)}")
    vectors = open_vectors(config.vectors)
    recorded = vectors.record.model if vectors.record else {}
    n_layers = recorded.get("n_layers")
    chosen = parse_layers(config.layers, n_layers) if config.layers is not None else None
    hint = config.model_hint or recorded.get("model_type") or "llama"
    target = Path(config.output) if config.output else vectors.directory / f"{concept}.gguf"
    if target.is_dir():
        raise UserError(f"--output {target} is a directory: name the file, e.g. {target / f'{concept}.gguf'}")
    check_output_dir(target.parent, "--output")
    return write_control_vector(vectors.readout, concept, target, hint, chosen, config.scale, n_layers), hint
