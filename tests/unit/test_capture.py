"""Capture on a tiny random Llama: pooling, padding, truncation, one pass for every hook."""

from __future__ import annotations

import pytest
import torch

from amygdala_tl import hooks
from amygdala_tl.capture import capture
from amygdala_tl.capture.pooling import check_pooling, pool, reading, running_reading
from amygdala_tl.errors import UserError

TEXTS = ["the cat sat on the mat", "rain", "she had a cup of tea at the table in the morning and it was warm", "the dog", "quiet night"]


def single(model, text, layers, **kwargs):
    return capture(model, [text], layers, batch_size=1, **kwargs)


def test_last_pooling_reads_the_last_real_token_on_both_padding_sides():
    acts = torch.randn(3, 4, 2)
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    left = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]])
    assert torch.equal(pool(acts, right, "last"), acts[[0, 1, 2], [2, 3, 0]])
    assert torch.equal(pool(acts, left, "last"), acts[[0, 1, 2], [3, 3, 3]])


def reference_pool(tokens: torch.Tensor, pooling: str) -> torch.Tensor:
    """One text's real tokens [n, d] pooled by a plain loop (tail: mean of the last N; ema: the recurrence)."""
    if pooling.startswith("tail"):
        return tokens[-int(pooling[4:]) :].mean(0)
    alpha = 2 / (int(pooling[3:]) + 1)
    state = tokens[0]
    for token in tokens[1:]:
        state = alpha * token + (1 - alpha) * state
    return state


@pytest.mark.parametrize("pooling", ["tail1", "tail3", "tail16", "ema2", "ema5", "ema64"])
def test_windowed_poolings_equal_a_plain_loop_whatever_the_padding(pooling):
    acts = torch.randn(2, 7, 3, dtype=torch.float64).float()
    for mask in (torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1] * 7]), torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7])):
        expected = torch.stack([reference_pool(acts[row][mask[row].bool()], pooling) for row in range(2)])
        torch.testing.assert_close(pool(acts, mask, pooling), expected, atol=1e-6, rtol=1e-5)


def test_pooling_names_and_their_declared_readings():
    assert reading("mean") == {"pool": "mean", "span": "text"}
    assert reading("tail32") == {"pool": "mean", "span": "last_tokens", "n": 32}
    assert reading("ema3") == {"pool": "ema", "span": "text", "alpha": 0.5}
    for bad in ("tail0", "ema", "median", "tail-3", 3):
        with pytest.raises(UserError, match="--pooling"):
            check_pooling(bad)


def test_mean_pooling_ignores_padding():
    acts = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(pool(acts, mask, "mean"), torch.stack([acts[0, :2].mean(0), acts[1].mean(0)]))
    torch.testing.assert_close(pool(acts, mask, "last"), torch.stack([acts[0, 1], acts[1, 2]]))


def test_second_half_pooling_averages_the_second_half_of_the_real_tokens():
    acts = torch.arange(2 * 5 * 2, dtype=torch.float32).reshape(2, 5, 2)
    right = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])  # 4 real tokens -> the last 2; 5 -> the last 3
    torch.testing.assert_close(pool(acts, right, "second_half"), torch.stack([acts[0, 2:4].mean(0), acts[1, 2:5].mean(0)]))
    left = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])  # padding on the left: the same real tokens count
    torch.testing.assert_close(pool(acts, left, "second_half"), torch.stack([acts[0, 3:5].mean(0), acts[1, 2:5].mean(0)]))


@pytest.mark.parametrize("pooling", ["last", "second_half", "mean", "tail3", "ema4"])
def test_batched_padded_capture_equals_one_text_at_a_time(tiny_model, pooling):
    layers = [0, 2]
    batched = capture(tiny_model, TEXTS, layers, pooling=pooling, batch_size=3, head_layers=layers)
    assert batched.resid.shape == (2, len(TEXTS), 32) and batched.z.shape == (2, len(TEXTS), 4, 8)
    for i, text in enumerate(TEXTS):
        alone = single(tiny_model, text, layers, pooling=pooling, head_layers=layers)
        torch.testing.assert_close(batched.resid[:, i], alone.resid[:, 0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batched.z[:, i], alone.z[:, 0], atol=1e-5, rtol=1e-5)


def test_long_text_keeps_its_end_and_is_reported(tiny_model):
    long_text = " ".join(["the cat sat on the mat"] * 5) + " and the dog was quiet"
    acts = capture(tiny_model, [long_text, "rain"], [1], max_length=6)
    assert acts.truncated == [0] and acts.n_tokens == [6, 1]
    tail = single(tiny_model, "the mat and the dog was quiet".split(" ", 1)[1], [1])  # the last 6 words
    torch.testing.assert_close(acts.resid[0, 0], tail.resid[0, 0], atol=1e-5, rtol=1e-5)


def test_residual_and_heads_come_from_one_forward_pass_per_batch(tiny_model, monkeypatch):
    calls = []
    original = tiny_model.bridge.run_with_hooks

    def counting(*args, **kwargs):
        calls.append(sorted(name for name, _ in kwargs["fwd_hooks"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny_model.bridge, "run_with_hooks", counting)
    acts = capture(tiny_model, TEXTS, [1, 2], batch_size=2, head_layers=[1, 2])
    assert len(calls) == 3 == acts.n_forward_passes  # ceil(5 / 2)
    assert calls[0] == sorted([hooks.resid_post(1), hooks.resid_post(2), hooks.attn_z(1), hooks.attn_z(2)])


def test_reading_the_last_block_skips_the_unembedding(tiny_model):
    """stop_at_layer cannot stop after the last block: the pass ends once every read hook has fired."""
    from amygdala_tl.capture.forward import forward

    calls: list[int] = []
    handle = tiny_model.bridge.original_model.lm_head.register_forward_hook(lambda *_: calls.append(1))
    try:
        tokens = torch.tensor([[2, 3, 4, 5]])
        last = tiny_model.facts.n_layers - 1
        read = forward(tiny_model, tokens, read=[hooks.resid_post(last), hooks.attn_z(last)]).acts
        assert calls == [] and set(read) == {hooks.resid_post(last), hooks.attn_z(last)}
        full = forward(tiny_model, tokens, read=[hooks.resid_post(last)], logits=True)
        assert calls == [1] and full.logits is not None
        assert torch.equal(full.acts[hooks.resid_post(last)], read[hooks.resid_post(last)])
    finally:
        handle.remove()
    assert not any(point.fwd_hooks for point in tiny_model.bridge.hook_dict.values()), "hooks left behind"


@pytest.mark.parametrize("pooling", ["last", "mean", "second_half", "tail1", "tail3", "ema2", "ema5"])
def test_running_reading_at_each_position_equals_pooling_the_prefix(pooling):
    """What a client holds after token t (trace, generate --readout) is the reading of the text so far."""
    values = torch.randn(9, 4, dtype=torch.float64).float()
    running = running_reading(values, pooling)
    for t in range(9):
        prefix = pool(values[None, : t + 1], torch.ones(1, t + 1, dtype=torch.long), pooling)[0]
        torch.testing.assert_close(running[t], prefix, atol=1e-5, rtol=1e-5)
