"""Option declarations shared by several commands (typer `Annotated` aliases), declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

DEFAULT_CORPUS = Path("corpus")

Model = Annotated[Optional[str], typer.Option(help="HF hub id, local HF directory, or .gguf file. Default: the bundled SmolLM2-135M-Instruct "
                                                   "(or, for commands reading vectors, the model recorded beside them).")]
Device = Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1... Default: cuda if available.")]
TrustRemoteCode = Annotated[bool, typer.Option("--trust-remote-code", help="Run Python code shipped with the model (auto_map). Off by "
                                                                         "default: such a model is refused, never prompted for.")]
CorpusDir = Annotated[Path, typer.Option("--corpus", help="Corpus directory (stories/, paired/).")]
Vectors = Annotated[Path, typer.Option("--vectors", help="Directory with readout.safetensors + readout.json (an extract output).")]
OutputDir = Annotated[Path, typer.Option("--output-dir", "-o", help="Where the outputs go.")]
Layers = Annotated[Optional[str], typer.Option(help="Comma-separated HF block indices, negatives from the end. Default: 40/50/60/70/80% depth.")]
BatchSize = Annotated[int, typer.Option(help="Texts per forward pass.")]
MaxLength = Annotated[int, typer.Option(help="Longer stories keep their last max-length tokens (reported).")]
MinPositives = Annotated[int, typer.Option(help="Concepts with fewer positive stories are left out of the export.")]
L1C = Annotated[float, typer.Option(help="logistic_l1: inverse L1 strength C (smaller = sparser).")]
