"""The activation store: reuse, partial re-capture, corrupt entries, and resume after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from amygdala_tl.capture import capture
from amygdala_tl.store import ActivationStore, StoreWarning, activations_from_store

REPO = Path(__file__).resolve().parents[1]
WORDS = "the cat sat on the mat and the dog was quiet in the warm room at night".split()
TEXTS = [" ".join(WORDS[i % 7 : i % 7 + 3 + i % 9]) + f" {WORDS[i % 17]}" for i in range(16)]


def run(model, store, texts=TEXTS):
    return capture(model, texts, [1, 2], head_layers=[2], batch_size=2, max_length=64, store=store)


def new_store(tmp_path, model):
    return ActivationStore(tmp_path / "cache", model.identity, "last", 64)


def test_rerun_does_zero_forward_passes_and_changed_text_recaptures_alone(tiny_model, tmp_path):
    store = new_store(tmp_path, tiny_model)
    first = run(tiny_model, store)
    assert first.n_forward_passes == 8
    again = run(tiny_model, store)
    assert again.n_forward_passes == 0
    assert torch.equal(again.resid, first.resid) and torch.equal(again.z, first.z)
    edited = list(TEXTS)
    edited[5] = "the rain was cold on the window"
    changed = run(tiny_model, store, edited)
    assert changed.n_forward_passes == 1
    assert torch.equal(changed.resid[:, :5], first.resid[:, :5]) and not torch.equal(changed.resid[:, 5], first.resid[:, 5])
    # a request for fewer hooks (another method or a report) reuses everything
    subset = capture(tiny_model, TEXTS, [1], batch_size=2, max_length=64, store=store)
    assert subset.n_forward_passes == 0 and torch.equal(subset.resid[0], first.resid[0])
    # and the model-free path reads the same numbers
    stored = activations_from_store(store, TEXTS, [1, 2], [2], 32, 4, 8)
    assert torch.equal(stored.resid, first.resid) and torch.equal(stored.z, first.z)


def test_store_is_keyed_by_model_pooling_and_length(tiny_model, tmp_path):
    keys = {ActivationStore(tmp_path, identity, pooling, length).key
            for identity, pooling, length in [("m1", "last", 64), ("m2", "last", 64), ("m1", "mean", 64), ("m1", "last", 32)]}
    assert len(keys) == 4


@pytest.mark.parametrize("damage", ["garbage", "wrong_shape", "wrong_dtype"])
def test_corrupt_or_mismatched_entries_are_recomputed_with_a_warning(tiny_model, tmp_path, damage):
    store = new_store(tmp_path, tiny_model)
    clean = run(tiny_model, store)
    shard = store.shards()[0]
    if damage == "garbage":
        shard.write_bytes(b"\x00not a safetensors file")
    else:
        from safetensors import safe_open

        with safe_open(str(shard), framework="pt") as handle:
            metadata, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
        name = "blocks.1.hook_resid_post"
        tensors[name] = tensors[name][:, :16].contiguous() if damage == "wrong_shape" else tensors[name].double()
        save_file(tensors, shard, metadata=metadata)
    with pytest.warns(StoreWarning, match=shard.name):
        recovered = run(tiny_model, store)
    assert recovered.n_forward_passes == 1  # only the damaged shard's batch
    assert torch.equal(recovered.resid, clean.resid) and torch.equal(recovered.z, clean.z)


def test_killed_run_resumes_losing_at_most_one_batch_and_matches_bit_for_bit(tiny_model, tmp_path):
    root = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}"}
    worker = subprocess.Popen([sys.executable, "-m", "tests.store_worker", str(root)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, text=True)
    progress = []
    for line in worker.stdout:
        progress.append(line.strip())
        if line.startswith("done") and int(line.split()[1]) >= 6:  # three of eight batches written
            worker.send_signal(signal.SIGKILL)
            break
    worker.wait(timeout=60)
    assert "finished" not in progress and worker.returncode == -signal.SIGKILL
    store = ActivationStore(root, tiny_model.identity, "last", 64)
    written = len(store.shards())
    assert written >= 3
    resumed = run(tiny_model, store)
    assert resumed.n_forward_passes == 8 - written
    uninterrupted = run(tiny_model, None)
    assert torch.equal(resumed.resid, uninterrupted.resid) and torch.equal(resumed.z, uninterrupted.z)
