"""Capture activations by hook name: one forward pass per unique text, every requested hook at once.

`capture` composes the three parts: look the texts up in the activation store, run `forward` for
the missing ones only, write each batch back. Per-token activations live only for the current
batch; what is kept is pooled per text (fp32, CPU): memory is O(texts x layers x d_model).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from jaxtyping import Int
from torch import Tensor

from ..corpus import text_sha256
from ..errors import UserError
from ..model import LoadedModel
from .activations import Activations, assemble, hook_shapes
from .forward import encode, make_batches, read_batch
from .pooling import DEFAULT_POOLING, check_pooling, pool
from .store import ActivationStore

# Called after each batch with (text indices, {hook name: [batch, pos, ...] activations}, mask).
TokenSink = Callable[[list[int], dict[str, Tensor], Int[Tensor, "batch pos"]], None]
ProgressCallback = Callable[[int, int], None]


def pooled_batches(
    model: LoadedModel,
    token_ids: list[list[int]],
    hook_names: list[str],
    *,
    pooling: str = DEFAULT_POOLING,
    batch_size: int = 8,
    token_sink: TokenSink | None = None,
) -> Iterator[tuple[list[int], dict[str, Tensor]]]:
    """Yield (text indices, {hook name: pooled fp32 CPU [batch, ...]}) batch by batch.

    A consumer that persists each batch (the activation store) loses at most one batch to a crash."""
    check_pooling(pooling, "pooling")
    for batch in make_batches(token_ids, batch_size, model.tokenizer.pad_token_id):
        acts = read_batch(model, batch, hook_names)
        if token_sink is not None:
            token_sink(batch.indices, acts, batch.attention_mask)
        yield batch.indices, {name: pool(acts[name], batch.attention_mask, pooling).cpu() for name in hook_names}


def capture(
    model: LoadedModel,
    texts: Sequence[str],
    layers: list[int],
    *,
    pooling: str = DEFAULT_POOLING,
    head_layers: Sequence[int] = (),
    batch_size: int = 8,
    max_length: int = 512,
    token_sink: TokenSink | None = None,
    store: ActivationStore | None = None,
    on_progress: ProgressCallback | None = None,
) -> Activations:
    """Pooled residual activations at `layers` (and per-head z at `head_layers`), one pass per text.

    Texts already in `store` cost no forward pass, and every batch run is written to it. With a
    token sink (the subspace method needs per-token activations) every text is run."""
    facts = model.facts
    shapes = hook_shapes(layers, head_layers, facts.d_model, facts.n_heads, facts.d_head)
    token_ids, truncated = encode(model.tokenizer, texts, max_length)
    digests = [text_sha256(text) for text in texts]
    found = store.lookup(digests, shapes) if store is not None and token_sink is None else {name: {} for name in shapes}
    missing = [i for i, digest in enumerate(digests) if any(digest not in found[name] for name in shapes)]
    columns = {name: [found[name].get(digest) for digest in digests] for name in shapes}

    n_passes, done = 0, len(texts) - len(missing)
    if on_progress is not None:
        on_progress(done, len(texts))
    sink = (lambda indices, acts, mask: token_sink([missing[i] for i in indices], acts, mask)) if token_sink else None
    for local, pooled in pooled_batches(
        model,
        [token_ids[i] for i in missing],
        list(shapes),
        pooling=pooling,
        batch_size=batch_size,
        token_sink=sink,
    ):
        indices = [missing[i] for i in local]
        if store is not None:
            store.write_batch([digests[i] for i in indices], pooled)
        for name, values in pooled.items():
            for row, index in enumerate(indices):
                columns[name][index] = values[row]
        n_passes, done = n_passes + 1, done + len(indices)
        if on_progress is not None:
            on_progress(done, len(texts))
    activations = assemble(columns, layers, head_layers)  # type: ignore[arg-type]  # every None was filled by a forward pass
    activations.n_tokens, activations.truncated = [len(ids) for ids in token_ids], truncated
    activations.n_forward_passes = n_passes
    return activations


def activations_from_store(
    store: ActivationStore, texts: Sequence[str], layers: list[int], head_layers: Sequence[int], d_model: int, n_heads: int, d_head: int
) -> Activations:
    """Every text's pooled activations from the store alone (for `report`): no model needed."""
    shapes = hook_shapes(layers, head_layers, d_model, n_heads, d_head)
    digests = [text_sha256(text) for text in texts]
    found = store.lookup(digests, shapes)
    for name in shapes:
        if absent := sum(digest not in found[name] for digest in digests):
            raise UserError(f"activation cache {store.dir} lacks {name} for {absent} texts: re-run `amygdala-tl extract`")
    return assemble({name: [found[name][digest] for digest in digests] for name in shapes}, layers, head_layers)
