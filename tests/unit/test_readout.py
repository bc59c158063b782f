"""The serving export: format, round trip, validation of bad files, atomicity."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from amygdala_tl import atomic
from amygdala_tl.errors import UserError
from amygdala_tl.formats.readout import MANIFEST_KEYS, build_readout, load_readout, score

from ..conftest import write_readout


def make_readout(n_layers=3, n_concepts=4, d=64, seed=0, metadata=None):
    torch.manual_seed(seed)
    directions = torch.randn(n_layers, n_concepts, d) * 5
    return build_readout([f"c{i}" for i in range(n_concepts)], [3, 7, 11][:n_layers], directions, metadata), directions


def test_format_and_round_trip(tmp_path):
    readout, directions = make_readout(metadata={"model": "m", "method": "pooled"})
    vectors_path, manifest_path = write_readout(readout, tmp_path)
    manifest = json.loads(manifest_path.read_text())
    assert list(manifest) == list(MANIFEST_KEYS)
    assert manifest == {"concepts": ["c0", "c1", "c2", "c3"], "layers": [3, 7, 11], "hidden_size": 64, "dtype": "float16"}
    raw = load_file(vectors_path)
    assert sorted(raw) == ["layer_11.vectors", "layer_3.vectors", "layer_7.vectors"]
    loaded = load_readout(tmp_path)
    assert loaded.concepts == readout.concepts and loaded.layers == readout.layers
    assert loaded.metadata == {"model": "m", "method": "pooled", "concepts": json.dumps(readout.concepts)}
    for i, layer in enumerate(loaded.layers):
        vectors = loaded.vectors[layer]
        assert vectors.dtype == torch.float16 and vectors.shape == (4, 64)
        torch.testing.assert_close(vectors.float().norm(dim=-1), torch.ones(4), atol=1e-3, rtol=0)
        unit = directions[i] / directions[i].norm(dim=-1, keepdim=True)
        torch.testing.assert_close(vectors.float(), unit, atol=1e-3, rtol=0)


def test_fp16_scores_match_fp32_directions_within_tolerance(tmp_path):
    readout, directions = make_readout()
    write_readout(readout, tmp_path)
    hidden = {layer: torch.randn(5, 64) * 30 for layer in readout.layers}
    scores = score(load_readout(tmp_path), hidden)
    for i, layer in enumerate(readout.layers):
        unit = directions[i] / directions[i].norm(dim=-1, keepdim=True)
        exact = hidden[layer] @ unit.T
        # fp16 rounding: relative error per component <= 2^-11, so |error| <= |h| * sqrt(d) * 2^-11 bound
        bound = hidden[layer].norm(dim=-1, keepdim=True) * 2**-10
        assert ((scores[layer] - exact).abs() <= bound).all()


@pytest.mark.parametrize(
    "corrupt, fragment",
    [
        (
            lambda d: (d / "readout.json").write_text('{"concepts": ["a"], "layers": [1], "hidden_size": 64, "dtype": "float16", "extra": 1}'),
            "exactly the keys",
        ),
        (lambda d: (d / "readout.json").write_text("{not json"), "not valid JSON"),
        (lambda d: os.remove(d / "readout.safetensors"), "readout.safetensors"),
        (lambda d: save_file({"layer_3.vectors": torch.ones(4, 64, dtype=torch.float16) / 8}, d / "readout.safetensors"), "missing"),
        (lambda d: save_file({f"layer_{l}.vectors": torch.eye(4, 64) for l in (3, 7, 11)}, d / "readout.safetensors"), "expected float16"),
        (lambda d: save_file({f"layer_{l}.vectors": torch.eye(3, 64).half() for l in (3, 7, 11)}, d / "readout.safetensors"), "shape"),
        (lambda d: save_file({f"layer_{l}.vectors": 2 * torch.eye(4, 64).half() for l in (3, 7, 11)}, d / "readout.safetensors"), "unit norm"),
        (lambda d: (d / "readout.safetensors").write_bytes(b"garbage"), "safetensors"),
    ],
)
def test_loader_rejects_bad_files_with_clear_errors(tmp_path, corrupt, fragment):
    write_readout(make_readout()[0], tmp_path)
    corrupt(tmp_path)
    with pytest.raises(UserError, match=fragment):
        load_readout(tmp_path)


def test_interrupted_export_leaves_previous_files_intact(tmp_path, monkeypatch):
    old, _ = make_readout(seed=1)
    write_readout(old, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    real_fsync, calls = os.fsync, []

    def failing_fsync(fd):  # the second file's write fails, after the first was fully staged
        calls.append(fd)
        if len(calls) == 2:
            raise OSError("disk full")
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_readout(make_readout(seed=2)[0], tmp_path)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # same files, same bytes, no temp files left
    torch.testing.assert_close(load_readout(tmp_path).vectors[3], old.vectors[3])


def test_export_files_have_normal_permissions(tmp_path):
    vectors_path, _ = write_readout(make_readout()[0], tmp_path)
    mask = os.umask(0)
    os.umask(mask)
    assert vectors_path.stat().st_mode & 0o777 == 0o666 & ~mask
