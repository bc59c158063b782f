"""The README's Python API example runs as written (on the bundled model, a small corpus)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import amygdala_tl as at

pytestmark = pytest.mark.integration
README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_public_api_names_exist():
    assert set(at.__all__) <= set(dir(at))


def test_readme_example_runs(bundled, starter_corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(starter_corpus.parent)  # `corpus` is the starter corpus; `out` is written beside it
    monkeypatch.setattr("amygdala_tl.pipelines.setup.load_model", lambda *a, **k: bundled)
    namespace: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert namespace["vectors"].layers == [12, 14] and len(namespace["best"]) == 3
    assert all(name in namespace["run"].readout.concepts for name in eval(printed))
    trace = namespace["trace"]
    assert isinstance(trace, at.Trace) and trace.calibrated and len(namespace["top"]) == 3 and trace.layers == [12, 14]
