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
