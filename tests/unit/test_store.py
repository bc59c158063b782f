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

from amygdala_tl.capture import activations_from_store, capture
from amygdala_tl.capture.store import ActivationStore, StoreWarning

REPO = Path(__file__).resolve().parents[2]
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
    keys = {
        ActivationStore(tmp_path, identity, pooling, length).key
        for identity, pooling, length in [("m1", "last", 64), ("m2", "last", 64), ("m1", "mean", 64), ("m1", "last", 32)]
    }
    assert len(keys) == 4


def damage_shard(shard: Path, damage: str, tmp_path: Path, model) -> None:
    """Each way a shard can go bad and still parse (or not parse at all)."""
    from safetensors import safe_open

    from amygdala_tl.capture.store import tensor_digest

    if damage == "garbage":
        shard.write_bytes(b"\x00not a safetensors file")
        return
    if damage == "bit_flip":  # a flipped low mantissa bit in the last tensor byte: still parses, silently different
        data = bytearray(shard.read_bytes())
        data[-2] ^= 0x01
        shard.write_bytes(bytes(data))
        return
    if damage == "other_key":  # a shard copied in from another cache key (another --max-length)
        other = ActivationStore(tmp_path / "other", model.identity, "last", 32)
        written = other.write_batch(["x"] * 2, {"blocks.1.hook_resid_post": torch.zeros(2, 32)})
        shard.write_bytes(written.read_bytes())
        return
    with safe_open(str(shard), framework="pt") as handle:
        metadata, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
    name = "blocks.1.hook_resid_post"
    if damage == "wrong_shape":
        tensors[name] = tensors[name][:, :16].contiguous()
    elif damage == "wrong_dtype":
        tensors[name] = tensors[name].double()
    elif damage == "nan_with_valid_checksum":  # the checksum alone would pass: the finite check must catch it
        tensors[name][0, 0] = float("nan")
        metadata["sha256"] = tensor_digest(tensors)
    elif damage == "no_metadata":
        metadata = None
    save_file(tensors, shard, metadata=metadata)


@pytest.mark.parametrize("damage", ["garbage", "bit_flip", "other_key", "wrong_shape", "wrong_dtype", "nan_with_valid_checksum", "no_metadata"])
def test_unusable_shards_are_moved_aside_and_recomputed_bit_for_bit(tiny_model, tmp_path, damage):
    store = new_store(tmp_path, tiny_model)
    clean = run(tiny_model, store)
    shard = store.shards()[0]
    damage_shard(shard, damage, tmp_path, tiny_model)
    with pytest.warns(StoreWarning, match=shard.name) as caught:
        recovered = run(tiny_model, store)
    assert len([w for w in caught if issubclass(w.category, StoreWarning)]) == 1  # one line, not one per tensor
    assert recovered.n_forward_passes == 1  # only the damaged shard's batch
    assert torch.equal(recovered.resid, clean.resid) and torch.equal(recovered.z, clean.z)
    assert shard.with_suffix(".corrupt").is_file() and shard not in store.shards()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)  # moved aside: the next run does not warn again
        assert run(tiny_model, store).n_forward_passes == 0


def test_killed_run_resumes_losing_at_most_one_batch_and_matches_bit_for_bit(tiny_model, tmp_path):
    root = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.store_worker", str(root)], cwd=REPO, env=env, stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True
    )
    progress = []
    for line in worker.stdout:
        progress.append(line.strip())
        if line.startswith("done") and int(line.split()[1]) >= 6:  # three of eight batches written, the worker waiting
            worker.send_signal(signal.SIGKILL)
            break
        worker.stdin.write("go\n")
        worker.stdin.flush()
    worker.wait(timeout=60)
    assert "finished" not in progress and worker.returncode == -signal.SIGKILL
    store = ActivationStore(root, tiny_model.identity, "last", 64)
    written = len(store.shards())
    assert 3 <= written < 8, "the kill must land mid-run"
    resumed = run(tiny_model, store)
    assert resumed.n_forward_passes == 8 - written
    uninterrupted = run(tiny_model, None)
    assert torch.equal(resumed.resid, uninterrupted.resid) and torch.equal(resumed.z, uninterrupted.z)


def test_a_partial_hit_reruns_each_text_missing_any_hook_once_and_matches_an_uncached_capture(tiny_model, tmp_path):
    """Texts cached for layer 1 only, or for nothing, get one pass each for every hook; fully cached texts none.
    One text per batch, so the batches are the uncached run's and the values must be bit-equal."""
    store = new_store(tmp_path, tiny_model)

    def one_by_one(texts, layers, head_layers=(), store=store):
        return capture(tiny_model, texts, layers, head_layers=head_layers, batch_size=1, max_length=64, store=store)

    assert one_by_one(TEXTS[:8], [1]).n_forward_passes == 8
    assert one_by_one(TEXTS[4:8], [1, 2], [2]).n_forward_passes == 4  # layer 1 cached, layer 2 and its heads not
    partial = one_by_one(TEXTS, [1, 2], [2])
    assert partial.n_forward_passes == 12  # texts 0-3 lack layer 2, texts 8-15 lack everything, texts 4-7 are whole
    uncached = one_by_one(TEXTS, [1, 2], [2], store=None)
    assert torch.equal(partial.resid, uncached.resid) and torch.equal(partial.z, uncached.z)
    assert one_by_one(TEXTS, [1, 2], [2]).n_forward_passes == 0
