"""The `amygdala-tl` command line: parse, call a pipeline, print. No logic lives here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from . import options as opt
from .circuits.detectors import DETECTORS, thresholds_help
from .console import progress_bar, progress_callback, say, stdout, user_errors, warn
from .corpus import CONCEPTS
from .directions.registry import METHODS

app = typer.Typer(help="Concept readout vectors for a language model's residual stream, through TransformerLens.\n\n"
                       "Start with `amygdala-tl extract` (bundled SmolLM2-135M and the shipped corpus by default).",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
corpus_app = typer.Typer(help="Inspect and lint a story corpus.", no_args_is_help=True)
heads_app = typer.Typer(help="Head-level circuit probing: detectors, ablations, concept circuits.", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")
app.add_typer(heads_app, name="heads")
METHOD_HELP = "; ".join(f"{m.name}: {m.summary}" for m in METHODS.values())


@app.command()
def extract(
    model: opt.Model = None,
    corpus: Annotated[Optional[Path], typer.Option(help="Corpus directory with stories/ and paired/. Default: ./corpus.")] = None,
    stories_dir: Annotated[Optional[Path], typer.Option(help="Unpaired stories directory (instead of --corpus).")] = None,
    paired_dir: Annotated[Optional[Path], typer.Option(help="Paired scenarios directory (instead of --corpus).")] = None,
    layers: opt.Layers = None,
    output_dir: opt.OutputDir = Path("out"),
    method: Annotated[str, typer.Option(help=METHOD_HELP)] = "pooled",
    l1_c: opt.L1C = 0.05,
    subspace_k: Annotated[Optional[int], typer.Option(help="Subspace: singular vectors kept per story (default: full rank).")] = None,
    subspace_eigen_k: Annotated[int, typer.Option(help="Subspace: top eigenvectors of M_pos - M_base combined.")] = 5,
    heads: Annotated[bool, typer.Option(help="Per-head decomposition from attn.hook_z (same forward pass) -> per_head.json.")] = True,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Activation store (default: OUTPUT_DIR/cache); re-runs reuse it.")] = None,
    cache: Annotated[bool, typer.Option(help="Use the activation store (--no-cache: capture afresh, store nothing).")] = True,
    quality_report: Annotated[bool, typer.Option(help="Also write quality.json + report.html (metrics, triage, held-out).")] = False,
    export_best_layers: Annotated[Optional[int], typer.Option(help="With --quality-report: export only the N best held-out layers.")] = None,
    pooling: Annotated[str, typer.Option(help="Pool each story at its last real token (what serving reads) or the token mean.")] = "last",
    batch_size: opt.BatchSize = 8,
    max_length: opt.MaxLength = 512,
    min_positives: opt.MinPositives = 2,
    dtype: Annotated[str, typer.Option(help="Model dtype: fp32, bf16 or fp16 (statistics are always fp32/fp64).")] = "fp32",
    device: opt.Device = None,
    device_map: Annotated[Optional[str], typer.Option(help="accelerate dispatch across GPUs, e.g. 'auto' (instead of --device).")] = None,
    trust_remote_code: opt.TrustRemoteCode = False,
) -> None:
    """Learn one direction per concept and layer from the corpus and export it for serving."""
    from .pipelines.extract import ExtractConfig, run_extract

    if corpus is None and stories_dir is None and paired_dir is None:
        corpus = opt.DEFAULT_CORPUS
    config = ExtractConfig(output_dir, model, corpus, stories_dir, paired_dir, layers, method, pooling, batch_size, max_length,
                           min_positives, dtype, device, device_map, heads, cache_dir, cache, subspace_k, subspace_eigen_k, l1_c,
                           quality_report, export_best_layers, trust_remote_code)
    with user_errors(), progress_bar("capturing") as progress:
        result = run_extract(config, log=say, on_progress=progress_callback(progress))
    for path in result.files:
        say(f"wrote {path}")


@corpus_app.command("check")
def corpus_check(
    corpus: opt.CorpusDir = opt.DEFAULT_CORPUS,
    expect: Annotated[Optional[str], typer.Option(help="Comma-separated concepts that must be present, or 'all' for the 60.")] = None,
    min_positives: Annotated[int, typer.Option(help="Minimum positive stories for each expected concept.")] = 1,
) -> None:
    """Per-concept counts, and every problem by file (held-out set included): exits 1 if there is any."""
    from .corpus import check_corpus

    expected = list(CONCEPTS) if expect == "all" else [c.strip() for c in expect.split(",") if c.strip()] if expect else []
    with user_errors():
        stats, problems = check_corpus(corpus, expected, min_positives)
    table = Table(title=f"corpus {corpus}")
    for column in ("concept", "positives", "unpaired", "paired", "mean words"):
        table.add_column(column, justify="left" if column == "concept" else "right")
    for name, concept in stats.items():
        table.add_row(name, str(concept.positives), str(concept.unpaired), str(concept.paired), f"{concept.mean_words:.0f}")
    stdout.print(table)
    for problem in problems:
        say(f"[red]problem:[/] {problem}")
    say(f"{len(stats)} concepts, {sum(s.positives for s in stats.values())} positive stories, {len(problems)} problems")
    if problems:
        raise typer.Exit(1)


@app.command()
def report(
    output_dir: opt.OutputDir = Path("out"),
    corpus: Annotated[Optional[Path], typer.Option(help="The corpus extract used (default: the one recorded in extract.json).")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Activation store (default: the one recorded in extract.json).")] = None,
    concept: Annotated[Optional[str], typer.Option(help="Concept for the per-head heatmap (default: the most head-concentrated).")] = None,
) -> None:
    """Rebuild quality.json and report.html from the activation store, without loading the model."""
    from .pipelines.report import run_report
    from .quality.output import summary_lines
    from .rundir import RunRecord

    with user_errors():
        quality, paths = run_report(output_dir, corpus, cache_dir, concept)
        n_layers = RunRecord.read(output_dir).model["n_layers"]
    for line in summary_lines(quality, n_layers):
        say(line)
    for path in paths:
        say(f"wrote {path}")


@app.command()
def score(
    texts: Annotated[Optional[list[str]], typer.Argument(help="Texts to score (or --file).")] = None,
    vectors: opt.Vectors = Path("out"),
    file: Annotated[Optional[Path], typer.Option(help="Score each non-empty line of this file.")] = None,
    model: opt.Model = None,
    top: Annotated[int, typer.Option(help="Concepts shown per layer.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print every score as JSON.")] = False,
    centered: Annotated[bool, typer.Option("--centered", help="Subtract each concept's corpus offset mu . v_c (from extract.json). "
                                                              "Serving reports raw scores.")] = False,
    device: opt.Device = None,
    trust_remote_code: opt.TrustRemoteCode = False,
) -> None:
    """Score texts exactly as the serving side does: raw <h, v> at the last position, fp16 vectors."""
    from .pipelines.score import score_texts

    with user_errors():
        results = score_texts(vectors, texts or [], file, model, device, centered=centered, trust_remote_code=trust_remote_code, warn=warn)
    if as_json:
        typer.echo(json.dumps([result.to_json() for result in results], indent=2))
        return
    for result in results:
        stdout.print(f"[bold]{result.text[:100]}[/]", highlight=False)
        for layer, scores in result.scores.items():
            ranked = sorted(scores.items(), key=lambda item: -item[1])[:top]
            stdout.print(f"  layer {layer}: " + ", ".join(f"{name} {value:+.2f}" for name, value in ranked), highlight=False)


@app.command("compare-methods")
def compare_methods_command(
    methods: Annotated[str, typer.Option(help="Comma-separated methods to compare.")] = ",".join(METHODS),
    corpus: opt.CorpusDir = opt.DEFAULT_CORPUS,
    model: opt.Model = None,
    layers: opt.Layers = None,
    output_dir: opt.OutputDir = Path("out"),
    batch_size: opt.BatchSize = 8,
    max_length: opt.MaxLength = 512,
    min_positives: opt.MinPositives = 2,
    l1_c: opt.L1C = 0.05,
    device: opt.Device = None,
    trust_remote_code: opt.TrustRemoteCode = False,
) -> None:
    """One capture, every method, one table: held-out AUROC and top-1 at each method's best layer, and time."""
    from .pipelines.compare import COMPARE_FILE, compare_methods
    from .pipelines.extract import ExtractConfig

    config = ExtractConfig(output_dir=output_dir, model=model, corpus=corpus, layers=layers, batch_size=batch_size, max_length=max_length,
                           min_positives=min_positives, l1_c=l1_c, device=device, trust_remote_code=trust_remote_code)
    with user_errors(), progress_bar("capturing") as progress:
        rows = compare_methods(config, [m.strip() for m in methods.split(",") if m.strip()], log=say, on_progress=progress_callback(progress))
    table = Table(title="held-out evaluation by method (best layer)")
    for column in ("method", "best layer", "AUROC", "top-1", "centred AUROC / top-1", "random AUROC / top-1", "fit s", "held-out s", "protocol"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.method, str(row.best_layer), f"{row.auroc:.3f}", f"{row.top1:.3f}", f"{row.auroc_centered:.3f} / {row.top1_centered:.3f}",
                      f"{row.random_auroc:.2f} / {row.random_top1:.3f}", f"{row.fit_s:.2f}", f"{row.heldout_s:.1f}", row.protocol)
    stdout.print(table)
    say(f"wrote {output_dir / COMPARE_FILE}")


@app.command()
def steer(
    prompt: Annotated[str, typer.Argument(help="Prompt to continue.")],
    concept: Annotated[str, typer.Option(help="Concept to steer toward (negative --alpha: away; 'all' with --measure).")],
    layer: Annotated[int, typer.Option(help="Block whose output (hook_resid_post) gets the vector; must be exported.")],
    vectors: opt.Vectors = Path("out"),
    alpha: Annotated[float, typer.Option(help="Strength in units of the layer's mean residual norm on the prompt (BOS excluded).")] = 4.0,
    max_new_tokens: int = 40,
    temperature: Annotated[float, typer.Option(help="0: greedy; > 0: sampling with --seed.")] = 0.0,
    seed: int = 0,
    measure: Annotated[bool, typer.Option("--measure", help="Instead of generating: steer toward each concept on the corpus "
                                                            "baselines and print the readout shift at later exported layers.")] = False,
    corpus: opt.CorpusDir = opt.DEFAULT_CORPUS,
    model: opt.Model = None,
    device: opt.Device = None,
    trust_remote_code: opt.TrustRemoteCode = False,
) -> None:
    """Generate with alpha * v added to the residual stream, unsteered and steered side by side."""
    from .pipelines.steer import run_steer_command

    with user_errors():
        result = run_steer_command(vectors, concept, layer, alpha, prompt, max_new_tokens, temperature, seed, measure, corpus, model,
                                   device, trust_remote_code, log=say)
    if measure:
        say(f"readout shift at layers {result.read_at} when steering at layer {layer} (alpha {alpha}), {result.n_texts} baseline texts:")
        for name, row in result.concepts.items():
            say(f"  {name:16s} own {row.own_shift:+8.2f}   others {row.others_mean_shift:+8.2f}   own rank {row.rank_of_own}")
        return
    table = Table(title=f"{concept} at layer {layer}, alpha {alpha} (added norm {result.added_norm:.1f})")
    table.add_column("unsteered")
    table.add_column("steered")
    table.add_row(prompt + result.unsteered, prompt + result.steered)
    stdout.print(table)


@app.command()
def export(
    concept: Annotated[str, typer.Option(help="Concept to export.")],
    vectors: opt.Vectors = Path("out"),
    format: Annotated[str, typer.Option(help="gguf-control: a llama.cpp/repeng control vector (direction.<block>, added to that "
                                             "block's output).")] = "gguf-control",
    layers: Annotated[Optional[str], typer.Option(help="HF block indices among the exported layers (negative: from the model's end). "
                                                       "Default: all; block 0 cannot be steered by llama.cpp.")] = None,
    scale: Annotated[float, typer.Option(help="Multiplies the unit vectors. llama.cpp's --control-vector-scaled S multiplies further: "
                                              "S = 10 to 30 steers visibly on the bundled model, above 60 breaks the text.")] = 1.0,
    model_hint: Annotated[Optional[str], typer.Option(help="controlvector.model_hint (default: model_type from extract.json).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Default: VECTORS/<concept>.gguf")] = None,
) -> None:
    """Export one concept as a llama.cpp / repeng control vector (unit-norm vectors times --scale)."""
    from .formats.gguf import SCALE_HINT
    from .pipelines.export import export_control_vector

    with user_errors():
        path, hint = export_control_vector(vectors, concept, layers, scale, model_hint, output, format)
    say(f"wrote {path} (model hint {hint!r}; direction.<i> is added to HF block i's output)")
    say(f"note: {SCALE_HINT}")


@heads_app.command("detect")
def heads_detect(
    detectors: Annotated[str, typer.Option(help=f"Comma-separated detectors. Flag thresholds: {thresholds_help()}.")] = ",".join(DETECTORS),
    model: opt.Model = None,
    corpus: Annotated[Path, typer.Option(help="Natural text for previous-token, positional, delimiter: the corpus stories.")] = opt.DEFAULT_CORPUS,
    text_file: Annotated[Optional[Path], typer.Option(help="Natural text instead of the corpus: one text per non-empty line.")] = None,
    length: Annotated[int, typer.Option(help="Tokens per natural-text sequence.")] = 64,
    n_texts: Annotated[int, typer.Option(help="Natural-text sequences used.")] = 32,
    output_dir: opt.OutputDir = Path("out/heads"),
    device: opt.Device = None,
    trust_remote_code: opt.TrustRemoteCode = False,
) -> None:
    """Score every head with each detector: heads.json, heads_<detector>.png, heads.html."""
    from .pipelines.heads import detect

    names = [name.strip() for name in detectors.split(",") if name.strip()]
    with user_errors():
        results, paths = detect(names, model, corpus, text_file, length, n_texts, output_dir, device, trust_remote_code, log=say)
    for name, result in results.items():
        top = ", ".join(f"{head} {score:.2f}" for head, score in result.top(3))
        say(f"{name:16s} flagged {len(result.flagged):3d}  top: {top}")
    say(f"wrote {output_dir / 'heads.json'}, {output_dir / 'heads.html'} and {len(paths) - 2} heatmaps")


@heads_app.command("ablate")
def heads_ablate(
    heads: Annotated[str, typer.Option(help="Heads to ablate together, e.g. L3H5,L4H1. Several conditions with ';': 'L3H5;L3H5,L4H1'.")],
    prompt: Annotated[list[str], typer.Option(help="Prompt(s) whose next-token prediction is examined (repeatable).")],
    mode: Annotated[str, typer.Option(help="zero or mean (hook_z), or value (zero the value vectors at --position).")] = "zero",
    position: Annotated[Optional[int], typer.Option(help="Ablate at this position only (negative: from the end). Default: all.")] = None,
    top_k: Annotated[int, typer.Option(help="Logit increases/decreases shown.")] = 5,
    model: opt.Model = None,
    output_dir: opt.OutputDir = Path("out/heads"),
    device: opt.Device = None,
    trust_remote_code: opt.TrustRemoteCode = False,
) -> None:
    """Ablate heads for one next-token prediction; ablations.json and ablations.html."""
    from .pipelines.heads import ablate

    with user_errors():
        results, paths = ablate(heads, prompt, mode, position, top_k, model, output_dir, device, trust_remote_code, log=say)
    for result in results:
        say(f"{result.condition}: top-1 changed on {result.top1_changed_fraction:.0%} of prompts")
        for row in result.prompts:
            say(f"  {row.prompt[:60]!r}: {row.clean_top1!r} -> {row.ablated_top1!r}, top-1 logit {row.clean_top1_logit_change:+.2f}, "
                f"KL {row.kl_clean_ablated:.4f}")
    say(f"wrote {paths[0]} and {paths[1]}")


@heads_app.command("concept")
def heads_concept(
    concept: Annotated[str, typer.Option(help="Concept whose readout is probed.")],
    layer: Annotated[int, typer.Option(help="Readout layer (must be exported in --vectors).")],
    vectors: opt.Vectors = Path("out"),
    corpus: opt.CorpusDir = opt.DEFAULT_CORPUS,
    negatives: Annotated[int, typer.Option(help="Negative stories sampled.")] = 16,
    from_layer: Annotated[int, typer.Option(help="Ablate heads in layers from_layer..layer (fewer layers: faster).")] = 0,
    model: opt.Model = None,
    output_dir: Annotated[Optional[Path], typer.Option("--output-dir", "-o", help="Default: VECTORS/heads.")] = None,
    device: opt.Device = None,
    trust_remote_code: opt.TrustRemoteCode = False,
) -> None:
    """Rank heads by the causal effect of mean-ablating them on a concept's readout, beside diff-of-means."""
    from .pipelines.heads import concept as concept_pipeline

    with user_errors():
        circuit, target = concept_pipeline(concept, layer, vectors, corpus, negatives, from_layer, model, output_dir, device,
                                           trust_remote_code, log=say)
    say(f"{concept} at layer {layer}: score gap positives - negatives {circuit.clean_score_gap:.2f}; "
        f"top-5 heads carry {circuit.top5_share_of_positive_effect:.0%} of the positive ablation effect")
    say("  by ablation:       " + ", ".join(f"{h} {v:+.2f}" for h, v in circuit.ablation_ranking[:8]))
    if circuit.diff_of_means_at_layer is not None:
        say(f"  diff-of-means @L{layer}: " + ", ".join(f"L{layer}H{h} sel {sel:.2f}" for h, _, sel in circuit.diff_of_means_at_layer["top_heads"][:8]))
    say(f"wrote {target}")
