"""A method owns its parameters: declared with defaults and checks, set by `--param NAME=VALUE` or `params={...}`,
passed to its fit as `inputs.params`, recorded in extract.json, and rebuilt from there by `report`."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import amygdala_tl as at
from amygdala_tl.cli import app
from amygdala_tl.directions.pooled import diff_of_means, normalize
from amygdala_tl.directions.registry import METHODS, MethodInputs, parse_params
from amygdala_tl.errors import UserError
from amygdala_tl.pipelines.compare import compare_methods
from amygdala_tl.pipelines.report import run_report

from ..conftest import REPO


def never_load(*args, **kwargs):
    raise AssertionError("the model must not load for this error")


@pytest.fixture
def scaled():
    """A method with one parameter, registered through the public API; the values its fit saw."""
    seen: list[float] = []

    def fit(acts, membership, inputs):
        seen.append(inputs.params["shrink"])
        centre = acts.mean(0)
        return normalize(diff_of_means(centre + inputs.params["shrink"] * (acts - centre), membership)).float()

    check = lambda value: 0 < value <= 1  # noqa: E731
    at.register(at.Method("shrunk", fit, "diff-of-means", params=(at.Param("shrink", 1.0, "share kept", check=check, expected="in (0, 1]"),)))
    yield seen
    METHODS.pop("shrunk")


def test_a_registered_parameter_reaches_the_fit_the_run_record_and_report(scaled, starter_corpus, tmp_path, tiny_model):
    out = tmp_path / "out"
    run = at.extract(
        starter_corpus, out, method="shrunk", params={"shrink": 0.5}, layers="1,2", quality_report=True, loader=lambda *a, **k: tiny_model
    )
    assert scaled and set(scaled) == {0.5}  # every fit, held-out refits included
    sidecar = json.loads((out / "extract.json").read_text())
    assert sidecar["method"] == "shrunk" and sidecar["params"] == {"shrink": 0.5} == run.record.params
    original, n_fits = (out / "quality.json").read_text(), len(scaled)
    run_report(out)  # no model: the method rebuilt from extract.json's method and params
    assert len(scaled) > n_fits and set(scaled) == {0.5}
    assert (out / "quality.json").read_text() == original


def test_a_parameter_left_out_is_its_default_and_a_bad_one_fails_before_the_load(scaled, starter_corpus, tmp_path, tiny_model):
    run = at.extract(starter_corpus, tmp_path / "out", method="shrunk", layers="2", heads=False, loader=lambda *a, **k: tiny_model)
    assert run.record.params == {"shrink": 1.0} and set(scaled) == {1.0}
    for params, message in (
        ({"shrink": 2.0}, "--param shrink of the shrunk method must be in (0, 1], got 2.0"),
        ({"shrink": "a lot"}, "--param shrink of the shrunk method must be in (0, 1], got a lot"),
        ({"shrink": True}, "--param shrink of the shrunk method must be in"),
        ({"shrinkage": 0.5}, "unknown --param 'shrinkage' for the shrunk method: it takes shrink"),
    ):
        with pytest.raises(UserError, match=re.escape(message)):
            at.extract(starter_corpus, tmp_path / "bad", method="shrunk", params=params, loader=never_load)
    assert not (tmp_path / "bad").exists()


def test_the_command_line_passes_param_to_the_method(scaled, starter_corpus, tmp_path, tiny_model, monkeypatch):
    monkeypatch.setattr("amygdala_tl.pipelines.setup.load_model", lambda *a, **k: tiny_model)
    out = tmp_path / "out"
    args = ["extract", "--corpus", str(starter_corpus), "-o", str(out), "--layers", "2", "--method", "shrunk", "--param", "shrink=0.25"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "extract.json").read_text())["params"] == {"shrink": 0.25} and set(scaled) == {0.25}
    for bad, message in (("shrink=0", "must be in (0, 1], got 0"), ("shrink", "--param must be NAME=VALUE, got 'shrink'")):
        result = CliRunner().invoke(app, [*args[:-1], bad])
        assert result.exit_code == 2 and message in result.output


def test_compare_methods_gives_each_method_the_parameters_it_has(scaled, starter_corpus, tmp_path, tiny_model):
    config = at.ExtractConfig(output_dir=tmp_path / "out", corpus=starter_corpus, layers="1,2", params={"shrink": 0.75, "c": 0.5})
    rows = compare_methods(config, ["pooled", "shrunk", "logistic_l1"], ["last"], loader=lambda *a, **k: tiny_model)
    assert [row.method for row in rows] == ["pooled", "shrunk", "logistic_l1"] and set(scaled) == {0.75}
    with pytest.raises(UserError, match="unknown --param 'c': none of the compared methods"):
        compare_methods(at.ExtractConfig(output_dir=tmp_path / "out", corpus=starter_corpus, params={"c": 0.5}), ["pooled"], loader=never_load)


def test_builtin_parameters_parse_and_check():
    subspace, l1 = METHODS["subspace"], METHODS["logistic_l1"]
    assert subspace.values == {"k": None, "eigen_k": 5} and l1.values == {"c": 0.05}
    assert subspace.bind(parse_params(["k=4", "eigen_k=2"])).values == {"k": 4, "eigen_k": 2}
    assert subspace.bind({"k": "none"}).values["k"] is None and l1.bind({"c": "0.5"}).values == {"c": 0.5}
    for method, values, message in (
        (subspace, {"k": "1.5"}, "--param k of the subspace method must be an integer of at least 1 or none, got 1.5"),
        (subspace, {"eigen_k": 0}, "--param eigen_k of the subspace method must be an integer of at least 1, got 0"),
        (l1, {"c": "inf"}, "--param c of the logistic_l1 method must be a finite positive number, got inf"),
        (METHODS["lda"], {"c": 1}, "unknown --param 'c' for the lda method: it takes none"),
    ):
        with pytest.raises(UserError, match=re.escape(message)):
            method.bind(values)


def test_subspace_parameters_reach_the_capture_and_the_fit(starter_corpus, tmp_path, tiny_model, monkeypatch):
    from amygdala_tl.directions import registry

    ranks, collector = [], registry.SubspaceCollector
    monkeypatch.setattr(registry, "SubspaceCollector", lambda layers, n_texts, k=None: ranks.append(k) or collector(layers, n_texts, k))
    run = at.extract(
        starter_corpus, tmp_path / "out", method="subspace", params={"k": 2, "eigen_k": 1}, layers="2", loader=lambda *a, **k: tiny_model
    )
    assert run.record.params == {"k": 2, "eigen_k": 1} and ranks == [2]
    assert run.subspace is not None and run.subspace["eigen_k"] == 1 and run.subspace["k"] == 2


# ---- the documented example: README (or docs/) "A method with one parameter" ---------------------------------


def documented_example() -> str:
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        if match := re.search(r"```python\n(# A method with one parameter.*?)```", path.read_text(encoding="utf-8"), re.S):
            return match.group(1)
    raise AssertionError("the example 'A method with one parameter' is in neither README.md nor docs/")


def test_the_documented_example_runs_and_its_parameter_shapes_the_directions(starter_corpus, tmp_path, tiny_model, monkeypatch, capsys):
    monkeypatch.chdir(Path(starter_corpus).parent)  # `corpus` is the starter corpus; `out` is written beside it
    monkeypatch.setattr(at, "extract", functools.partial(at.extract, loader=lambda *a, **k: tiny_model))
    namespace: dict = {}
    try:
        exec(compile(documented_example(), "README.md", "exec"), namespace)
    finally:
        METHODS.pop("clipped", None)
    assert capsys.readouterr().out.strip() == "clipped {'clip': 2.0}"
    run = namespace["run"]
    acts, membership = run.activations, run.corpus.membership(run.concepts)
    inputs = MethodInputs(run.corpus.baseline_partner(), params={"clip": 2.0})
    for slot, layer in enumerate(run.readout.layers):
        expected = namespace["clipped"](acts.resid[slot], membership, inputs)
        torch.testing.assert_close(run.readout.vectors[layer].float(), expected, atol=2e-3, rtol=0)
        default = namespace["clipped"](acts.resid[slot], membership, MethodInputs(inputs.partner, params={"clip": 3.0}))
        assert (default - expected).abs().max() > 1e-2  # the parameter changed the directions
