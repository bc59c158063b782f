"""The output directory holds one run's files and nothing else is touched: what extract removes, what report
rewrites, what --vectors reads, and paths that cannot be written, each refused in one line before the work."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from amygdala_tl.cli import app
from amygdala_tl.errors import UserError
from amygdala_tl.formats.readout import load_readout
from amygdala_tl.pipelines.extract import ExtractConfig, run_extract
from amygdala_tl.pipelines.report import run_report
from amygdala_tl.pipelines.vectors import open_vectors
from amygdala_tl.rundir import RUN_FILES

from ..conftest import write


def never_load(*args, **kwargs):
    raise AssertionError("the model must not be loaded for this error")


def one_line_exit_2(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    return lines[0]


def small_run(corpus: Path, out: Path, model, **options):
    config = dict(output_dir=out, corpus=corpus, layers="2", method="pooled", heads=False, use_cache=False) | options
    return run_extract(ExtractConfig(**config), loader=lambda *a, **k: model)


def files_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.is_file())


@pytest.mark.parametrize("sidecar", [None, '{"files": ["report.html", "quality.json"]}', "not json"])
def test_extract_removes_only_files_a_recorded_run_wrote(starter_corpus, tmp_path, tiny_model, sidecar):
    out = tmp_path / "out"
    mine = {name: write(out / name, f"my own {name}\n") for name in ("report.html", "quality.json", "subspace.json", "per_head.json")}
    if sidecar is not None:  # an extract.json that is not a run record lists no run's files
        write(out / "extract.json", sidecar)
    small_run(starter_corpus, out, tiny_model)
    assert {name: path.read_text() for name, path in mine.items()} == {name: f"my own {name}\n" for name in mine}


def test_every_file_extract_writes_is_recorded_and_a_later_run_removes_those_it_did_not_write(starter_corpus, tmp_path, tiny_model):
    out = tmp_path / "out"
    first = small_run(starter_corpus, out, tiny_model, layers="1,2", method="subspace", heads=True, quality_report=True)
    assert first.record.files == files_in(out) == sorted(RUN_FILES)  # this run writes every file a run can write
    second = small_run(starter_corpus, out, tiny_model)  # pooled, no heads, no quality report
    assert (
        files_in(out) == second.record.files == ["calibration.json", "directions.safetensors", "extract.json", "readout.json", "readout.safetensors"]
    )


@pytest.mark.parametrize("listed", ["../outside.sh", "ABSOLUTE", "link.json"])
def test_report_rewrites_only_the_run_files_in_its_directory(starter_corpus, tmp_path, tiny_model, listed):
    out = tmp_path / "out"
    small_run(starter_corpus, out, tiny_model, use_cache=True)
    script = write(tmp_path / "outside.sh", "#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    (out / "link.json").symlink_to(script)
    name = str(script) if listed == "ABSOLUTE" else listed
    sidecar = json.loads((out / "extract.json").read_text())
    sidecar["files"].append(name)
    write(out / "extract.json", json.dumps(sidecar))
    with pytest.raises(UserError, match=f"lists '{name}' as a file of the run"):
        run_report(out)
    assert script.read_text() == "#!/bin/sh\necho hi\n" and script.stat().st_mode & 0o777 == 0o755 and (out / "link.json").is_symlink()


def test_report_refuses_a_run_file_that_is_missing_or_a_link(starter_corpus, tmp_path, tiny_model):
    out = tmp_path / "out"
    small_run(starter_corpus, out, tiny_model, use_cache=True)
    manifest = out / "readout.json"
    elsewhere = tmp_path / "elsewhere.json"
    manifest.rename(elsewhere)
    assert "readout.json" in one_line_exit_2(CliRunner().invoke(app, ["report", "-o", str(out)]))
    manifest.symlink_to(elsewhere)
    with pytest.raises(UserError, match="readout.json.*not a regular file"):
        run_report(out)
    assert manifest.is_symlink()


def test_an_empty_method_list_is_refused_before_the_load_and_keeps_compare_json(starter_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr("amygdala_tl.pipelines.setup.load_model", never_load)
    previous = write(tmp_path / "out" / "compare.json", '{"methods": ["an earlier table"]}\n')
    result = CliRunner().invoke(app, ["compare-methods", "--methods", ",", "--corpus", str(starter_corpus), "-o", str(tmp_path / "out")])
    assert "--methods is empty" in one_line_exit_2(result)
    assert previous.read_text() == '{"methods": ["an earlier table"]}\n'


def test_vectors_that_do_not_exist_are_named_not_read_from_the_parent(starter_corpus, tmp_path, tiny_model):
    out = tmp_path / "out"
    small_run(starter_corpus, out, tiny_model)
    for path in (out / "typo_dir", out / "extract.json"):
        with pytest.raises(UserError, match=str(path)):
            load_readout(path)
    typo = ["export", "--vectors", str(out / "typo_dir"), "--concept", "calm"]
    assert "no such readout directory" in one_line_exit_2(CliRunner().invoke(app, typo))
    assert not list(out.rglob("*.gguf"))
    by_file = open_vectors(out / "readout.json")  # either file's path names its directory, with its run record
    assert by_file.directory == out and by_file.record is not None


def test_output_dirs_that_cannot_be_written_are_refused_before_the_load(starter_corpus, tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != locked and real_access(path, mode, **kw))  # root ignores chmod
    for option, config in (
        ("--output-dir", dict(output_dir=locked / "out")),
        ("--cache-dir", dict(output_dir=tmp_path / "out", cache_dir=locked / "cache")),
    ):
        with pytest.raises(UserError, match=f"{option} {locked}/.*: {locked} is not writable"):
            run_extract(ExtractConfig(corpus=starter_corpus, **config), loader=never_load)
    assert not list(locked.iterdir())


def test_export_to_an_existing_directory_is_one_line(starter_corpus, tmp_path, tiny_model):
    out = tmp_path / "out"
    small_run(starter_corpus, out, tiny_model)
    result = CliRunner().invoke(app, ["export", "--vectors", str(out), "--concept", "calm", "-o", str(tmp_path)])
    assert f"--output {tmp_path} is a directory" in one_line_exit_2(result)
