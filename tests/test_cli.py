"""CLI behaviour that needs no model: one-line errors with exit code 2, corpus check on the shipped corpus."""

from __future__ import annotations

from typer.testing import CliRunner

from amygdala_tl.cli import app
from amygdala_tl.corpus import CONCEPTS

from .conftest import CORPUS


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
