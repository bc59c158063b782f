"""Capture activations by hook name: one forward pass per unique text, every requested hook at once.

Per-token activations live only for the current batch and only for the target layers; what is
kept is pooled per text (fp32, CPU), so memory is O(texts x layers x d_model).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
from einops import einsum, rearrange
from jaxtyping import Float, Int
from torch import Tensor

from . import hooks
from .corpus import text_sha256
from .errors import UserError
from .model import LoadedModel

if TYPE_CHECKING:
    from .store import ActivationStore

Pooling = Literal["last", "mean"]
POOLINGS: tuple[str, ...] = ("last", "mean")
# Called after each batch with (text indices, {hook name: [batch, pos, ...] activations}, mask).
TokenSink = Callable[[list[int], dict[str, Tensor], Int[Tensor, "batch pos"]], None]
ProgressCallback = Callable[[int, int], None]


@dataclass
class Activations:
    """Pooled activations of every text at every target layer (rows follow the input text order)."""

    layers: list[int]
    resid: Float[Tensor, "n_layers n_texts d_model"]
    z: Float[Tensor, "n_head_layers n_texts n_heads d_head"] | None = None
    head_layers: list[int] = field(default_factory=list)  # the layers z covers
    n_tokens: list[int] = field(default_factory=list)
    truncated: list[int] = field(default_factory=list)  # indices of texts cut to max_length
    n_forward_passes: int = 0

    def at(self, layer: int) -> Float[Tensor, "n_texts d_model"]:
        return self.resid[self.layers.index(layer)]


@dataclass(frozen=True)
class Batch:
    indices: list[int]
    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]


def last_token_index(attention_mask: Int[Tensor, "batch pos"]) -> Int[Tensor, " batch"]:
    """Position of each row's last real token, whichever side the padding is on."""
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (attention_mask * positions).argmax(dim=-1)


def pool(
    acts: Float[Tensor, "batch pos *feature"], attention_mask: Int[Tensor, "batch pos"], pooling: Pooling
) -> Float[Tensor, "batch *feature"]:
    """`last`: the real last token (what the serving side reads); `mean`: mean over real tokens."""
    acts = acts.float()
    mask = attention_mask.to(acts.device, acts.dtype)
    if pooling == "last":
        rows = torch.arange(acts.shape[0], device=acts.device)
        return acts[rows, last_token_index(mask.long())]
    if pooling == "mean":
        flat = rearrange(acts, "batch pos ... -> batch pos (...)")
        summed = einsum(flat, mask, "batch pos f, batch pos -> batch f") / mask.sum(-1, keepdim=True)
        return summed.reshape(acts.shape[0], *acts.shape[2:])
    raise UserError(f"unknown pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], list[int]]:
    """Token ids per text, keeping the END of a text longer than max_length (leading specials kept).

    Returns the ids and the indices of the texts that were truncated.
    """
    prefix = len(tokenizer("", add_special_tokens=True)["input_ids"])
    if max_length <= prefix:
        raise UserError(f"--max-length {max_length} leaves no room for text")
    ids, truncated = [], []
    for index, text in enumerate(texts):
        tokens = tokenizer(text, add_special_tokens=True)["input_ids"]
        if len(tokens) > max_length:
            tokens = tokens[:prefix] + tokens[len(tokens) - (max_length - prefix) :]
            truncated.append(index)
        ids.append(tokens)
    return ids, truncated


def make_batches(token_ids: list[list[int]], batch_size: int, pad_id: int) -> list[Batch]:
    """Right-padded batches of similar-length texts (sorted by length to waste little padding)."""
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


def run_batch(model: LoadedModel, batch: Batch, hook_names: list[str], extra_hooks: Sequence = ()) -> dict[str, Tensor]:
    """One forward pass with a storing hook on every requested name; stops after the last needed block.

    `extra_hooks` (e.g. an ablation or a steering vector) run before the storing hooks."""
    store: dict[str, Tensor] = {}

    def keep(name: str):
        def hook(act: Tensor, hook) -> None:  # noqa: ARG001 - TL hook signature
            store[name] = act.detach()

        return hook

    last_block = max(hooks.layer_of(name) for name in hook_names)
    stop = last_block + 1 if last_block + 1 < model.facts.n_layers else None
    device = model.bridge.cfg.device
    with torch.inference_mode():
        model.bridge.run_with_hooks(
            batch.input_ids.to(device),
            fwd_hooks=list(extra_hooks) + [(name, keep(name)) for name in hook_names],
            attention_mask=batch.attention_mask.to(device),
            return_type=None,
            stop_at_layer=stop,
        )
    return store


def last_token_resid(model: LoadedModel, batches: Sequence[Batch], layers: Sequence[int], extra_hooks: Sequence = ()) -> dict[int, Float[Tensor, "n_texts d_model"]]:
    """Residual at each text's last real token for `layers` (fp32 CPU), optionally under extra hooks."""
    n_texts = sum(len(batch.indices) for batch in batches)
    out = {layer: torch.zeros(n_texts, model.facts.d_model) for layer in layers}
    for batch in batches:
        store = run_batch(model, batch, [hooks.resid_post(layer) for layer in layers], extra_hooks)
        for layer in layers:
            out[layer][batch.indices] = pool(store[hooks.resid_post(layer)], batch.attention_mask, "last").cpu()
    return out


def iter_pooled_batches(
    model: LoadedModel,
    token_ids: list[list[int]],
    hook_names: list[str],
    *,
    pooling: Pooling = "last",
    batch_size: int = 8,
    token_sink: TokenSink | None = None,
) -> Iterator[tuple[list[int], dict[str, Tensor]]]:
    """Yield (text indices, {hook name: pooled fp32 CPU [batch, ...]}) batch by batch.

    A consumer that persists each batch (the activation store) loses at most one batch to a crash.
    """
    if pooling not in POOLINGS:
        raise UserError(f"unknown pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    for batch in make_batches(token_ids, batch_size, model.tokenizer.pad_token_id):
        store = run_batch(model, batch, hook_names)
        pooled = {name: pool(store[name], batch.attention_mask, pooling).cpu() for name in hook_names}
        if token_sink is not None:
            token_sink(batch.indices, store, batch.attention_mask)
        yield batch.indices, pooled


def capture(
    model: LoadedModel,
    texts: Sequence[str],
    layers: list[int],
    *,
    pooling: str = "last",
    head_layers: Sequence[int] = (),
    batch_size: int = 8,
    max_length: int = 512,
    token_sink: TokenSink | None = None,
    store: ActivationStore | None = None,
    on_progress: ProgressCallback | None = None,
) -> Activations:
    """Pooled residual activations at `layers` (and per-head z at `head_layers`), one pass per text.

    Texts already in `store` cost no forward pass, and every batch run is written to it. With a
    token sink (the subspace method needs per-token activations) every text is run.
    """
    facts = model.facts
    shapes = hook_shapes(layers, head_layers, facts.d_model, facts.n_heads, facts.d_head)
    token_ids, truncated = tokenize(model.tokenizer, texts, max_length)
    digests = [text_sha256(text) for text in texts]
    found = store.lookup(digests, shapes) if store is not None and token_sink is None else {name: {} for name in shapes}
    missing = [i for i, digest in enumerate(digests) if any(digest not in found[name] for name in shapes)]
    columns = {name: [found[name].get(digest) for digest in digests] for name in shapes}

    n_passes, done = 0, len(texts) - len(missing)
    if on_progress is not None:
        on_progress(done, len(texts))
    batches = iter_pooled_batches(model, [token_ids[i] for i in missing], list(shapes), pooling=pooling,
                                  batch_size=batch_size, token_sink=_reindexed(token_sink, missing) if token_sink else None)
    for local, pooled in batches:
        indices = [missing[i] for i in local]
        if store is not None:
            store.write_batch([digests[i] for i in indices], pooled)
        for name, values in pooled.items():
            for row, index in enumerate(indices):
                columns[name][index] = values[row]
        n_passes, done = n_passes + 1, done + len(indices)
        if on_progress is not None:
            on_progress(done, len(texts))
    activations = assemble(columns, layers, head_layers)
    activations.n_tokens, activations.truncated = [len(ids) for ids in token_ids], truncated
    activations.n_forward_passes = n_passes
    return activations


def _reindexed(sink: TokenSink, mapping: list[int]) -> TokenSink:
    return lambda indices, store, mask: sink([mapping[i] for i in indices], store, mask)


def hook_shapes(layers: Sequence[int], head_layers: Sequence[int], d_model: int, n_heads: int, d_head: int) -> dict[str, tuple[int, ...]]:
    """The per-text pooled shape of every hook a capture requests."""
    shapes = {hooks.resid_post(layer): (d_model,) for layer in layers}
    return shapes | {hooks.attn_z(layer): (n_heads, d_head) for layer in head_layers}


def assemble(columns: dict[str, list[Tensor]], layers: Sequence[int], head_layers: Sequence[int]) -> Activations:
    """Stack per-text pooled vectors (from a capture or the store) into an Activations."""
    resid = torch.stack([torch.stack(columns[hooks.resid_post(layer)]) for layer in layers])
    z = torch.stack([torch.stack(columns[hooks.attn_z(layer)]) for layer in head_layers]) if head_layers else None
    return Activations(layers=list(layers), resid=resid, z=z, head_layers=list(head_layers))
