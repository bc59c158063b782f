"""`export`: one concept of an extract's vectors in another serving format (llama.cpp / repeng)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..formats.gguf import write_control_vector
from ..formats.readout import Readout
from ..layers import parse_layers
from ..rundir import check_output_dir
from .vectors import open_vectors

# writer(readout, concept, path, model_hint, layers (None: every exported layer), scale, n_layers (None: unknown)) -> path
Writer = Callable[[Readout, str, Path, str, list[int] | None, float, int | None], Path]


@dataclass(frozen=True)
class ExportFormat:
    """A format `export --format` writes one concept in: its writer and the suffix of its default file name."""

    write: Writer
    suffix: str


# One table: `export` checks --format against it and writes with the format's writer.
FORMATS: dict[str, ExportFormat] = {
    "gguf-control": ExportFormat(write_control_vector, ".gguf"),
}


@dataclass(kw_only=True)
class ExportConfig:
    """`export`'s options and their defaults (the command line builds one by keyword)."""

    concept: str
    vectors: Path = Path("out")
    format: str = "gguf-control"
    layers: str | None = None  # HF block indices among the exported layers, negatives from the recorded model's end; None: all
    scale: float = 1.0  # multiplies the unit vectors
    model_hint: str | None = None  # controlvector.model_hint (default: model_type from extract.json)
    output: Path | None = None  # default: <vectors>/<concept><the format's suffix>


def export_control_vector(config: ExportConfig) -> tuple[Path, str]:
    """Write VECTORS/<concept>.gguf (or `output`); `layers` are HF block indices, negatives from the recorded model's end."""
    concept = config.concept
    if config.format not in FORMATS:
        raise UserError(f"unknown --format {config.format!r}: choose {', '.join(FORMATS)}")
    fmt = FORMATS[config.format]
    vectors = open_vectors(config.vectors)
    recorded = vectors.record.model if vectors.record else {}
    n_layers = recorded.get("n_layers")
    chosen = parse_layers(config.layers, n_layers) if config.layers is not None else None
    hint = config.model_hint or recorded.get("model_type") or "llama"
    target = Path(config.output) if config.output else vectors.directory / f"{concept}{fmt.suffix}"
    if target.is_dir():
        raise UserError(f"--output {target} is a directory: name the file, e.g. {target / f'{concept}{fmt.suffix}'}")
    check_output_dir(target.parent, "--output")
    return fmt.write(vectors.readout, concept, target, hint, chosen, config.scale, n_layers), hint
