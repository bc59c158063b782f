"""Hostile input: every mistake is one line (exit 2) before the model loads, nothing runs that was not asked for,
and the output directory always describes exactly one run."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from amygdala_tl.cli import app
from amygdala_tl.errors import UserError
from amygdala_tl.formats.readout import build_readout, load_readout
from amygdala_tl.pipelines.extract import ExtractConfig, run_extract

from ..conftest import write, write_readout


def never_load(*args, **kwargs):
    raise AssertionError("the model must not be loaded for this error")


def one_line_exit_2(result) -> str:
    """The error is one line (warnings about the corpus, such as a concept left out, may precede it)."""
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("warning:")]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    return lines[0]


@pytest.fixture
def no_model_load(monkeypatch):
    monkeypatch.setattr("amygdala_tl.model.load_model", never_load)


def model_dir(tmp_path: Path, config: dict | str, name: str = "model") -> Path:
    root = tmp_path / name
    write(root / "config.json", config if isinstance(config, str) else json.dumps(config))
    return root


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- checks that need no model weights --------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        "empty_layers",
        "layer_999_local",
        "layer_minus_999_gguf",
        "cuda",
        "fake_gguf",
        "broken_config",
        "output_under_a_file",
        "l1_nan",
        "hub_offline",
        "hub_unreachable",
    ],
)
def test_mistakes_fail_before_the_model_loads(case, starter_corpus, tmp_path, monkeypatch):
    change, fragment = {
        "empty_layers": (dict(layers=""), "--layers is empty"),
        "layer_999_local": (
            dict(layers="999", model=str(model_dir(tmp_path, {"model_type": "llama", "num_hidden_layers": 3}))),
            "999 is out of range for a model with 3 layers",
        ),
        "layer_minus_999_gguf": (dict(layers="-999"), "out of range for a model with 30 layers"),  # the bundled GGUF's header
        "cuda": (dict(device="cuda"), "CUDA is not available"),
        "fake_gguf": (dict(model=str(write(tmp_path / "fake.gguf", "not a model"))), "fake.gguf is not a GGUF file"),
        "broken_config": (dict(model=str(model_dir(tmp_path, "{not json", "broken"))), "broken model config"),
        "output_under_a_file": (dict(output_dir=write(tmp_path / "file", "x") / "sub"), "exists and is not a directory"),
        "l1_nan": (dict(method="logistic_l1", params={"c": float("nan")}), "--param c"),
        "hub_offline": (dict(model="some-org/some-model"), "HF_HUB_OFFLINE"),
        "hub_unreachable": (dict(model="some-org/some-model"), "cannot reach 127.0.0.1"),
    }[case]
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    if case == "hub_offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if case == "hub_unreachable":
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    if case == "cuda":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = ExtractConfig(**{"output_dir": tmp_path / "out", "corpus": starter_corpus, **change})
    with pytest.raises(UserError, match=fragment):
        run_extract(config, loader=never_load)
    assert not (tmp_path / "out").exists()


def test_remote_code_never_runs_without_the_opt_in_and_stdin_is_never_read(starter_corpus, tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    root = model_dir(
        tmp_path,
        {
            "model_type": "evil",
            "num_hidden_layers": 2,
            "auto_map": {"AutoConfig": "configuration_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilModel"},
        },
    )
    code = f"open({str(marker)!r}, 'w').write('ran')\nfrom transformers import PretrainedConfig\nclass EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
    write(root / "configuration_evil.py", code)
    write(root / "modeling_evil.py", code)
    result = CliRunner().invoke(app, ["extract", "--model", str(root), "--corpus", str(starter_corpus), "-o", str(tmp_path / "out")], input="y\ny\n")
    assert "--trust-remote-code" in one_line_exit_2(result)
    # below our own check, transformers itself must be told False (never None, which prompts on stdin)
    from amygdala_tl.model import load_model
    from amygdala_tl.model_spec import resolve_model_spec

    monkeypatch.setattr("amygdala_tl.preflight.preflight", lambda *a, **k: None)
    with pytest.raises(UserError, match="could not load model"):
        load_model(resolve_model_spec(str(root)))
    assert not marker.exists()
    seen = {}

    def spy(source, **kwargs):
        seen.update(kwargs)
        raise OSError("stop here")

    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", spy)
    with pytest.raises(UserError):
        load_model(resolve_model_spec(str(root)))
    assert seen["trust_remote_code"] is False  # None would make transformers prompt on stdin


def test_story_of_nul_bytes_is_an_error_naming_the_file(starter_corpus, tmp_path):
    bad = starter_corpus / "stories" / "calm" / "binary.txt"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match="binary.txt"):
        run_extract(ExtractConfig(output_dir=tmp_path / "out", corpus=starter_corpus), loader=never_load)


def test_framing_without_baseline_and_broken_symlink_warn(starter_corpus, tmp_path, tiny_model):
    from amygdala_tl.corpus import CorpusWarning, load_corpus

    (starter_corpus / "paired" / "the_morning_commute" / "baseline.txt").unlink()
    (starter_corpus / "stories" / "calm" / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    with pytest.warns(CorpusWarning) as caught:
        load_corpus(starter_corpus)
    messages = " | ".join(str(w.message) for w in caught)
    assert "without baseline.txt" in messages and "gone.txt" in messages


def test_text_files_that_are_not_utf8_are_one_line_errors(tmp_path, no_model_load):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    write_readout(build_readout(["calm", "afraid"], [1], torch.randn(1, 2, 8)), tmp_path / "vec")
    assert "latin1.txt" in one_line_exit_2(CliRunner().invoke(app, ["score", "--vectors", str(tmp_path / "vec"), "--file", str(bad)]))
    assert "latin1.txt" in one_line_exit_2(CliRunner().invoke(app, ["heads", "detect", "--text-file", str(bad)]))


def test_steer_and_ablate_arguments_are_checked_before_the_load(tmp_path, no_model_load):
    vectors = tmp_path / "vec"
    write_readout(build_readout(["calm", "afraid"], [1, 2], torch.randn(2, 2, 8)), vectors)
    steer = ["steer", "go", "--vectors", str(vectors)]
    assert "unknown concept 'joyful'" in one_line_exit_2(CliRunner().invoke(app, [*steer, "--concept", "joyful", "--layer", "1"]))
    assert "layer 5 is not in the vectors" in one_line_exit_2(CliRunner().invoke(app, [*steer, "--concept", "calm", "--layer", "5"]))
    assert "--alpha" in one_line_exit_2(CliRunner().invoke(app, [*steer, "--concept", "calm", "--layer", "1", "--alpha", "nan"]))
    ablate = ["heads", "ablate", "--heads", "L0H0", "--prompt", "x", "--mode", "foo"]
    assert "unknown ablation mode 'foo'" in one_line_exit_2(CliRunner().invoke(app, ablate))


def test_interrupt_is_one_line_saying_how_to_resume(monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("amygdala_tl.pipelines.extract.run_extract", interrupted)
    result = CliRunner().invoke(app, ["extract"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 130 and len(lines) == 1 and "same command" in lines[0]


# ---- the readout the server gets ---------------------------------------------------------------


def test_degenerate_directions_are_refused_and_nothing_is_written(starter_corpus, tmp_path, tiny_model):
    # one token per text (the tiny tokenizer has no BOS): every story reads the same last token, no signal
    config = ExtractConfig(output_dir=tmp_path / "out", corpus=starter_corpus, layers="1", max_length=1, heads=False, use_cache=False)
    with pytest.raises(UserError, match=r"direction for '\w+' at layer 1 is degenerate"):
        run_extract(config, loader=lambda *a, **k: tiny_model)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage, fragment", [("nan_row", "NaN"), ("path_in_name", "not a snake_case name")])
def test_loader_rejects_nan_rows_and_unsafe_names(tmp_path, damage, fragment):
    directions = torch.randn(1, 2, 8)
    if damage == "nan_row":
        directions[0, 1] = float("nan")
        readout = build_readout(["calm", "afraid"], [1], torch.randn(1, 2, 8))
        readout.vectors[1][1] = float("nan")
    else:
        readout = build_readout(["calm", "../../escape"], [1], directions)
    write_readout(readout, tmp_path)
    with pytest.raises(UserError, match=fragment):
        load_readout(tmp_path)


def test_export_layers_are_block_indices_of_the_recorded_model(starter_corpus, tmp_path, tiny_model):
    from gguf import GGUFReader

    out = tmp_path / "out"
    run_extract(ExtractConfig(output_dir=out, corpus=starter_corpus, layers="1,2", heads=False), loader=lambda *a, **k: tiny_model)
    export = ["export", "--vectors", str(out), "--concept", "calm"]
    assert "out of range for a model with 3 layers" in one_line_exit_2(CliRunner().invoke(app, [*export, "--layers", "99"]))
    result = CliRunner().invoke(app, [*export, "--layers", "-1", "-o", str(tmp_path / "calm.gguf")])
    assert result.exit_code == 0, result.output
    assert [t.name for t in GGUFReader(str(tmp_path / "calm.gguf")).tensors] == ["direction.2"]  # the model's last block


# ---- the output directory describes one run ------------------------------------------------------


def test_a_later_run_removes_files_it_did_not_write_and_readers_refuse_strangers(starter_corpus, tmp_path, tiny_model, monkeypatch):
    from amygdala_tl.pipelines.report import run_report
    from amygdala_tl.pipelines.score import ScoreConfig, score_texts

    out = tmp_path / "out"
    relative = Path("corpus")
    monkeypatch.chdir(starter_corpus.parent)
    first = run_extract(ExtractConfig(output_dir=out, corpus=relative, layers="1,2", quality_report=True), loader=lambda *a, **k: tiny_model)
    assert {"per_head.json", "quality.json", "report.html"} <= set(first.record.files)
    second = run_extract(ExtractConfig(output_dir=out, corpus=relative, layers="2", heads=False), loader=lambda *a, **k: tiny_model)
    assert not (out / "per_head.json").exists() and not (out / "quality.json").exists() and not (out / "report.html").exists()
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == second.record.files
    # report works from another working directory (extract.json records absolute paths)
    monkeypatch.chdir(tmp_path.parent)
    quality, _ = run_report(out)
    assert quality["layers"] == [2] and "quality.json" in json.loads((out / "extract.json").read_text())["files"]
    # a readout copied in from another run is refused by the readers of extract.json
    other = tmp_path / "other"
    run_extract(ExtractConfig(output_dir=other, corpus=starter_corpus, layers="2", heads=False), loader=lambda *a, **k: tiny_model)
    (out / "readout.safetensors").write_bytes((other / "readout.safetensors").read_bytes())
    with pytest.raises(UserError, match="does not belong to the run"):
        score_texts(ScoreConfig(vectors=out, texts=["the cat"]), loader=never_load)
    # and report refuses a cache that holds nothing for this run
    with pytest.raises(UserError, match="no entries for this run"):
        run_report(other, cache_dir=tmp_path / "empty-cache")


def test_score_truncates_a_long_text_as_extract_did_and_says_so(starter_corpus, tmp_path, tiny_model, monkeypatch):
    from amygdala_tl.pipelines.score import ScoreConfig, score_texts

    monkeypatch.setattr("amygdala_tl.pipelines.vectors.preflight", lambda *a, **k: None)  # the tiny model has no hub id to check

    out = tmp_path / "out"
    run_extract(ExtractConfig(output_dir=out, corpus=starter_corpus, layers="2", heads=False, max_length=32), loader=lambda *a, **k: tiny_model)
    warnings: list[str] = []
    results = score_texts(ScoreConfig(vectors=out, texts=["the cat sat " * 400, "the dog"]), loader=lambda *a, **k: tiny_model, warn=warnings.append)
    assert len(results) == 2 and len(warnings) == 1 and "text 1" in warnings[0] and "32" in warnings[0]


# ---- the development test set and cross-validation: checked before the model, never trained on ------------


def heldout_copy(starter_corpus: Path, concept: str, text: str, name: str = "h.txt") -> Path:
    return write(starter_corpus / "heldout" / concept / name, text)


def test_a_heldout_text_that_is_also_a_training_text_is_refused_before_the_load(starter_corpus, tmp_path):
    training = sorted((starter_corpus / "stories" / "calm").glob("*.txt"))[0]
    copy = heldout_copy(starter_corpus, "calm", training.read_text())
    with pytest.raises(UserError, match=f"{copy}.*same text as training story"):
        run_extract(ExtractConfig(output_dir=tmp_path / "out", corpus=starter_corpus, quality_report=True), loader=never_load)


def test_cross_validation_folds_always_leave_every_concept_a_training_story():
    """Small corpora with paired scenarios used to give folds that emptied a concept (a crash after the
    whole capture) or held one text (a NaN z-score). Every fold now keeps each concept in training and
    holds two texts or more, or the corpus is refused with a one-line error."""
    import random

    from amygdala_tl.quality.heldout import cv_folds

    for seed in range(40):
        rng = random.Random(seed)
        n_concepts, groups, labels = rng.randint(2, 4), [], []
        for concept in range(n_concepts):  # one to three unpaired stories each
            for _ in range(rng.randint(1, 3)):
                groups.append(len(groups) + 1000)
                labels.append(concept)
        for scenario in range(rng.randint(1, 3)):  # scenarios: a baseline and a framing of some concepts
            framed = rng.sample(range(n_concepts), rng.randint(1, n_concepts))
            groups += [scenario] * (len(framed) + 1)
            labels += [*framed, -1]
        membership = torch.tensor([[label == c for label in labels] for c in range(n_concepts)])
        try:
            folds = cv_folds(membership, groups)
        except UserError:
            continue
        for held in folds:
            kept = torch.ones(len(labels), dtype=torch.bool)
            kept[torch.from_numpy(held)] = False
            assert len(held) >= 2 and bool(membership[:, kept].any(1).all()), f"layout {seed}"


def test_report_leads_with_the_test_set_and_refuses_an_edited_one(starter_corpus, tmp_path, tiny_model, monkeypatch):
    from amygdala_tl.pipelines.report import run_report

    heldout_copy(starter_corpus, "calm", "the quiet room was warm and the tea was slow in the morning light")
    heldout_copy(starter_corpus, "afraid", "the cold night and the dog at the door and the road was dark")
    heldout_copy(starter_corpus, "_neutral", "the table had a cup and a chair by the window")
    out = tmp_path / "out"
    result = run_extract(ExtractConfig(output_dir=out, corpus=starter_corpus, layers="1,2", quality_report=True), loader=lambda *a, **k: tiny_model)
    heldout = result.quality["heldout"]
    assert heldout["protocol"] == "development test set" and heldout["protocols"]["grouped_cv"]["protocol"] == "grouped cross-validation"
    assert result.record.heldout_sha256 and heldout["layers"]["1"]["n_texts"] == 3
    monkeypatch.setattr("amygdala_tl.model.load_model", never_load)
    assert run_report(out)[0]["heldout"]["layers"] == heldout["layers"]  # from the store, no model
    heldout_copy(starter_corpus, "joyful", "the sun on the river and the bread was warm", "moved.txt")
    with pytest.raises(UserError, match="changed since extract"):
        run_report(out)


def test_denoising_never_projects_out_more_directions_than_the_neutral_texts_span():
    from amygdala_tl.directions.registry import neutral_components

    acts = torch.randn(10, 6, generator=torch.Generator().manual_seed(0))
    one, three = torch.zeros(10, dtype=torch.bool), torch.zeros(10, dtype=torch.bool)
    one[0], three[:3] = True, True
    assert neutral_components(acts, one, 4).shape == (6, 0)  # one text spans no direction around its own mean
    assert neutral_components(acts, three, 4).shape == (6, 2)
