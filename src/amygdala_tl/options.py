"""Option declarations shared by several commands (typer `Annotated` aliases), declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

APP_HELP = (
    "Concept readout vectors for a language model's residual stream, through TransformerLens.\n\n"
    "Start with `amygdala-tl extract` (bundled SmolLM2-135M and the shipped corpus by default)."
)

Model = Annotated[
    Optional[str],
    typer.Option(
        help="HF hub id, local HF directory, or .gguf file. Default: the bundled SmolLM2-135M-Instruct "
        "(or, for commands reading vectors, the model recorded beside them)."
    ),
]
Device = Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1... Default: cuda if available.")]
TrustRemoteCode = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code", help="Run Python code shipped with the model (auto_map). Off by default: such a model is refused, never prompted for."
    ),
]
CorpusDir = Annotated[Path, typer.Option("--corpus", help="Corpus directory (stories/, paired/).")]
Vectors = Annotated[Path, typer.Option("--vectors", help="Directory with readout.safetensors + readout.json (an extract output).")]
OutputDir = Annotated[Path, typer.Option("--output-dir", "-o", help="Where the outputs go.")]
Layers = Annotated[
    Optional[str],
    typer.Option(help="Comma-separated HF block indices, negatives from the end. Default: every block (restrict the search with this)."),
]
BatchSize = Annotated[int, typer.Option(help="Texts per forward pass.")]
MaxLength = Annotated[int, typer.Option(help="Longer stories keep their last max-length tokens (reported).")]
MinPositives = Annotated[int, typer.Option(help="Concepts with fewer positive stories are left out of the export.")]
MethodParam = Annotated[
    Optional[list[str]],
    typer.Option(
        "--param",
        help="A parameter of the method, NAME=VALUE (repeatable; each method's parameters and defaults are listed under --method).",
    ),
]

# extract's own options
ExtractCorpus = Annotated[Optional[Path], typer.Option(help="Corpus directory with stories/ and paired/. Default: ./corpus.")]
StoriesDir = Annotated[Optional[Path], typer.Option(help="Unpaired stories directory (instead of --corpus).")]
PairedDir = Annotated[Optional[Path], typer.Option(help="Paired scenarios directory (instead of --corpus).")]
Heads = Annotated[bool, typer.Option(help="Per-head decomposition from attn.hook_z (same forward pass) -> per_head.json.")]
CacheDir = Annotated[Optional[Path], typer.Option(help="Activation store (default: OUTPUT_DIR/cache); re-runs reuse it.")]
UseCache = Annotated[bool, typer.Option(help="Use the activation store (--no-cache: capture afresh, store nothing).")]
QualityReport = Annotated[bool, typer.Option(help="Also write quality.json + report.html (metrics, triage, held-out).")]
ExportBestLayers = Annotated[
    Optional[int],
    typer.Option(
        help="With --quality-report: export the N best held-out layers (default 3; 0: every searched layer). Without it every searched layer is exported."
    ),
]
LayersCombined = Annotated[
    Optional[int],
    typer.Option(
        "--layers-combined",
        help="Also read the mean of each concept's z over the K best exported layers (calibration.json's layers_ranked).",
    ),
]
PoolingOption = Annotated[
    str,
    typer.Option(
        "--pooling",
        help="How a text is pooled to learn and read (one choice, declared in the export): mean (every token), last, second_half, tail<N>, ema<N>.",
    ),
]
Dtype = Annotated[str, typer.Option(help="Model dtype: fp32, bf16 or fp16 (statistics are always fp32/fp64).")]
DeviceMap = Annotated[Optional[str], typer.Option(help="accelerate dispatch across GPUs, e.g. 'auto' (instead of --device).")]

# steer and export
Measure = Annotated[
    bool,
    typer.Option(
        "--measure",
        help="Instead of generating: steer toward each concept on the corpus baselines and print the readout shift at later exported layers.",
    ),
]
ExportFormat = Annotated[str, typer.Option(help="gguf-control: a llama.cpp/repeng control vector (direction.<block>, added to that block's output).")]
ExportLayers = Annotated[
    Optional[str],
    typer.Option(
        help="HF block indices among the exported layers (negative: from the model's end). Default: all; block 0 cannot be steered by llama.cpp."
    ),
]
Scale = Annotated[
    float,
    typer.Option(
        help="Multiplies the unit vectors. llama.cpp's --control-vector-scaled S multiplies further: "
        "S = 10 to 30 steers visibly on the bundled model, above 60 breaks the text."
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print every figure as JSON.")]
Heldout = Annotated[Path, typer.Option(help="Development test set: <concept>/*.txt and _neutral/*.txt, never trained on.")]
ExtractHeldout = Annotated[
    Optional[Path],
    typer.Option(help="With --quality-report: development test set to lead the report (default: CORPUS/heldout when present). Never trained on."),
]
DenoiseK = Annotated[
    int,
    typer.Option(
        help="Project the top-k principal components of the scenario baselines (neutral text) out of "
        "the activations before learning and out of the directions after (0: off)."
    ),
]

# heads concept
ConceptMode = Annotated[
    str,
    typer.Option(
        "--mode",
        help="attribution: estimate every head's mean-ablation effect from one forward + backward pass per batch, then "
        "ablate the top --verify-top for real and report the rank agreement; ablation: ablate every head (one forward each, slow).",
    ),
]
VerifyTop = Annotated[int, typer.Option(help="Heads ablated for real to check the estimates (attribution mode); the top-n compared (ablation mode).")]
