"""Pooling: how a text's per-token activations become one vector, and how a client reads a concept off a text.

These are one choice. The served readout is linear, so a weighted sum of the per-token served scores
<h_t, v> equals the score of the same weighted sum of the activations: a direction learned from
mean-pooled activations is read by averaging the per-token scores the server returns, and the
development set, cross-validation, `evaluate` and `score` all read texts with the pooling the vectors
were learned with. Every pooling is a set of per-token weights that sum to one over a text's real
tokens (whichever side the padding is on):

- `last`: the last token (what a server returns for one decode step)
- `mean`: every token of the text, equally
- `second_half`: the second half of the text's tokens, equally
- `tail<N>` (tail32): the last N tokens, equally (a window a server can keep while the model writes)
- `ema<N>` (ema32): an exponential moving average over the tokens with alpha = 2 / (N + 1), read at the
  last token (s_1 = x_1, s_t = alpha x_t + (1 - alpha) s_(t-1))
"""

from __future__ import annotations

import re

import torch
from einops import einsum, rearrange
from jaxtyping import Float, Int
from torch import Tensor

from ..errors import UserError

POOLINGS_HELP = "last, mean, second_half, tail<N> (mean of the last N tokens), ema<N> (moving average, alpha 2/(N+1))"
FIXED = ("last", "mean", "second_half")
WINDOWED = re.compile(r"^(tail|ema)([1-9][0-9]{0,5})$")
DEFAULT_POOLING = "tail128"  # best matched reading on both development sets (benchmarks/bench_reading.py), and a running window
COMPARED_POOLINGS = (DEFAULT_POOLING, "mean", "last")  # compare-methods' rows by default


def check_pooling(name: object, option: str = "--pooling") -> str:
    """The pooling name, or a one-line UserError naming the value."""
    if not isinstance(name, str) or not (name in FIXED or WINDOWED.match(name)):
        raise UserError(f"unknown {option} {name!r}: choose one of {POOLINGS_HELP}")
    return name


def reading(pooling: str) -> dict:
    """The declared reading: how a client turns per-token served scores into one concept score."""
    if pooling == "last":
        return {"pool": "last", "span": "text"}
    if pooling in ("mean", "second_half"):
        return {"pool": "mean", "span": "text" if pooling == "mean" else "second_half"}
    kind, n = WINDOWED.match(check_pooling(pooling)).groups()  # type: ignore[union-attr]
    if kind == "tail":
        return {"pool": "mean", "span": "last_tokens", "n": int(n)}
    return {"pool": "ema", "span": "text", "alpha": 2 / (int(n) + 1)}


def token_weights(attention_mask: Int[Tensor, "batch pos"], pooling: str) -> Float[Tensor, "batch pos"]:
    """Per-token weights of the pooling, zero on padding, summing to one over each text's real tokens."""
    mask = attention_mask.float()
    rank = mask.cumsum(-1) * mask  # 1..n on real tokens, 0 on padding
    from_end = (mask.sum(-1, keepdim=True) - rank) * mask  # 0 at the last real token
    check_pooling(pooling)
    if pooling == "last":
        weights = mask * (from_end == 0)
    elif pooling == "mean":
        weights = mask
    elif pooling == "second_half":
        weights = mask * (rank > mask.sum(-1, keepdim=True) // 2)
    elif pooling.startswith("tail"):
        weights = mask * (from_end < int(pooling[4:]))
    else:
        alpha = reading(pooling)["alpha"]
        decay = (1 - alpha) ** from_end.double()
        weights = (mask * torch.where(rank == 1, decay, alpha * decay)).float()  # sums to one already; normalized for rounding
    return weights / weights.sum(-1, keepdim=True)


def pool(acts: Float[Tensor, "batch pos *feature"], attention_mask: Int[Tensor, "batch pos"], pooling: str) -> Float[Tensor, "batch *feature"]:  # noqa: F821 - a jaxtyping shape
    """The weighted sum of each text's per-token activations under `pooling` (fp32)."""
    acts = acts.float()
    weights = token_weights(attention_mask.to(acts.device), pooling)
    flat = rearrange(acts, "batch pos ... -> batch pos (...)").masked_fill(rearrange(weights == 0, "batch pos -> batch pos 1"), 0.0)
    pooled = einsum(flat, weights, "batch pos f, batch pos -> batch f")
    return pooled.reshape(acts.shape[0], *acts.shape[2:])


def running_reading(per_token: Float[Tensor, "pos *feature"], pooling: str) -> Float[Tensor, "pos *feature"]:  # noqa: F821 - a jaxtyping shape
    """The declared reading at every position t: what a client holds after the server returned tokens 1..t
    (row t equals `pool` over the text's first t + 1 tokens). Per-token served scores in, running scores out."""
    check_pooling(pooling)
    x = per_token.double()
    n = x.shape[0]
    steps = torch.arange(1, n + 1, dtype=torch.float64).reshape(n, *([1] * (x.dim() - 1)))
    prefix = torch.cat([torch.zeros_like(x[:1]), x.cumsum(0)])  # prefix[t] = sum of the first t tokens
    if pooling == "last":
        out = x
    elif pooling == "mean":
        out = prefix[1:] / steps
    elif pooling == "second_half":
        start = (steps.long() // 2).flatten()  # the second half of t tokens: positions t // 2 .. t - 1
        out = (prefix[1:] - prefix[start]) / (steps - start.reshape(steps.shape).double())
    elif pooling.startswith("tail"):
        start = (steps.long().flatten() - int(pooling[4:])).clamp_min(0)
        out = (prefix[1:] - prefix[start]) / (steps - start.reshape(steps.shape).double())
    else:
        alpha, state, rows = reading(pooling)["alpha"], x[0], []
        for value in x:
            state = alpha * value + (1 - alpha) * state
            rows.append(state)
        out = torch.stack(rows)
    return out.to(per_token.dtype)
