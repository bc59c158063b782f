"""The `amygdala-tl` command line: parse, call the library, print. No logic lives here."""

from __future__ import annotations

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
heads_app = typer.Typer(help="Head-level circuit probing: detectors, ablations, concept circuits.", no_args_is_help=True)
app.add_typer(heads_app, name="heads")

console = Console(stderr=True, soft_wrap=True)  # one message, one line: greppable, never wrapped
STDOUT = Console(soft_wrap=True)
DEFAULT_CORPUS = Path("corpus")
TRUST_HELP = "Run Python code shipped with the model (auto_map). Off by default: such a model is refused, never prompted for."


@contextmanager
def user_errors():
    """UserError -> one line on stderr, exit code 2; warnings -> one line each."""
    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001
        console.print(f"[yellow]warning:[/] {message}", highlight=False)

    previous = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    except UserError as error:
        console.print(f"[red]error:[/] {error}", highlight=False)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print("[red]interrupted:[/] finished forward passes are kept in the cache; run the same command again to resume",
                      highlight=False)
        raise typer.Exit(130) from None
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
    method: str = typer.Option("pooled", help="pooled (diff-of-means), subspace (per-story common subspace), or the aggregators mean, pca, logistic, logistic_l1."),
    l1_c: float = typer.Option(0.05, help="logistic_l1: inverse L1 strength C (smaller = sparser)."),
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
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
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
                           subspace_k=subspace_k, subspace_eigen_k=subspace_eigen_k, l1_c=l1_c,
                           trust_remote_code=trust_remote_code)
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
    STDOUT.print(table)
    for problem in problems:
        console.print(f"[red]problem:[/] {problem}", highlight=False)
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
    from .rundir import read_sidecar
    from .report import run_report

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
    centered: bool = typer.Option(False, "--centered", help="Subtract each concept's corpus offset mu . v_c (from extract.json): comparable across concepts. Serving reports raw scores."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda..."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
) -> None:
    """Score texts exactly as the serving side does: raw <h, v> at the last position, fp16 vectors."""
    import json as json_module

    from .scoring import score_texts

    with user_errors():
        results = score_texts(vectors, texts or [], file, model, device, centered=centered, trust_remote_code=trust_remote_code,
                              warn=lambda message: console.print(f"[yellow]warning:[/] {message}", highlight=False))
    if as_json:
        typer.echo(json_module.dumps(results, indent=2))
        return
    for result in results:
        STDOUT.print(f"[bold]{result['text'][:100]}[/]", highlight=False)
        for layer, scores in result["scores"].items():
            ranked = sorted(scores.items(), key=lambda item: -item[1])[:top]
            STDOUT.print(f"  layer {layer}: " + ", ".join(f"{name} {value:+.2f}" for name, value in ranked), highlight=False)


@app.command("compare-methods")
def compare_methods_command(
    methods: str = typer.Option("pooled,mean,pca,logistic,logistic_l1,subspace", help="Comma-separated methods to compare."),
    corpus: Path = typer.Option(DEFAULT_CORPUS),
    model: Optional[str] = typer.Option(None),
    layers: Optional[str] = typer.Option(None),
    output_dir: Path = typer.Option(Path("out"), "--output-dir", "-o", help="compare.json goes here; the activation store is reused from OUTPUT_DIR/cache."),
    batch_size: int = typer.Option(8),
    max_length: int = typer.Option(512),
    min_positives: int = typer.Option(2),
    l1_c: float = typer.Option(0.05),
    device: Optional[str] = typer.Option(None),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
) -> None:
    """One capture, every method, one table: held-out AUROC and top-1 at each method's best layer, and time."""
    from .compare import COMPARE_FILE, compare_methods
    from .extract import ExtractConfig

    config = ExtractConfig(output_dir=output_dir, model=model, corpus=corpus, layers=layers, batch_size=batch_size,
                           max_length=max_length, min_positives=min_positives, l1_c=l1_c, device=device,
                           trust_remote_code=trust_remote_code)
    with user_errors(), progress_bar("capturing") as progress:
        rows = compare_methods(config, [m.strip() for m in methods.split(",") if m.strip()],
                               log=lambda message: console.print(message, highlight=False), on_progress=progress_callback(progress))
    table = Table(title="held-out evaluation by method (best layer)")
    for column in ("method", "best layer", "AUROC", "top-1", "centred AUROC / top-1", "random AUROC / top-1", "fit s", "held-out s", "protocol"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["method"], str(row["best_layer"]), f"{row['auroc']:.3f}", f"{row['top1']:.3f}",
                      f"{row['auroc_centered']:.3f} / {row['top1_centered']:.3f}",
                      f"{row['random_auroc']:.2f} / {row['random_top1']:.3f}", f"{row['fit_s']:.2f}", f"{row['heldout_s']:.1f}", row["protocol"])
    STDOUT.print(table)
    console.print(f"wrote {output_dir / COMPARE_FILE}", highlight=False)


@app.command()
def steer(
    prompt: str = typer.Argument(..., help="Prompt to continue."),
    vectors: Path = typer.Option(Path("out"), help="Directory with readout.safetensors + readout.json."),
    concept: str = typer.Option(..., help="Concept to steer toward (negative --alpha: away)."),
    layer: int = typer.Option(..., help="Block whose output (hook_resid_post) gets the vector; must be exported."),
    alpha: float = typer.Option(4.0, help="Strength in units of the layer's mean residual norm on the prompt (BOS excluded): adds alpha * mean_norm * v at every position."),
    max_new_tokens: int = typer.Option(40),
    temperature: float = typer.Option(0.0, help="0: greedy; > 0: sampling with --seed."),
    seed: int = typer.Option(0),
    measure: bool = typer.Option(False, "--measure", help="Instead of generating: steer toward each concept on the corpus baselines and print the readout shift at later exported layers."),
    corpus: Path = typer.Option(DEFAULT_CORPUS, help="For --measure: the neutral texts are this corpus's baselines."),
    model: Optional[str] = typer.Option(None, help="Default: the model recorded next to the vectors."),
    device: Optional[str] = typer.Option(None),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
) -> None:
    """Generate with alpha * v added to the residual stream, unsteered and steered side by side."""
    from .corpus import load_corpus
    from .readout import load_readout
    from .scoring import recorded_model
    from .steer import measure as measure_shift
    from .steer import steer as run_steer

    from .steer import check_steer_args

    with user_errors():
        readout = load_readout(vectors)
        check_steer_args(readout, concept, layer, alpha, temperature, max_new_tokens, measure)
        baselines = [s.text for s in load_corpus(corpus).stories if s.is_baseline] if measure else []
        if measure and not baselines:
            raise UserError(f"--measure needs neutral baseline texts: {corpus} has no paired/<scenario>/baseline.txt")
        loaded = load_for_command(model or recorded_model(vectors, readout), device, trust_remote_code)
        if measure:
            concepts = readout.concepts if concept == "all" else [concept]
            result = measure_shift(loaded, readout, baselines, concepts, layer, alpha)
        else:
            result = run_steer(loaded, readout, concept, layer, alpha, prompt, max_new_tokens, temperature, seed)
    if measure:
        console.print(f"readout shift at layers {result['read_at']} when steering at layer {layer} (alpha {alpha}), {result['n_texts']} baseline texts:", highlight=False)
        for name, row in result["concepts"].items():
            console.print(f"  {name:16s} own {row['own_shift']:+8.2f}   others {row['others_mean_shift']:+8.2f}   own rank {row['rank_of_own']}", highlight=False)
        return
    table = Table(title=f"{concept} at layer {layer}, alpha {alpha} (added norm {result['added_norm']:.1f})")
    table.add_column("unsteered")
    table.add_column("steered")
    table.add_row(prompt + result["unsteered"], prompt + result["steered"])
    STDOUT.print(table)


@app.command()
def export(
    vectors: Path = typer.Option(Path("out"), help="Directory with readout.safetensors + readout.json."),
    format: str = typer.Option("gguf-control", help="gguf-control: a llama.cpp/repeng control vector (direction.<block>, added to that block's output)."),
    concept: str = typer.Option(..., help="Concept to export."),
    layers: Optional[str] = typer.Option(None, help="Comma-separated HF block indices among the exported layers (negative: from the model's end). Default: all; block 0 cannot be steered by llama.cpp."),
    scale: float = typer.Option(1.0, help="Multiplies the unit vectors. llama.cpp's --control-vector-scaled S multiplies further: "
                                          "S = 10 to 30 steers visibly on the bundled model, above 60 breaks the text."),
    model_hint: Optional[str] = typer.Option(None, help="controlvector.model_hint (default: model_type from extract.json, else 'llama')."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Default: VECTORS/<concept>.gguf"),
) -> None:
    """Export one concept as a llama.cpp / repeng control vector (unit-norm vectors times --scale)."""
    from .export_gguf import SCALE_HINT, write_control_vector
    from .model import check_output_dir, parse_layers
    from .rundir import recorded_run
    from .readout import load_readout

    with user_errors():
        if format != "gguf-control":
            raise UserError(f"unknown --format {format!r}: choose gguf-control")
        readout = load_readout(vectors)
        recorded = (recorded_run(vectors, readout) or {}).get("model", {})
        n_layers = recorded.get("n_layers")
        chosen = parse_layers(layers, n_layers) if layers is not None else None
        hint = model_hint or recorded.get("model_type") or "llama"
        target = output or Path(vectors) / f"{concept}.gguf"
        check_output_dir(target.parent, "--output")
        path = write_control_vector(readout, concept, target, hint, chosen, scale, n_layers)
    console.print(f"wrote {path} (model hint {hint!r}; direction.<i> is added to HF block i's output)", highlight=False)
    console.print(f"note: {SCALE_HINT}", highlight=False)


def load_for_command(model: Optional[str], device: Optional[str], trust_remote_code: bool = False):
    from .model import load_model, resolve_model_spec

    spec = resolve_model_spec(model)
    console.print(f"loading {spec.display}", highlight=False)
    return load_model(spec, device=device, trust_remote_code=trust_remote_code)


@heads_app.command("detect")
def heads_detect(
    detectors: str = typer.Option("previous_token,induction,duplicate_token,positional,delimiter,successor,s_inhibition",
                                  help="Comma-separated detectors. Flag thresholds: previous_token 0.4, induction 0.3, duplicate_token 0.3, "
                                       "positional 0.5 (peak-offset mass), delimiter 3.0 (mass / delimiter share), successor 0.2, s_inhibition 0.3."),
    model: Optional[str] = typer.Option(None, help="Model (default: the bundled SmolLM2-135M)."),
    corpus: Path = typer.Option(DEFAULT_CORPUS, help="Natural text for previous-token, positional, delimiter: the corpus stories."),
    text_file: Optional[Path] = typer.Option(None, help="Natural text instead of the corpus: one text per non-empty line."),
    length: int = typer.Option(64, help="Tokens per natural-text sequence."),
    n_texts: int = typer.Option(32, help="Natural-text sequences used."),
    output_dir: Path = typer.Option(Path("out/heads"), "--output-dir", "-o"),
    device: Optional[str] = typer.Option(None),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
) -> None:
    """Score every head with each detector: heads.json, heads_<detector>.png, heads.html."""
    from .circuits.detectors import check_detectors, run_detectors
    from .circuits.render import write_detector_outputs
    from .corpus import load_corpus, read_lines
    from .model import check_output_dir

    names = [name.strip() for name in detectors.split(",") if name.strip()]
    with user_errors():
        texts = read_lines(text_file, "--text-file") if text_file is not None else load_corpus(corpus).texts
        check_detectors(names)
        check_output_dir(output_dir)
        loaded = load_for_command(model, device, trust_remote_code)
        results = run_detectors(loaded, names, texts, length, n_texts)
        paths = write_detector_outputs(results, output_dir)
    for name, result in results.items():
        top = ", ".join(f"{head} {score:.2f}" for head, score in result.top(3))
        console.print(f"{name:16s} flagged {len(result.flagged):3d}  top: {top}", highlight=False)
    console.print(f"wrote {output_dir / 'heads.json'}, {output_dir / 'heads.html'} and {len(paths) - 2} heatmaps", highlight=False)


@heads_app.command("ablate")
def heads_ablate(
    heads: str = typer.Option(..., help="Heads to ablate together, e.g. L3H5,L4H1. Repeat conditions with ';': 'L3H5;L3H5,L4H1'."),
    prompt: list[str] = typer.Option(..., help="Prompt(s) whose next-token prediction is examined (repeatable)."),
    mode: str = typer.Option("zero", help="zero or mean (hook_z), or value (zero the value vectors at --position)."),
    position: Optional[int] = typer.Option(None, help="Ablate at this position only (negative: from the end). Default: all positions."),
    top_k: int = typer.Option(5, help="Logit increases/decreases shown."),
    model: Optional[str] = typer.Option(None),
    output_dir: Path = typer.Option(Path("out/heads"), "--output-dir", "-o"),
    device: Optional[str] = typer.Option(None),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
) -> None:
    """Ablate heads for one next-token prediction; ablations.json and ablations.html."""
    from . import atomic
    from .circuits.ablation import Condition, check_condition, run_ablations
    from .model import check_output_dir
    from .circuits.detectors import parse_head
    from .circuits.render import ablation_html

    with user_errors():
        conditions = [Condition(tuple(parse_head(h) for h in group.split(",") if h.strip()), mode, position)
                      for group in heads.split(";") if group.strip()]
        for condition in conditions:
            check_condition(condition)
        check_output_dir(output_dir)
        loaded = load_for_command(model, device, trust_remote_code)
        results = run_ablations(loaded, prompt, conditions, top_k)
        atomic.commit_all([(output_dir / "ablations.json", atomic.dumps_json(results).encode()),
                           (output_dir / "ablations.html", ablation_html(results).encode())])
    for result in results:
        console.print(f"{result['condition']}: top-1 changed on {result['top1_changed_fraction']:.0%} of prompts", highlight=False)
        for row in result["prompts"]:
            console.print(f"  {row['prompt'][:60]!r}: {row['clean_top1']!r} -> {row['ablated_top1']!r}, "
                          f"top-1 logit {row['clean_top1_logit_change']:+.2f}, KL {row['kl_clean_ablated']:.4f}", highlight=False)
    console.print(f"wrote {output_dir / 'ablations.json'} and {output_dir / 'ablations.html'}", highlight=False)


@heads_app.command("concept")
def heads_concept(
    concept: str = typer.Option(..., help="Concept whose readout is probed."),
    layer: int = typer.Option(..., help="Readout layer (must be exported in --vectors)."),
    vectors: Path = typer.Option(Path("out"), help="Directory with readout.safetensors + readout.json."),
    corpus: Path = typer.Option(DEFAULT_CORPUS, help="Corpus the positives and negatives come from."),
    negatives: int = typer.Option(16, help="Negative stories sampled."),
    from_layer: int = typer.Option(0, help="Ablate heads in layers from_layer..layer (fewer layers: faster)."),
    model: Optional[str] = typer.Option(None, help="Default: the model recorded next to the vectors."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="Default: VECTORS/heads."),
    device: Optional[str] = typer.Option(None),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
) -> None:
    """Rank heads by the causal effect of mean-ablating them on a concept's readout, beside diff-of-means."""
    from . import atomic
    from .circuits.concept import concept_circuit
    from .corpus import load_corpus
    from .readout import load_readout
    from .scoring import recorded_model

    with user_errors():
        readout = load_readout(vectors)
        if concept not in readout.concepts:
            raise UserError(f"concept {concept!r} is not in {vectors}/readout.json")
        if layer not in readout.layers:
            raise UserError(f"layer {layer} is not exported in {vectors} (layers: {', '.join(map(str, readout.layers))})")
        if not 0 <= from_layer <= layer:
            raise UserError(f"--from-layer must be between 0 and {layer}")
        if negatives < 1:
            raise UserError(f"--negatives must be at least 1, got {negatives}")
        loaded_corpus = load_corpus(corpus)
        loaded_corpus.require(concept)
        loaded = load_for_command(model or recorded_model(vectors, readout), device, trust_remote_code)
        vector = readout.vectors[layer][readout.concepts.index(concept)].float()
        report = concept_circuit(loaded, loaded_corpus, concept, layer, vector, negatives, range(from_layer, layer + 1))
        target = (output_dir or Path(vectors) / "heads") / f"concept_{concept}_L{layer}.json"
        atomic.write_json(target, report)
    console.print(f"{concept} at layer {layer}: score gap positives - negatives {report['clean_score_gap']:.2f}; "
                  f"top-5 heads carry {report['top5_share_of_positive_effect']:.0%} of the positive ablation effect", highlight=False)
    console.print("  by ablation:       " + ", ".join(f"{h} {v:+.2f}" for h, v in report["ablation_ranking"][:8]), highlight=False)
    if "diff_of_means_at_layer" in report:
        console.print(f"  diff-of-means @L{layer}: " + ", ".join(f"L{layer}H{h} sel {sel:.2f}" for h, _, sel in report["diff_of_means_at_layer"]["top_heads"][:8]), highlight=False)
    console.print(f"wrote {target}", highlight=False)
