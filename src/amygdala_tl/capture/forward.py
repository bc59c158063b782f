"""The one forward-pass primitive, the one encoder, batching and pooling.

Every module that runs the model goes through `forward`: it owns inference mode, the device move,
the storing hooks and the early stop. No other module calls the bridge's run methods.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .. import hooks
from ..errors import UserError
from ..model import LoadedModel
from .pooling import pool

Intervention = tuple[str, Callable[..., Tensor | None]]  # (hook name, TransformerLens hook function)


@dataclass(frozen=True)
class Batch:
    indices: list[int]
    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]


@dataclass
class ForwardResult:
    acts: dict[str, Tensor]  # hook name -> activation, on the model's device
    logits: Float[Tensor, "batch pos vocab"] | None = None
    cache: Any = None  # the HF KV cache after this pass (`use_cache` / `cache` given), to hand to the next step


def bos_id(tokenizer) -> int:
    """The tokenizer's BOS, else EOS, else pad: the attention-sink position the head detectors need."""
    for candidate in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def encode(tokenizer, texts: Sequence[str], max_length: int | None = None, force_bos: bool = False) -> tuple[list[list[int]], list[int]]:
    """Token ids per text, and the indices of texts longer than `max_length`, which keep their END:
    the special tokens the tokenizer puts before and after the text stay, the text's first tokens go.

    Default: the tokenizer's own special tokens, as extraction and serving read text. `force_bos`:
    exactly one BOS (or EOS/pad) first, whatever the tokenizer adds, as the head detectors need."""
    ids, truncated = [], []
    for index, text in enumerate(texts):
        plain = tokenizer(text, add_special_tokens=False)["input_ids"]
        full = [bos_id(tokenizer), *plain] if force_bos else tokenizer(text, add_special_tokens=True)["input_ids"]
        lead = next((i for i in range(len(full) - len(plain) + 1) if full[i : i + len(plain)] == plain), 0)
        trail = len(full) - lead - len(plain)
        if max_length is not None and max_length <= lead + trail:
            raise UserError(f"--max-length {max_length} leaves no room for text")
        if max_length is not None and len(full) > max_length:
            full = full[:lead] + plain[len(plain) - (max_length - lead - trail) :] + full[len(full) - trail :]
            truncated.append(index)
        ids.append(full)
    return ids, truncated


def make_batches(token_ids: list[list[int]], batch_size: int, pad_id: int) -> list[Batch]:
    """Right-padded batches of similar-length texts (sorted by length to waste little padding)."""
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]), reverse=True)
    batches = []
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        width = max(len(token_ids[i]) for i in indices)
        input_ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(indices), width), dtype=torch.long)
        for row, i in enumerate(indices):
            input_ids[row, : len(token_ids[i])] = torch.tensor(token_ids[i])
            mask[row, : len(token_ids[i])] = 1
        batches.append(Batch(indices, input_ids, mask))
    return batches


def forward(
    model: LoadedModel,
    tokens: Tensor,
    *,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    read: Sequence[str] = (),
    interventions: Sequence[Intervention] = (),
    start_at: int | None = None,
    stop_after: int | None = None,
    logits: bool = False,
    grad: bool = False,
    skip_below: bool = False,
    use_cache: bool = False,
    cache: Any = None,
) -> ForwardResult:
    """Run the model once: `interventions` first, then the `read` hooks store what they see.

    `tokens` are token ids, or with `start_at` the residual entering block `start_at` (exact: the
    blocks below are not recomputed). Without `logits` the pass stops after the last block it needs
    (`stop_after`, else the last read block). `grad` keeps the autograd graph (attribution): the `read`
    tensors are then part of it, so `torch.autograd.grad(f(acts), acts[name])` is a gradient w.r.t. that hook.
    TransformerLens 4 resumes at `start_at` by running the blocks below it anyway and discarding their
    output; `skip_below` makes them pass their input through instead (block `start_at` swaps in `tokens`
    whatever they return; callers check one batch first, see `circuits.concept.resume_skips_exactly`).
    `use_cache` (a prefill) or `cache` (the previous step's `ForwardResult.cache`: `tokens` are then the new
    tokens only) is incremental decoding as a server does it: the pass computes only the new positions, and
    the hooks see those positions alone; it needs `logits`."""
    store: dict[str, Tensor] = {}
    wanted = set(read)

    def keep(name: str):
        def hook(act: Tensor, hook) -> Tensor | None:  # noqa: ARG001 - TL hook signature
            if not grad:
                store[name] = act.detach()
                if cut_short and wanted <= store.keys():
                    raise _AllRead
                return None
            # returned, so the stored tensor is the one the rest of the pass computes from and gradients
            # reach it (a hook point may hand its hook a reshaped view); a leaf if nothing before needs grad
            store[name] = act if act.requires_grad else act.detach().requires_grad_()
            return store[name]

        return hook

    last_block = stop_after if stop_after is not None else max((hooks.layer_of(name) for name in read), default=None)
    stop = None if logits or last_block is None or last_block + 1 >= model.facts.n_layers else last_block + 1
    # `stop_at_layer` cannot stop after the last block: end the pass once every read hook has fired,
    # so reading the last block never computes the final norm and the [batch, pos, vocab] logits
    cut_short = stop is None and not logits and bool(wanted)
    device = model.bridge.cfg.device
    kwargs: dict = {"attention_mask": attention_mask.to(device)} if attention_mask is not None else {}
    if start_at is not None:
        kwargs["start_at_layer"] = start_at
    cached = use_cache or cache is not None
    if cached and not logits:
        raise ValueError("a cached (incremental) forward returns logits: pass logits=True")
    if cached:
        kwargs |= {"past_key_values": cache} if cache is not None else {"use_cache": True}
    passing = _blocks_pass_through(model, start_at) if skip_below and start_at else contextlib.nullcontext()
    caching = _cache_reaches_attention(model) if cached else contextlib.nullcontext()
    with torch.inference_mode(not grad), torch.enable_grad() if grad else contextlib.nullcontext(), passing, caching:
        try:
            out = model.bridge.run_with_hooks(
                tokens.to(device),
                fwd_hooks=list(interventions) + [(name, keep(name)) for name in read],
                return_type=("logits_and_cache" if cached else "logits") if logits else None,
                stop_at_layer=stop,
                **kwargs,
            )
        except _AllRead:  # run_with_hooks removes its hooks on the way out
            out = None
    if cached:
        return ForwardResult(store, out[0], out[1])
    return ForwardResult(store, out if logits else None)


@contextlib.contextmanager
def _cache_reaches_attention(model: LoadedModel) -> Iterator[None]:
    """TransformerLens 4.3's attention bridges look for the KV cache under `past_key_values` (or
    `layer_past`), which transformers 5 renamed to `cache` on the way into each attention module: left
    alone, a cached step neither fills the cache nor reads it (the decode step attends to itself alone).
    For the duration, each attention bridge also gets the cache under the name it reads.
    tests/unit/test_generate.py checks a cached generation against full forwards, token by token."""

    def rename(module, args, kwargs):  # noqa: ARG001 - torch pre-hook signature
        if kwargs.get("cache") is not None and kwargs.get("past_key_values") is None:
            kwargs["past_key_values"] = kwargs["cache"]
        return args, kwargs

    attentions = [block.attn for block in model.bridge.blocks if getattr(block, "attn", None) is not None]  # hybrid models: some blocks have none
    handles = [attention.register_forward_pre_hook(rename, with_kwargs=True) for attention in attentions]
    try:
        with warnings.catch_warnings():  # the bridge passes HF the cache by its old name, deprecated in transformers 5
            warnings.filterwarnings("ignore", message="`past_key_values` is deprecated", category=FutureWarning)
            yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _blocks_pass_through(model: LoadedModel, below: int) -> Iterator[None]:
    """Blocks 0..below-1 return their hidden states unchanged for the duration (an instance `forward`)."""

    def through(*args, **kwargs):
        return args[0] if args else kwargs["hidden_states"]

    blocks = list(model.bridge.blocks)[:below]
    for block in blocks:  # object's own setattr: a bridge component forwards attribute writes to the HF module it wraps
        object.__setattr__(block, "forward", through)
    try:
        yield
    finally:
        for block in blocks:
            object.__delattr__(block, "forward")


class _AllRead(Exception):
    """Raised by the last read hook to fire when nothing after it is needed."""


def read_batch(model: LoadedModel, batch: Batch, read: Sequence[str], interventions: Sequence[Intervention] = ()) -> dict[str, Tensor]:
    """`forward` on a padded batch: the read activations by hook name."""
    return forward(model, batch.input_ids, attention_mask=batch.attention_mask, read=read, interventions=interventions).acts


def last_token_resid(
    model: LoadedModel, batches: Sequence[Batch], layers: Sequence[int], interventions: Sequence[Intervention] = ()
) -> dict[int, Float[Tensor, "n_texts d_model"]]:
    """Residual at each text's last real token for `layers` (fp32 CPU), optionally under interventions."""
    n_texts = sum(len(batch.indices) for batch in batches)
    out = {layer: torch.zeros(n_texts, model.facts.d_model) for layer in layers}
    for batch in batches:
        acts = read_batch(model, batch, [hooks.resid_post(layer) for layer in layers], interventions)
        for layer in layers:
            out[layer][batch.indices] = pool(acts[hooks.resid_post(layer)], batch.attention_mask, "last").cpu()
    return out
