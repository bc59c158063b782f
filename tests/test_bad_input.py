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
