"""The `amygdala-tl` command line: parse, call the library, print. No logic lives here."""

from __future__ import annotations

import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .concepts import CONCEPTS
from .errors import UserError

app = typer.Typer(
    help="Concept readout vectors for a language model's residual stream, through TransformerLens.\n\n"
    "Start with `amygdala-tl extract` (bundled SmolLM2-135M and the shipped corpus by default).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
corpus_app = typer.Typer(help="Inspect and lint a story corpus.", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")

console = Console(stderr=True)
DEFAULT_CORPUS = Path("corpus")


@contextmanager
def user_errors():
    """UserError -> one line on stderr, exit code 2; warnings -> one line each."""
    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001
        console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)

    previous = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    except UserError as error:
        console.print(f"[red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    finally:
        warnings.showwarning = previous


def progress_bar(description: str) -> Progress:
    return Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False)


def progress_callback(progress: Progress):
    """A (done, total) callback whose task (and clock) starts at the first batch, not at model load."""
    task = None

    def update(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            task = progress.add_task("", total=total)
        progress.update(task, completed=done, total=total)

    return update


@app.command()
def extract(
    model: Optional[str] = typer.Option(None, help="HF hub id, local HF directory, or .gguf file. Default: the bundled SmolLM2-135M-Instruct."),
    corpus: Optional[Path] = typer.Option(None, help="Corpus directory with stories/ and paired/. Default: ./corpus."),
    stories_dir: Optional[Path] = typer.Option(None, help="Unpaired stories directory (instead of --corpus)."),
    paired_dir: Optional[Path] = typer.Option(None, help="Paired scenarios directory (instead of --corpus)."),
    layers: Optional[str] = typer.Option(None, help="Comma-separated block indices, negatives from the end. Default: 40/50/60/70/80% depth."),
    output_dir: Path = typer.Option(Path("out"), "--output-dir", "-o", help="Where readout.safetensors, readout.json and extract.json go."),
    method: str = typer.Option("pooled", help="Direction method: pooled (diff-of-means) or subspace (per-story common subspace)."),
    subspace_k: Optional[int] = typer.Option(None, help="Subspace: singular vectors kept per story (default: full rank)."),
    subspace_eigen_k: int = typer.Option(5, help="Subspace: top eigenvectors of M_pos - M_base combined."),
    heads: bool = typer.Option(True, help="Per-head decomposition from attn.hook_z (same forward pass) -> per_head.json."),
    cache_dir: Optional[Path] = typer.Option(None, help="Activation store (default: OUTPUT_DIR/cache). Re-runs reuse it: no forward pass for a text already captured."),
    cache: bool = typer.Option(True, help="Use the activation store (--no-cache: capture everything afresh, store nothing)."),
    quality_report: bool = typer.Option(False, help="Also write quality.json + report.html (metrics, triage, held-out evaluation)."),
    export_best_layers: Optional[int] = typer.Option(None, help="With --quality-report: export only the N layers with the best held-out AUROC."),
    pooling: str = typer.Option("last", help="Pool each story at its last real token (what serving reads) or the mean over tokens."),
    batch_size: int = typer.Option(8, help="Texts per forward pass."),
    max_length: int = typer.Option(512, help="Longer stories keep their last max-length tokens (reported)."),
    min_positives: int = typer.Option(2, help="Concepts with fewer positive stories are left out of the export."),
    dtype: str = typer.Option("fp32", help="Model dtype: fp32, bf16 or fp16 (statistics are always fp32/fp64)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1... Default: cuda if available."),
    device_map: Optional[str] = typer.Option(None, help="accelerate dispatch across GPUs, e.g. 'auto' (instead of --device)."),
) -> None:
    """Learn one direction per concept and layer from the corpus and export it for serving."""
    from .extract import ExtractConfig, run_extract

    if corpus is None and stories_dir is None and paired_dir is None:
        corpus = DEFAULT_CORPUS
    config = ExtractConfig(output_dir=output_dir, model=model, corpus=corpus, stories_dir=stories_dir,
                           paired_dir=paired_dir, layers=layers, method=method, pooling=pooling,
                           batch_size=batch_size, max_length=max_length, min_positives=min_positives,
                           dtype=dtype, device=device, device_map=device_map, heads=heads, cache_dir=cache_dir, use_cache=cache,
                           quality_report=quality_report, export_best_layers=export_best_layers,
                           subspace_k=subspace_k, subspace_eigen_k=subspace_eigen_k)
    with user_errors(), progress_bar("capturing") as progress:
        result = run_extract(config, log=lambda message: console.print(message, highlight=False),
                             on_progress=progress_callback(progress))
    for path in result.files:
        console.print(f"wrote {path}", highlight=False)


@corpus_app.command("check")
def corpus_check(
    corpus: Path = typer.Option(DEFAULT_CORPUS, help="Corpus directory."),
    expect: Optional[str] = typer.Option(None, help="Comma-separated concepts that must be present, or 'all' for the 60 standard ones."),
    min_positives: int = typer.Option(1, help="Minimum positive stories for each expected concept."),
) -> None:
    """Per-concept counts, and every problem by file: exits 1 if there is any."""
    from .corpus_check import check_corpus

    expected = list(CONCEPTS) if expect == "all" else [c.strip() for c in expect.split(",") if c.strip()] if expect else []
    with user_errors():
        stats, problems = check_corpus(corpus, expected, min_positives)
    table = Table(title=f"corpus {corpus}")
    for column in ("concept", "positives", "unpaired", "paired", "mean words"):
        table.add_column(column, justify="left" if column == "concept" else "right")
    for name, concept in stats.items():
        table.add_row(name, str(concept.positives), str(concept.unpaired), str(concept.paired), f"{concept.mean_words:.0f}")
    Console().print(table)
    for problem in problems:
        console.print(f"[red]problem:[/] {problem}", highlight=False, soft_wrap=True)
    console.print(f"{len(stats)} concepts, {sum(s.positives for s in stats.values())} positive stories, {len(problems)} problems")
    if problems:
        raise typer.Exit(1)


@app.command()
def report(
    output_dir: Path = typer.Option(Path("out"), "--output-dir", "-o", help="An extract output directory (extract.json, directions.safetensors)."),
    corpus: Optional[Path] = typer.Option(None, help="The corpus extract used (default: the path recorded in extract.json)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Activation store (default: the one recorded in extract.json)."),
    concept: Optional[str] = typer.Option(None, help="Concept for the per-head heatmap (default: the most head-concentrated)."),
) -> None:
    """Rebuild quality.json and report.html from the activation store, without loading the model."""
    from .quality.output import summary_lines
    from .report import read_sidecar, run_report

    with user_errors():
        quality, paths = run_report(output_dir, corpus, cache_dir, concept)
        n_layers = read_sidecar(output_dir)["model"]["n_layers"]
    for line in summary_lines(quality, n_layers):
        console.print(line, highlight=False)
    for path in paths:
        console.print(f"wrote {path}", highlight=False)


@app.command()
def score(
    texts: Optional[list[str]] = typer.Argument(None, help="Texts to score (or --file)."),
    vectors: Path = typer.Option(Path("out"), help="Directory with readout.safetensors + readout.json."),
    file: Optional[Path] = typer.Option(None, help="Score each non-empty line of this file."),
    model: Optional[str] = typer.Option(None, help="Model (default: the one recorded in extract.json next to the vectors, else the bundled one)."),
    top: int = typer.Option(5, help="Concepts shown per layer."),
    as_json: bool = typer.Option(False, "--json", help="Print every score as JSON."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda..."),
) -> None:
    """Score texts exactly as the serving side does: raw <h, v> at the last position, fp16 vectors."""
    import json as json_module

    from .scoring import score_texts

    with user_errors():
        results = score_texts(vectors, texts or [], file, model, device)
    if as_json:
        typer.echo(json_module.dumps(results, indent=2))
        return
    for result in results:
        Console().print(f"[bold]{result['text'][:100]}[/]", highlight=False)
        for layer, scores in result["scores"].items():
            ranked = sorted(scores.items(), key=lambda item: -item[1])[:top]
            Console().print(f"  layer {layer}: " + ", ".join(f"{name} {value:+.2f}" for name, value in ranked), highlight=False)


def main() -> None:  # pragma: no cover - console entry
    app(sys.argv[1:])
