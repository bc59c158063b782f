"""CLI behaviour that needs no model: one-line errors with exit code 2, corpus check on the shipped corpus, the configs built."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from amygdala_tl.cli import app
from amygdala_tl.corpus import CONCEPTS
from amygdala_tl.errors import UserError
from amygdala_tl.pipelines.evaluate import EvaluateConfig
from amygdala_tl.pipelines.export import ExportConfig
from amygdala_tl.pipelines.extract import ExtractConfig
from amygdala_tl.pipelines.generate import GenerateConfig
from amygdala_tl.pipelines.heads import AblateConfig, ConceptConfig, DetectConfig
from amygdala_tl.pipelines.score import ScoreConfig
from amygdala_tl.pipelines.steer import SteerConfig
from amygdala_tl.pipelines.sweep import SweepConfig

from ..conftest import CORPUS


def output_lines(result):
    return [line for line in result.output.splitlines() if line.strip()]


def test_user_error_is_one_line_exit_2(tmp_path):
    missing = tmp_path / ("a-rather-long-directory-name-" * 4) / "missing"
    result = CliRunner().invoke(app, ["extract", "--corpus", str(missing)])
    assert result.exit_code == 2
    lines = output_lines(result)
    assert len(lines) == 1 and str(missing) in lines[0]


def test_help_reads_well():
    result = CliRunner().invoke(app, ["extract", "--help"])
    assert result.exit_code == 0
    for option in ("--model", "--corpus", "--layers", "--pooling", "--max-length", "--dtype", "--device-map"):
        assert option in result.output


def test_shipped_corpus_passes_corpus_check():
    result = CliRunner().invoke(app, ["corpus", "check", "--corpus", str(CORPUS), "--expect", ",".join(CONCEPTS), "--min-positives", "10"])
    assert result.exit_code == 0, result.output
    assert "60 concepts" in result.output and "0 problems" in result.output


def test_the_shipped_corpus_has_the_scale_and_the_forms_the_corpus_scale_issue_asks_for():
    """Every concept: 30+ positives from 8+ writers, at least half in forms other than the literary paragraph,
    3+ of them chat or dialogue, 2+ paired framings; 40+ paired scenarios with 4+ framings; 100+ neutral texts.
    (The manifest check keeps the development sets' writers apart from the training writers.)"""
    from amygdala_tl.corpus import check_corpus

    checked = check_corpus(CORPUS)
    assert checked.problems == []
    for concept, stats in checked.stats.items():
        assert stats.positives >= 30 and len(stats.writers) >= 8 and stats.paired >= 2, concept
        assert stats.positives - stats.forms["prose"] >= stats.positives / 2, concept
        assert stats.forms["chat"] + stats.forms["dialogue"] >= 3, concept
    assert sum(framings >= 4 for framings in checked.scenarios.values()) >= 40 and checked.neutral >= 100


def test_progress_without_a_terminal_prints_plain_lines_every_few_seconds(monkeypatch, capsys):
    from amygdala_tl import console as console_module

    clock = iter(range(100, 200, 2))  # each update two seconds after the last
    monkeypatch.setattr(console_module.time, "monotonic", lambda: next(clock))
    with console_module.progress_bar("capturing") as progress:
        assert progress.disable  # pytest's captured stderr is not a terminal
        update = console_module.progress_callback(progress)
        for done in range(0, 21, 2):
            update(done, 20)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("capturing:")]
    assert lines[0] == "capturing: 0/20 texts, 0 s" and lines[-1] == "capturing: 20/20 texts, 20 s"
    assert lines[1] == "capturing: 6/20 texts, 6 s, ETA 14 s" and len(lines) == 5  # at 0, 6, 12, 18 s and the end


# ---- each command builds its pipeline's config by keyword: defaults from the config, every option reaching its field ----

CONFIG_CASES = {
    "extract_defaults": (["extract"], "extract.run_extract", lambda: ExtractConfig(corpus=Path("corpus"))),
    "extract_all": (
        "extract --model m --stories-dir s --paired-dir p --layers 1,2 -o o --method subspace --param k=2 --denoise-k 1"
        " --param eigen_k=3 --no-heads --cache-dir c --no-cache --quality-report --export-best-layers 2 --pooling last --batch-size 4"
        " --max-length 64 --min-positives 3 --dtype bf16 --device cpu --device-map auto --trust-remote-code --heldout h",
        "extract.run_extract",
        lambda: ExtractConfig(
            model="m",
            stories_dir=Path("s"),
            paired_dir=Path("p"),
            layers="1,2",
            output_dir=Path("o"),
            method="subspace",
            params={"k": "2", "eigen_k": "3"},
            denoise_k=1,
            heads=False,
            cache_dir=Path("c"),
            use_cache=False,
            quality_report=True,
            export_best_layers=2,
            pooling="last",
            batch_size=4,
            max_length=64,
            min_positives=3,
            dtype="bf16",
            device="cpu",
            device_map="auto",
            trust_remote_code=True,
            heldout=Path("h"),
        ),
    ),
    "compare_defaults": (["compare-methods"], "compare.compare_methods", lambda: ExtractConfig(corpus=Path("corpus"))),
    "compare_all": (
        "compare-methods --corpus c --model m --layers 1 -o o --batch-size 4 --max-length 64 --min-positives 3 --param c=0.5 --device cpu --trust-remote-code",
        "compare.compare_methods",
        lambda: ExtractConfig(
            corpus=Path("c"),
            model="m",
            layers="1",
            output_dir=Path("o"),
            batch_size=4,
            max_length=64,
            min_positives=3,
            params={"c": "0.5"},
            device="cpu",
            trust_remote_code=True,
        ),
    ),
    "score_defaults": (["score", "a"], "score.score_texts", lambda: ScoreConfig(texts=["a"])),
    "score_all": (
        "score a b --vectors v --file f --model m --top 2 --centered --raw --device cpu --trust-remote-code",
        "score.score_texts",
        lambda: ScoreConfig(
            texts=["a", "b"], vectors=Path("v"), file=Path("f"), model="m", top=2, centered=True, raw=True, device="cpu", trust_remote_code=True
        ),
    ),
    "evaluate_defaults": (["evaluate"], "evaluate.evaluate_vectors", lambda: EvaluateConfig()),
    "evaluate_all": (
        "evaluate --vectors v --heldout h --model m --device cpu --trust-remote-code",
        "evaluate.evaluate_vectors",
        lambda: EvaluateConfig(vectors=Path("v"), heldout=Path("h"), model="m", device="cpu", trust_remote_code=True),
    ),
    "generate_defaults": (["generate", "p"], "generate.run_generate_command", lambda: GenerateConfig(prompt="p")),
    "generate_all": (
        "generate p --vectors v --readout --layer 2 --steer calm:2 --steer bored:-1@3 --max-new-tokens 3 --temperature 0.5 --seed 4 --top 2"
        " --html g.html --model m --device cpu --trust-remote-code",
        "generate.run_generate_command",
        lambda: GenerateConfig(
            prompt="p",
            vectors=Path("v"),
            readout=True,
            layer=2,
            steer=["calm:2", "bored:-1@3"],
            max_new_tokens=3,
            temperature=0.5,
            seed=4,
            top=2,
            html=Path("g.html"),
            model="m",
            device="cpu",
            trust_remote_code=True,
        ),
    ),
    "steer_defaults": (
        ["steer", "p", "--concept", "calm", "--layer", "1"],
        "steer.run_steer_command",
        lambda: SteerConfig(concept="calm", layer=1, prompt="p"),
    ),
    "steer_all": (
        "steer p --concept calm --layer 1 --vectors v --alpha 2 --max-new-tokens 3 --temperature 0.5 --seed 4 --measure --corpus c"
        " --model m --device cpu --trust-remote-code",
        "steer.run_steer_command",
        lambda: SteerConfig(
            concept="calm",
            layer=1,
            prompt="p",
            vectors=Path("v"),
            alpha=2.0,
            max_new_tokens=3,
            temperature=0.5,
            seed=4,
            measure=True,
            corpus=Path("c"),
            model="m",
            device="cpu",
            trust_remote_code=True,
        ),
    ),
    "sweep_defaults": (
        ["steer", "", "--sweep", "--concept", "calm", "--layer", "1"],
        "sweep.run_sweep_command",
        lambda: SweepConfig(concept="calm", layer=1),
    ),
    "sweep_all": (
        "steer '' --sweep --concept calm,bored --layer 1 --vectors v --alphas 0,2,4 --prompts p.txt --max-new-tokens 3 --temperature 0.5 --seed 4"
        " --gguf-scale 2 -o o --model m --device cpu --trust-remote-code",
        "sweep.run_sweep_command",
        lambda: SweepConfig(
            concept="calm,bored",
            layer=1,
            vectors=Path("v"),
            alphas=[0.0, 2.0, 4.0],
            prompts=Path("p.txt"),
            max_new_tokens=3,
            temperature=0.5,
            seed=4,
            gguf_scale=2.0,
            output=Path("o"),
            model="m",
            device="cpu",
            trust_remote_code=True,
        ),
    ),
    "export_defaults": (["export", "--concept", "calm"], "export.export_control_vector", lambda: ExportConfig(concept="calm")),
    "export_all": (
        "export --concept calm --vectors v --format f --layers 1 --scale 2 --model-hint h -o o.gguf",
        "export.export_control_vector",
        lambda: ExportConfig(concept="calm", vectors=Path("v"), format="f", layers="1", scale=2.0, model_hint="h", output=Path("o.gguf")),
    ),
    "detect_defaults": (["heads", "detect"], "heads.detect", lambda: DetectConfig(detectors=list(DetectConfig.detectors))),
    "detect_all": (
        "heads detect --detectors induction,positional --model m --corpus c --text-file t --length 8 --n-texts 2 -o o --device cpu --trust-remote-code",
        "heads.detect",
        lambda: DetectConfig(
            detectors=["induction", "positional"],
            model="m",
            corpus=Path("c"),
            text_file=Path("t"),
            length=8,
            n_texts=2,
            output_dir=Path("o"),
            device="cpu",
            trust_remote_code=True,
        ),
    ),
    "ablate_defaults": (["heads", "ablate", "--heads", "L0H0", "--prompt", "x"], "heads.ablate", lambda: AblateConfig(heads="L0H0", prompts=["x"])),
    "ablate_all": (
        "heads ablate --heads L0H0 --prompt x --prompt y --mode mean --position -1 --top-k 2 --model m -o o --device cpu --trust-remote-code",
        "heads.ablate",
        lambda: AblateConfig(
            heads="L0H0",
            prompts=["x", "y"],
            mode="mean",
            position=-1,
            top_k=2,
            model="m",
            output_dir=Path("o"),
            device="cpu",
            trust_remote_code=True,
        ),
    ),
    "concept_defaults": (["heads", "concept", "--concept", "calm", "--layer", "1"], "heads.concept", lambda: ConceptConfig(concept="calm", layer=1)),
    "concept_all": (
        "heads concept --concept calm --layer 1 --vectors v --corpus c --negatives 4 --from-layer 1 --mode ablation --verify-top 2 --model m"
        " -o o --device cpu --trust-remote-code",
        "heads.concept",
        lambda: ConceptConfig(
            concept="calm",
            layer=1,
            vectors=Path("v"),
            corpus=Path("c"),
            negatives=4,
            from_layer=1,
            mode="ablation",
            verify_top=2,
            model="m",
            output_dir=Path("o"),
            device="cpu",
            trust_remote_code=True,
        ),
    ),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_each_command_builds_its_config_by_keyword(case, monkeypatch):
    """With no options a command's config is the config's defaults (one place); with every option, each reaches its field."""
    argv, target, expected = CONFIG_CASES[case]
    built = []

    def capture(config, *args, **kwargs):
        built.append(config)
        raise UserError("captured")

    monkeypatch.setattr(f"amygdala_tl.pipelines.{target}", capture)
    result = CliRunner().invoke(app, argv if isinstance(argv, list) else shlex.split(argv))
    assert result.exit_code == 2 and "captured" in result.output, result.output
    assert built == [expected()]


def test_the_eta_counts_only_texts_captured_in_this_run(monkeypatch, capsys):
    """A re-run starts with the stored texts done at no cost: the ETA comes from the rate since then."""
    from amygdala_tl import console as console_module

    clock = iter(range(100, 200, 6))
    monkeypatch.setattr(console_module.time, "monotonic", lambda: next(clock))
    with console_module.progress_bar("capturing") as progress:
        update = console_module.progress_callback(progress)
        update(900, 1000)  # the store held 900
        update(910, 1000)  # 10 texts in 6 s: 90 more take 54 s
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("capturing:")]
    assert lines[-1] == "capturing: 910/1000 texts, 6 s, ETA 54 s"
