"""The `amygdala-tl` command line: parse, call a pipeline, print. No logic lives here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import options as opt
from .capture.pooling import COMPARED_POOLINGS
from .circuits.detectors import thresholds_help
from .console import print_table, progress_bar, progress_callback, say, stdout, user_errors, warn
from .corpus import DEFAULT_CORPUS
from .directions.registry import METHODS, parse_params
from .errors import UserError
from .pipelines.evaluate import EvaluateConfig
from .pipelines.export import ExportConfig
from .pipelines.extract import ExtractConfig
from .pipelines.generate import GenerateConfig
from .pipelines.heads import AblateConfig, ConceptConfig, DetectConfig
from .pipelines.score import ScoreConfig
from .pipelines.steer import SteerConfig
from .pipelines.sweep import DEFAULT_ALPHAS, SweepConfig
from .pipelines.trace import TraceConfig

app = typer.Typer(help=opt.APP_HELP, no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
corpus_app = typer.Typer(help="Inspect and lint a story corpus.", no_args_is_help=True)
heads_app = typer.Typer(help="Head-level circuit probing: detectors, ablations, concept circuits.", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")
app.add_typer(heads_app, name="heads")
# Each command builds its pipeline's config by keyword; the defaults below are the config's own (one place).
# Where an option's name differs from the field it fills, the call that builds the config says so.
METHOD_HELP = "; ".join(f"{m.name}: {m.summary}{m.params_help()}" for m in METHODS.values())


@app.command()
def extract(
    model: opt.Model = ExtractConfig.model,
    corpus: opt.ExtractCorpus = ExtractConfig.corpus,  # None with no --stories-dir/--paired-dir: the shipped corpus (below)
    stories_dir: opt.StoriesDir = ExtractConfig.stories_dir,
    paired_dir: opt.PairedDir = ExtractConfig.paired_dir,
    # layers and method: ExtractConfig types them wider (a list of indices; a Method or a fit callable), so the two
    # defaults are written here too, and tests/unit/test_cli.py checks that they are ExtractConfig's
    layers: opt.Layers = None,
    output_dir: opt.OutputDir = ExtractConfig.output_dir,
    method: Annotated[str, typer.Option(help=METHOD_HELP)] = "lda",
    param: opt.MethodParam = None,
    denoise_k: opt.DenoiseK = ExtractConfig.denoise_k,
    heads: opt.Heads = ExtractConfig.heads,
    cache_dir: opt.CacheDir = ExtractConfig.cache_dir,
    cache: opt.UseCache = ExtractConfig.use_cache,
    quality_report: opt.QualityReport = ExtractConfig.quality_report,
    export_best_layers: opt.ExportBestLayers = ExtractConfig.export_best_layers,
    pooling: opt.PoolingOption = ExtractConfig.pooling,
    batch_size: opt.BatchSize = ExtractConfig.batch_size,
    max_length: opt.MaxLength = ExtractConfig.max_length,
    min_positives: opt.MinPositives = ExtractConfig.min_positives,
    dtype: opt.Dtype = ExtractConfig.dtype,
    device: opt.Device = ExtractConfig.device,
    device_map: opt.DeviceMap = ExtractConfig.device_map,
    trust_remote_code: opt.TrustRemoteCode = ExtractConfig.trust_remote_code,
    heldout: opt.ExtractHeldout = ExtractConfig.heldout,
) -> None:
    """Learn one direction per concept and layer from the corpus and export it for serving."""
    from .pipelines.extract import run_extract

    with user_errors():
        params = parse_params(param or [])
    config = ExtractConfig(
        output_dir=output_dir,
        model=model,
        corpus=DEFAULT_CORPUS if corpus is None and stories_dir is None and paired_dir is None else corpus,
        stories_dir=stories_dir,
        paired_dir=paired_dir,
        layers=layers,
        method=method,
        pooling=pooling,
        batch_size=batch_size,
        max_length=max_length,
        min_positives=min_positives,
        dtype=dtype,
        device=device,
        device_map=device_map,
        heads=heads,
        cache_dir=cache_dir,
        use_cache=cache,  # --cache/--no-cache
        params=params,
        quality_report=quality_report,
        export_best_layers=export_best_layers,
        trust_remote_code=trust_remote_code,
        denoise_k=denoise_k,
        heldout=heldout,
    )
    with user_errors(), progress_bar("capturing") as progress:
        result = run_extract(config, log=say, on_progress=progress_callback(progress))
    say("\n".join(f"wrote {path}" for path in result.files))


@corpus_app.command("check")
def corpus_check(
    corpus: opt.CorpusDir = DEFAULT_CORPUS,
    expect: Annotated[Optional[str], typer.Option(help="Comma-separated concepts that must be present, or 'all' for the 60.")] = None,
    min_positives: Annotated[int, typer.Option(help="Minimum positive stories for each expected concept.")] = 1,
) -> None:
    """Per-concept counts, and every problem by file (held-out set included): exits 1 if there is any."""
    from .corpus import CONCEPTS, check_corpus
    from .corpus.check import UNRECORDED

    expected = list(CONCEPTS) if expect == "all" else [c.strip() for c in expect.split(",") if c.strip()] if expect else []
    with user_errors():
        checked = check_corpus(corpus, expected, min_positives)

    def counts(counter) -> str:
        return " ".join(f"{key}:{n}" for key, n in sorted(counter.items()))

    stats, problems = checked.stats, checked.problems
    recorded = {name: len(set(c.writers) - {UNRECORDED}) for name, c in stats.items()}
    rows = [
        [name, str(c.positives), str(c.paired), str(recorded[name]), f"{c.mean_words:.0f}", counts(c.writers), counts(c.forms)]
        for name, c in stats.items()
    ]
    print_table(f"corpus {corpus}", ["concept", "positives", "paired", "writers", "mean words", "by writer", "by form"], rows)
    for line in (f"[red]problem:[/] {problem}" for problem in problems):
        say(line)
    positives = [s.positives for s in stats.values()]
    if lonely := [name for name, n in recorded.items() if n == 1]:
        say(f"note: written by one writer only, so cross-validation cannot leave one writer out: {', '.join(lonely)}")
    say(
        f"{len(stats)} concepts, {sum(positives)} positive texts (at least {min(positives, default=0)} each, "
        f"from at least {min(recorded.values(), default=0)} recorded writers), {checked.neutral} neutral texts, "
        f"{len(checked.scenarios)} paired scenarios ({sum(n >= 4 for n in checked.scenarios.values())} with 4+ framings), "
        f"{len(set(checked.writers) - {UNRECORDED})} training writers; {len(problems)} problems"
    )
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
    vectors: opt.Vectors = ScoreConfig.vectors,
    file: Annotated[Optional[Path], typer.Option(help="Score each non-empty line of this file.")] = ScoreConfig.file,
    model: opt.Model = ScoreConfig.model,
    top: Annotated[int, typer.Option(help="Concepts shown per layer.")] = ScoreConfig.top,
    as_json: opt.AsJson = False,
    centered: Annotated[
        bool, typer.Option("--centered", help="Subtract each concept's corpus offset mu . v_c (from extract.json). Serving reports raw scores.")
    ] = ScoreConfig.centered,
    raw: Annotated[
        bool, typer.Option("--raw", help="Raw declared-reading scores <pooled h, v> instead of calibrated z (calibration.json).")
    ] = ScoreConfig.raw,
    layers_combined: opt.LayersCombined = ScoreConfig.layers_combined,
    device: opt.Device = ScoreConfig.device,
    trust_remote_code: opt.TrustRemoteCode = ScoreConfig.trust_remote_code,
) -> None:
    """Score texts as a client of the served scores reads them (fp16 vectors, the declared reading), in calibrated z."""
    from .pipelines.score import score_texts

    config = ScoreConfig(
        texts=texts or [],
        file=file,
        vectors=vectors,
        model=model,
        top=top,
        centered=centered,
        raw=raw,
        layers_combined=layers_combined,
        device=device,
        trust_remote_code=trust_remote_code,
    )
    with user_errors():
        results = score_texts(config, warn=warn)
    if as_json:
        typer.echo(json.dumps([result.to_json() for result in results], indent=2))
        return
    for line in (line for result in results for line in result.summary(top)):
        stdout.print(line, highlight=False)


@app.command()
def trace(
    text: Annotated[Optional[str], typer.Argument(help="The text, or a story file's path (or --file).")] = TraceConfig.text,
    vectors: opt.Vectors = TraceConfig.vectors,
    file: Annotated[Optional[Path], typer.Option(help="Trace this file's whole text.")] = TraceConfig.file,
    model: opt.Model = TraceConfig.model,
    layer: Annotated[Optional[int], typer.Option(help="The layer shown in the terminal and first on the page (default: the middle one).")] = None,
    concept: Annotated[Optional[str], typer.Option(help="Shade the page by this concept (default: each token's top concept).")] = None,
    top: Annotated[int, typer.Option(help="Concepts coloured in the terminal.")] = TraceConfig.top,
    html: Annotated[Optional[Path], typer.Option("--html", help="Write a self-contained HTML page of the trace here.")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Raw scores instead of calibrated z (calibration.json).")] = TraceConfig.raw,
    as_json: opt.AsJson = False,
    device: opt.Device = TraceConfig.device,
    trust_remote_code: opt.TrustRemoteCode = TraceConfig.trust_remote_code,
) -> None:
    """Served scores at every token, every exported layer, every concept: per token and the running declared reading."""
    from .pipelines.trace import run_trace, terminal_lines
    from .quality.trace_html import write_trace_html

    config = TraceConfig(
        text=text,
        file=file,
        vectors=vectors,
        model=model,
        raw=raw,
        layer=layer,
        concept=concept,
        top=top,
        html=html,
        device=device,
        trust_remote_code=trust_remote_code,
    )
    with user_errors():
        result = run_trace(config, warn=warn)
    if html is not None:
        say(f"wrote {write_trace_html(result, html, layer, concept)}")
    if as_json:
        typer.echo(json.dumps(result.to_json()))
        return
    for line in terminal_lines(result, layer, top):
        stdout.print(line, highlight=False)


@app.command()
def evaluate(
    vectors: opt.Vectors = EvaluateConfig.vectors,
    heldout: opt.Heldout = EvaluateConfig.heldout,
    model: opt.Model = EvaluateConfig.model,
    as_json: opt.AsJson = False,
    layers_combined: opt.LayersCombined = EvaluateConfig.layers_combined,
    device: opt.Device = EvaluateConfig.device,
    trust_remote_code: opt.TrustRemoteCode = EvaluateConfig.trust_remote_code,
) -> None:
    """The exported vectors on a separately written test set, read as the server reads them (z-scored per concept)."""
    from .pipelines.evaluate import COLUMNS, evaluate_vectors

    config = EvaluateConfig(
        vectors=vectors, heldout=heldout, model=model, layers_combined=layers_combined, device=device, trust_remote_code=trust_remote_code
    )
    with user_errors():
        result = evaluate_vectors(config, log=say)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    print_table(result.title(), COLUMNS, result.rows(), first_left=False)
    say(f"best layer {result.best_layer} (*); AUROC one-vs-rest per concept, top-1 among all {result.concepts_exported} exported concepts")


@app.command("compare-methods")
def compare_methods_command(
    methods: Annotated[str, typer.Option(help="Comma-separated methods to compare.")] = ",".join(METHODS),
    poolings: Annotated[str, typer.Option(help="Comma-separated poolings (each learned and read its own way).")] = ",".join(COMPARED_POOLINGS),
    corpus: opt.CorpusDir = DEFAULT_CORPUS,
    model: opt.Model = ExtractConfig.model,
    layers: opt.Layers = None,  # ExtractConfig.layers, typed wider (see extract)
    output_dir: opt.OutputDir = ExtractConfig.output_dir,
    batch_size: opt.BatchSize = ExtractConfig.batch_size,
    max_length: opt.MaxLength = ExtractConfig.max_length,
    min_positives: opt.MinPositives = ExtractConfig.min_positives,
    param: opt.MethodParam = None,
    device: opt.Device = ExtractConfig.device,
    trust_remote_code: opt.TrustRemoteCode = ExtractConfig.trust_remote_code,
) -> None:
    """Every method under every pooling, one table: held-out AUROC and top-1 at each row's best layer, and time."""
    from .pipelines.compare import COMPARE_FILE, CompareRow, compare_methods

    names = [m.strip() for m in methods.split(",") if m.strip()]
    pooling_names = [p.strip() for p in poolings.split(",") if p.strip()]
    with user_errors():
        params = parse_params(param or [])
    config = ExtractConfig(
        corpus=corpus,
        model=model,
        layers=layers,
        output_dir=output_dir,
        batch_size=batch_size,
        max_length=max_length,
        min_positives=min_positives,
        params=params,
        device=device,
        trust_remote_code=trust_remote_code,
    )
    with user_errors(), progress_bar("capturing") as progress:
        rows = compare_methods(config, names, pooling_names, log=say, on_progress=progress_callback(progress))
    print_table("held-out evaluation by method and pooling (best layer)", CompareRow.COLUMNS, [row.cells() for row in rows], first_left=False)
    say(f"wrote {output_dir / COMPARE_FILE}")


@app.command()
def steer(
    prompt: Annotated[str, typer.Argument(help="Prompt to continue ('' with --measure or --sweep).")],
    concept: Annotated[str, typer.Option(help="Concept to steer toward (negative --alpha: away; 'all' with --measure or --sweep).")],
    layer: Annotated[int, typer.Option(help="Block whose output (hook_resid_post) gets the vector; must be exported.")],
    vectors: opt.Vectors = SteerConfig.vectors,
    alpha: Annotated[
        float, typer.Option(help="Strength in units of the layer's mean residual norm on the prompt (BOS excluded).")
    ] = SteerConfig.alpha,
    max_new_tokens: Annotated[
        Optional[int],
        typer.Option(help=f"New tokens (default {SteerConfig.max_new_tokens}; {SweepConfig.max_new_tokens} per continuation with --sweep)."),
    ] = None,
    temperature: Annotated[float, typer.Option(help="0: greedy; > 0: sampling with --seed.")] = SteerConfig.temperature,
    seed: int = SteerConfig.seed,
    measure: opt.Measure = SteerConfig.measure,
    corpus: opt.CorpusDir = SteerConfig.corpus,
    sweep: Annotated[
        bool,
        typer.Option(
            "--sweep",
            help="Instead: write continuations at each of --alphas and read them unsteered (concept z, relative perplexity, "
            "steering score); writes steer_sweep.json and steer_sweep.png, names the best strength.",
        ),
    ] = False,
    alphas: Annotated[str, typer.Option(help="--sweep: strengths, comma-separated (alpha 0 is always added).")] = ",".join(
        f"{a:g}" for a in DEFAULT_ALPHAS
    ),
    prompts: Annotated[Optional[Path], typer.Option(help="--sweep: a UTF-8 file, one prompt a line (default: 10 shipped neutral openings).")] = None,
    gguf_scale: Annotated[float, typer.Option(help="--sweep: the export --scale the llama.cpp value is given for.")] = SweepConfig.gguf_scale,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="--sweep: directory for steer_sweep.json (default: beside the vectors).")
    ] = None,
    model: opt.Model = SteerConfig.model,
    device: opt.Device = SteerConfig.device,
    trust_remote_code: opt.TrustRemoteCode = SteerConfig.trust_remote_code,
) -> None:
    """Generate with alpha * v added to the residual stream, unsteered and steered side by side."""
    from .pipelines.steer import MeasureResult, run_steer_command

    if sweep:
        from .pipelines.sweep import parse_alphas, run_sweep_command

        with user_errors():
            if measure:
                raise UserError("--sweep and --measure are two different runs: choose one")
            sweep_config = SweepConfig(
                concept=concept,
                layer=layer,
                vectors=vectors,
                alphas=parse_alphas(alphas),
                prompts=prompts,
                max_new_tokens=max_new_tokens if max_new_tokens is not None else SweepConfig.max_new_tokens,
                temperature=temperature,
                seed=seed,
                gguf_scale=gguf_scale,
                output=output,
                model=model,
                device=device,
                trust_remote_code=trust_remote_code,
            )
            swept = run_sweep_command(sweep_config, log=say)
        for line in swept.summary():
            say(line)
        say(f"wrote {swept.path} and {swept.plot}")
        return

    config = SteerConfig(
        concept=concept,
        layer=layer,
        prompt=prompt,
        vectors=vectors,
        alpha=alpha,
        max_new_tokens=max_new_tokens if max_new_tokens is not None else SteerConfig.max_new_tokens,
        temperature=temperature,
        seed=seed,
        measure=measure,
        corpus=corpus,
        model=model,
        device=device,
        trust_remote_code=trust_remote_code,
    )
    with user_errors():
        result = run_steer_command(config, log=say)
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
def generate(
    prompt: Annotated[str, typer.Argument(help="Prompt to continue.")],
    vectors: opt.Vectors = GenerateConfig.vectors,
    readout: Annotated[
        bool, typer.Option("--readout", help="Print each new token's readout as it is produced (the declared reading, top concepts).")
    ] = GenerateConfig.readout,
    layer: Annotated[
        Optional[int], typer.Option(help="Exported layer shown, and where --steer adds (default: the middle exported layer).")
    ] = GenerateConfig.layer,
    steer: Annotated[
        Optional[list[str]],
        typer.Option(help="CONCEPT:ALPHA (at --layer) or CONCEPT:ALPHA@LAYER, repeatable; alpha in the layer's mean residual norms on the prompt."),
    ] = None,
    max_new_tokens: int = GenerateConfig.max_new_tokens,
    temperature: Annotated[float, typer.Option(help="0: greedy; > 0: sampling with --seed.")] = GenerateConfig.temperature,
    seed: int = GenerateConfig.seed,
    top: Annotated[int, typer.Option(help="Concepts shown per token.")] = GenerateConfig.top,
    html: Annotated[Optional[Path], typer.Option(help="Also write the trace page of prompt + completion (as `trace --html`).")] = GenerateConfig.html,
    as_json: opt.AsJson = False,
    model: opt.Model = GenerateConfig.model,
    device: opt.Device = GenerateConfig.device,
    trust_remote_code: opt.TrustRemoteCode = GenerateConfig.trust_remote_code,
) -> None:
    """Continue a prompt with a KV cache, one step per token; --readout prints each token's readout as a server returns it."""
    from .pipelines.generate import Step, run_generate_command

    config = GenerateConfig(
        prompt=prompt,
        vectors=vectors,
        readout=readout,
        layer=layer,
        steer=steer or [],
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        top=top,
        html=html,
        model=model,
        device=device,
        trust_remote_code=trust_remote_code,
    )

    def show(step: Step) -> None:
        concepts = "  ".join(f"{name} {value:+.3f}" for name, value in step.top)
        stdout.print(f"  {step.index:5d} {step.token!r:>16}  {concepts}", highlight=False)

    with user_errors():
        result = run_generate_command(config, log=say, on_step=show if readout and not as_json else None)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    stdout.print(prompt + result.completion, highlight=False)


@app.command()
def export(
    concept: Annotated[str, typer.Option(help="Concept to export.")],
    vectors: opt.Vectors = ExportConfig.vectors,
    format: opt.ExportFormat = ExportConfig.format,
    layers: opt.ExportLayers = ExportConfig.layers,
    scale: opt.Scale = ExportConfig.scale,
    model_hint: Annotated[
        Optional[str], typer.Option(help="controlvector.model_hint (default: model_type from extract.json).")
    ] = ExportConfig.model_hint,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Default: VECTORS/<concept>.gguf")] = ExportConfig.output,
) -> None:
    """Export one concept as a llama.cpp / repeng control vector (unit-norm vectors times --scale)."""
    from .formats.gguf import SCALE_HINT
    from .pipelines.export import export_control_vector

    config = ExportConfig(concept=concept, vectors=vectors, format=format, layers=layers, scale=scale, model_hint=model_hint, output=output)
    with user_errors():
        path, hint = export_control_vector(config)
    say(f"wrote {path} (model hint {hint!r}; direction.<i> is added to HF block i's output)")
    say(f"note: {SCALE_HINT}")


@heads_app.command("detect")
def heads_detect(
    detectors: Annotated[str, typer.Option(help=f"Comma-separated detectors. Flag thresholds: {thresholds_help()}.")] = ",".join(
        DetectConfig.detectors
    ),
    model: opt.Model = DetectConfig.model,
    corpus: Annotated[Path, typer.Option(help="Natural text for previous-token, positional, delimiter: the corpus stories.")] = DetectConfig.corpus,
    text_file: Annotated[
        Optional[Path], typer.Option(help="Natural text instead of the corpus: one text per non-empty line.")
    ] = DetectConfig.text_file,
    length: Annotated[int, typer.Option(help="Tokens per natural-text sequence.")] = DetectConfig.length,
    n_texts: Annotated[int, typer.Option(help="Natural-text sequences used.")] = DetectConfig.n_texts,
    output_dir: opt.OutputDir = DetectConfig.output_dir,
    device: opt.Device = DetectConfig.device,
    trust_remote_code: opt.TrustRemoteCode = DetectConfig.trust_remote_code,
) -> None:
    """Score every head with each detector: heads.json, heads_<detector>.png, heads.html."""
    from .pipelines.heads import detect

    config = DetectConfig(
        detectors=[name.strip() for name in detectors.split(",") if name.strip()],
        model=model,
        corpus=corpus,
        text_file=text_file,
        length=length,
        n_texts=n_texts,
        output_dir=output_dir,
        device=device,
        trust_remote_code=trust_remote_code,
    )
    with user_errors():
        results, paths = detect(config, log=say)
    for result in results.values():
        say(result.summary())
    say(f"wrote {output_dir / 'heads.json'}, {output_dir / 'heads.html'} and {len(paths) - 2} heatmaps")


@heads_app.command("ablate")
def heads_ablate(
    heads: Annotated[str, typer.Option(help="Heads to ablate together, e.g. L3H5,L4H1. Several conditions with ';': 'L3H5;L3H5,L4H1'.")],
    prompt: Annotated[list[str], typer.Option(help="Prompt(s) whose next-token prediction is examined (repeatable).")],
    mode: Annotated[str, typer.Option(help="zero or mean (hook_z), or value (zero the value vectors at --position).")] = AblateConfig.mode,
    position: Annotated[
        Optional[int], typer.Option(help="Ablate at this position only (negative: from the end). Default: all.")
    ] = AblateConfig.position,
    top_k: Annotated[int, typer.Option(help="Logit increases/decreases shown.")] = AblateConfig.top_k,
    model: opt.Model = AblateConfig.model,
    output_dir: opt.OutputDir = AblateConfig.output_dir,
    device: opt.Device = AblateConfig.device,
    trust_remote_code: opt.TrustRemoteCode = AblateConfig.trust_remote_code,
) -> None:
    """Ablate heads for one next-token prediction; ablations.json and ablations.html."""
    from .pipelines.heads import ablate

    config = AblateConfig(
        heads=heads,
        prompts=prompt,  # --prompt, repeatable
        mode=mode,
        position=position,
        top_k=top_k,
        model=model,
        output_dir=output_dir,
        device=device,
        trust_remote_code=trust_remote_code,
    )
    with user_errors():
        results, paths = ablate(config, log=say)
    for line in (line for result in results for line in result.summary()):
        say(line)
    say(f"wrote {paths[0]} and {paths[1]}")


@heads_app.command("concept")
def heads_concept(
    concept: Annotated[str, typer.Option(help="Concept whose readout is probed.")],
    layer: Annotated[int, typer.Option(help="Readout layer (must be exported in --vectors).")],
    vectors: opt.Vectors = ConceptConfig.vectors,
    corpus: opt.CorpusDir = ConceptConfig.corpus,
    negatives: Annotated[int, typer.Option(help="Negative stories sampled.")] = ConceptConfig.negatives,
    from_layer: Annotated[int, typer.Option(help="Ablate heads in layers from_layer..layer (fewer layers: faster).")] = ConceptConfig.from_layer,
    mode: opt.ConceptMode = ConceptConfig.mode,
    verify_top: opt.VerifyTop = ConceptConfig.verify_top,
    model: opt.Model = ConceptConfig.model,
    output_dir: Annotated[Optional[Path], typer.Option("--output-dir", "-o", help="Default: VECTORS/heads.")] = ConceptConfig.output_dir,
    device: opt.Device = ConceptConfig.device,
    trust_remote_code: opt.TrustRemoteCode = ConceptConfig.trust_remote_code,
) -> None:
    """Rank heads by the causal effect of mean-ablating them on a concept's readout, beside diff-of-means."""
    from .pipelines.heads import concept as concept_pipeline

    config = ConceptConfig(
        concept=concept,
        layer=layer,
        vectors=vectors,
        corpus=corpus,
        negatives=negatives,
        from_layer=from_layer,
        mode=mode,
        verify_top=verify_top,
        model=model,
        output_dir=output_dir,
        device=device,
        trust_remote_code=trust_remote_code,
    )
    with user_errors():
        circuit, target = concept_pipeline(config, log=say)
    say("\n".join([*circuit.summary(), f"wrote {target}"]))
