"""The `amygdala-tl` command line: parse, call a pipeline, print. No logic lives here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import options as opt
from .capture.pooling import COMPARED_POOLINGS, DEFAULT_POOLING
from .circuits.detectors import DETECTORS, thresholds_help
from .console import print_table, progress_bar, progress_callback, say, stdout, user_errors, warn
from .directions.registry import METHODS, parse_params

app = typer.Typer(help=opt.APP_HELP, no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
corpus_app = typer.Typer(help="Inspect and lint a story corpus.", no_args_is_help=True)
heads_app = typer.Typer(help="Head-level circuit probing: detectors, ablations, concept circuits.", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")
app.add_typer(heads_app, name="heads")
METHOD_HELP = "; ".join(f"{m.name}: {m.summary}{m.params_help()}" for m in METHODS.values())


@app.command()
def extract(
    model: opt.Model = None,
    corpus: opt.ExtractCorpus = None,
    stories_dir: opt.StoriesDir = None,
    paired_dir: opt.PairedDir = None,
    layers: opt.Layers = None,
    output_dir: opt.OutputDir = Path("out"),
    method: Annotated[str, typer.Option(help=METHOD_HELP)] = "lda",
    param: opt.MethodParam = None,
    denoise_k: opt.DenoiseK = 0,
    heads: opt.Heads = True,
    cache_dir: opt.CacheDir = None,
    cache: opt.UseCache = True,
    quality_report: opt.QualityReport = False,
    export_best_layers: opt.ExportBestLayers = None,
    pooling: opt.PoolingOption = DEFAULT_POOLING,
    batch_size: opt.BatchSize = 8,
    max_length: opt.MaxLength = 512,
    min_positives: opt.MinPositives = 2,
    dtype: opt.Dtype = "fp32",
    device: opt.Device = None,
    device_map: opt.DeviceMap = None,
    trust_remote_code: opt.TrustRemoteCode = False,
    heldout: opt.ExtractHeldout = None,
) -> None:
    """Learn one direction per concept and layer from the corpus and export it for serving."""
    options = dict(locals())  # the parameters, named as ExtractConfig's fields
    from .pipelines.extract import ExtractConfig, run_extract

    options["use_cache"] = options.pop("cache")
    if corpus is None and stories_dir is None and paired_dir is None:
        options["corpus"] = opt.DEFAULT_CORPUS
    with user_errors(), progress_bar("capturing") as progress:
        options["params"] = parse_params(options.pop("param") or [])
        result = run_extract(ExtractConfig(**options), log=say, on_progress=progress_callback(progress))
    say("\n".join(f"wrote {path}" for path in result.files))


@corpus_app.command("check")
def corpus_check(
    corpus: opt.CorpusDir = opt.DEFAULT_CORPUS,
    expect: Annotated[Optional[str], typer.Option(help="Comma-separated concepts that must be present, or 'all' for the 60.")] = None,
    min_positives: Annotated[int, typer.Option(help="Minimum positive stories for each expected concept.")] = 1,
) -> None:
    """Per-concept counts, and every problem by file (held-out set included): exits 1 if there is any."""
    from .corpus import CONCEPTS, check_corpus

    expected = list(CONCEPTS) if expect == "all" else [c.strip() for c in expect.split(",") if c.strip()] if expect else []
    with user_errors():
        stats, problems = check_corpus(corpus, expected, min_positives)
    rows = [[name, str(c.positives), str(c.unpaired), str(c.paired), f"{c.mean_words:.0f}"] for name, c in stats.items()]
    print_table(f"corpus {corpus}", ["concept", "positives", "unpaired", "paired", "mean words"], rows)
    for line in (f"[red]problem:[/] {problem}" for problem in problems):
        say(line)
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

    with user_errors():
        quality, paths = run_report(output_dir, corpus, cache_dir, concept)
    for line in summary_lines(quality):
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
    as_json: opt.AsJson = False,
    centered: Annotated[
        bool, typer.Option("--centered", help="Subtract each concept's corpus offset mu . v_c (from extract.json). Serving reports raw scores.")
    ] = False,
    device: opt.Device = None,
    trust_remote_code: opt.TrustRemoteCode = False,
) -> None:
    """Score texts exactly as the serving side does: raw <h, v> at the last position, fp16 vectors."""
    from .pipelines.score import check_top, score_texts

    with user_errors():
        check_top(top)
        results = score_texts(vectors, texts or [], file, model, device, centered=centered, trust_remote_code=trust_remote_code, warn=warn)
    if as_json:
        typer.echo(json.dumps([result.to_json() for result in results], indent=2))
        return
    for line in (line for result in results for line in result.summary(top)):
        stdout.print(line, highlight=False)


@app.command()
def evaluate(
    vectors: opt.Vectors = Path("out"),
    heldout: opt.Heldout = opt.DEFAULT_HELDOUT,
    model: opt.Model = None,
    as_json: opt.AsJson = False,
    device: opt.Device = None,
    trust_remote_code: opt.TrustRemoteCode = False,
) -> None:
    """The exported vectors on a separately written test set, read as the server reads them (z-scored per concept)."""
    from .pipelines.evaluate import COLUMNS, evaluate_vectors

    with user_errors():
        result = evaluate_vectors(vectors, heldout, model, device, trust_remote_code, log=say)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    print_table(result.title(), COLUMNS, result.rows(), first_left=False)
    say(f"best layer {result.best_layer} (*); AUROC one-vs-rest per concept, top-1 among all {result.concepts_exported} exported concepts")


@app.command("compare-methods")
def compare_methods_command(
    methods: Annotated[str, typer.Option(help="Comma-separated methods to compare.")] = ",".join(METHODS),
    poolings: Annotated[str, typer.Option(help="Comma-separated poolings (each learned and read its own way).")] = ",".join(COMPARED_POOLINGS),
    corpus: opt.CorpusDir = opt.DEFAULT_CORPUS,
    model: opt.Model = None,
    layers: opt.Layers = None,
    output_dir: opt.OutputDir = Path("out"),
    batch_size: opt.BatchSize = 8,
    max_length: opt.MaxLength = 512,
    min_positives: opt.MinPositives = 2,
    param: opt.MethodParam = None,
    device: opt.Device = None,
    trust_remote_code: opt.TrustRemoteCode = False,
) -> None:
    """Every method under every pooling, one table: held-out AUROC and top-1 at each row's best layer, and time."""
    options = dict(locals())  # the parameters, named as ExtractConfig's fields
    from .pipelines.compare import COMPARE_FILE, CompareRow, compare_methods
    from .pipelines.extract import ExtractConfig

    names = [m.strip() for m in options.pop("methods").split(",") if m.strip()]
    pooling_names = [p.strip() for p in options.pop("poolings").split(",") if p.strip()]
    with user_errors(), progress_bar("capturing") as progress:
        options["params"] = parse_params(options.pop("param") or [])
        rows = compare_methods(ExtractConfig(**options), names, pooling_names, log=say, on_progress=progress_callback(progress))
    print_table("held-out evaluation by method and pooling (best layer)", CompareRow.COLUMNS, [row.cells() for row in rows], first_left=False)
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
    measure: opt.Measure = False,
    corpus: opt.CorpusDir = opt.DEFAULT_CORPUS,
    model: opt.Model = None,
    device: opt.Device = None,
    trust_remote_code: opt.TrustRemoteCode = False,
) -> None:
    """Generate with alpha * v added to the residual stream, unsteered and steered side by side."""
    from .pipelines.steer import MeasureResult, run_steer_command

    with user_errors():
        result = run_steer_command(
            vectors, concept, layer, alpha, prompt, max_new_tokens, temperature, seed, measure, corpus, model, device, trust_remote_code, log=say
        )
    if isinstance(result, MeasureResult):
        for line in result.summary():
            say(line)
        return
    print_table(
        f"{concept} at layer {layer}, alpha {alpha} (added norm {result.added_norm:.1f})",
        ["unsteered", "steered"],
        [[prompt + result.unsteered, prompt + result.steered]],
        first_left=False,
    )


@app.command()
def export(
    concept: Annotated[str, typer.Option(help="Concept to export.")],
    vectors: opt.Vectors = Path("out"),
    format: opt.ExportFormat = "gguf-control",
    layers: opt.ExportLayers = None,
    scale: opt.Scale = 1.0,
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
    for result in results.values():
        say(result.summary())
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
    for line in (line for result in results for line in result.summary()):
        say(line)
    say(f"wrote {paths[0]} and {paths[1]}")


@heads_app.command("concept")
def heads_concept(
    concept: Annotated[str, typer.Option(help="Concept whose readout is probed.")],
    layer: Annotated[int, typer.Option(help="Readout layer (must be exported in --vectors).")],
    vectors: opt.Vectors = Path("out"),
    corpus: opt.CorpusDir = opt.DEFAULT_CORPUS,
    negatives: Annotated[int, typer.Option(help="Negative stories sampled.")] = 16,
    from_layer: Annotated[int, typer.Option(help="Ablate heads in layers from_layer..layer (fewer layers: faster).")] = 0,
    mode: opt.ConceptMode = "attribution",
    verify_top: opt.VerifyTop = 5,
    model: opt.Model = None,
    output_dir: Annotated[Optional[Path], typer.Option("--output-dir", "-o", help="Default: VECTORS/heads.")] = None,
    device: opt.Device = None,
    trust_remote_code: opt.TrustRemoteCode = False,
) -> None:
    """Rank heads by the causal effect of mean-ablating them on a concept's readout, beside diff-of-means."""
    from .pipelines.heads import concept as concept_pipeline

    with user_errors():
        circuit, target = concept_pipeline(
            concept, layer, vectors, corpus, negatives, from_layer, mode, verify_top, model, output_dir, device, trust_remote_code, log=say
        )
    say("\n".join([*circuit.summary(), f"wrote {target}"]))
