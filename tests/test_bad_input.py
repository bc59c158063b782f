"""Bad input, found before any work: files that disagree with each other, values past a limit, wrong
Python types. Every mistake is one UserError naming the file or value (exit 2 on the command line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from amygdala_tl.errors import UserError
from amygdala_tl.formats.readout import MANIFEST_FILE, Readout, build_readout, load_readout, write_readout
from amygdala_tl.pipelines.extract import ExtractConfig, run_extract


def never_load(*args, **kwargs):
    raise AssertionError("the model must not be loaded for this error")


def swap_first_two(manifest_path: Path) -> None:
    manifest = json.loads(manifest_path.read_text())
    manifest["concepts"][:2] = manifest["concepts"][1::-1]
    manifest_path.write_text(json.dumps(manifest))


# ---- item 6: the manifest, the safetensors metadata and extract.json agree -----------------------


def test_a_manifest_with_two_concepts_swapped_is_refused(tmp_path):
    write_readout(build_readout(["calm", "afraid", "bored"], [1], torch.randn(1, 3, 8)), tmp_path)
    assert json.loads(load_readout(tmp_path).metadata["concepts"]) == ["calm", "afraid", "bored"]
    swap_first_two(tmp_path / MANIFEST_FILE)
    with pytest.raises(UserError, match="readout.json: its concepts disagree"):
        load_readout(tmp_path)


def test_a_readout_whose_concepts_disagree_with_extract_json_is_refused(starter_corpus, tmp_path, tiny_model):
    from amygdala_tl.pipelines.export import export_control_vector

    out = tmp_path / "out"
    run_extract(ExtractConfig(output_dir=out, corpus=starter_corpus, layers="1,2", heads=False), loader=lambda *a, **k: tiny_model)
    readout = load_readout(out)
    swapped = [readout.concepts[1], readout.concepts[0], *readout.concepts[2:]]  # same run id, self-consistent files
    metadata = {key: value for key, value in readout.metadata.items() if key != "concepts"}
    write_readout(Readout(swapped, readout.layers, readout.vectors, readout.hidden_size, metadata), out)
    with pytest.raises(UserError, match="disagrees with extract.json"):
        export_control_vector(out, "calm")


# ---- item 12: the Python API takes natural types, and names the argument otherwise ---------------


def test_extract_takes_a_list_of_layers(starter_corpus, tmp_path, tiny_model):
    import amygdala_tl as at

    run = at.extract(starter_corpus, tmp_path / "out", layers=[1, -1], heads=False, loader=lambda *a, **k: tiny_model)
    assert run.readout.layers == [1, 2]


@pytest.mark.parametrize(
    "options, fragment",
    [
        (dict(batch_size="8"), "batch_size must be an integer, got '8'"),
        (dict(max_length=float("nan")), "max_length must be an integer, got nan"),
        (dict(heads="no"), "heads must be True or False"),
        (dict(layers=[1.5]), "layers must be a list of block indices"),
        (dict(layers=7), "layers must be a list of block indices"),
        (dict(cache_dir=3), "cache_dir must be a path"),
        (dict(layer="1"), "unknown option 'layer'"),
    ],
)
def test_extract_refuses_a_wrong_type_by_name_before_any_work(options, fragment, starter_corpus, tmp_path):
    import amygdala_tl as at

    with pytest.raises(UserError, match=fragment):
        at.extract(starter_corpus, tmp_path / "out", loader=never_load, **options)
    assert not (tmp_path / "out").exists()


API_MISTAKES = """
import amygdala_tl as at
calls = [
    lambda: at.load_model("x.gguf"),
    lambda: at.load_model(123),
    lambda: at.register("pooled"),
    lambda: at.load_readout(123),
    lambda: at.Head(-1, 5),
    lambda: at.Head(3, -2),
    lambda: at.Head(1.5, 0),
    lambda: at.Head(True, 0),
]
for call in calls:
    try:
        call()
        print("accepted")
    except Exception as error:
        print(type(error).__name__, error)
print(at.Head(3, 5) == (3, 5), at.Head(3, 5))
"""


def test_api_entry_points_refuse_wrong_types_with_a_user_error():
    """As a user's script meets them: in a plain interpreter, without the test run's type-checking import hook."""
    import os
    import subprocess
    import sys

    from .conftest import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    lines = subprocess.run([sys.executable, "-c", API_MISTAKES], env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    assert lines == [
        "UserError model file not found: x.gguf",
        "UserError model must be a hub id, a model directory or a .gguf path, got 123",
        "UserError register takes a Method(name, fit, summary), got 'pooled'; a plain fit callable goes to extract(method=...)",
        "UserError load_readout takes the path of a directory or file, got 123",
        "UserError Head layer must be a non-negative integer, got -1",
        "UserError Head head must be a non-negative integer, got -2",
        "UserError Head layer must be a non-negative integer, got 1.5",
        "UserError Head layer must be a non-negative integer, got True",
        "True L3H5",
    ]
