"""Generation with a concept direction added to the residual stream, and a measurable check of it.

alpha is in units of the layer's mean residual norm on the prompt (BOS excluded, since its norm is
often an outlier): the hook adds alpha * mean_norm * v to `blocks.<l>.hook_resid_post` at every
position, so alpha 1 is a push as large as a typical residual vector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from . import hooks
from .capture import Batch, last_token_resid, make_batches, run_batch, tokenize
from .errors import UserError
from .model import LoadedModel
from .readout import Readout


def mean_resid_norm(model: LoadedModel, tokens: Tensor, layer: int) -> float:
    """Mean residual norm over the prompt's tokens after the first (often a BOS with an outlier norm)."""
    batch = Batch([0], tokens, torch.ones_like(tokens))
    norms = run_batch(model, batch, [hooks.resid_post(layer)])[hooks.resid_post(layer)][0].float().norm(dim=-1)
    return float(norms[1:].mean() if len(norms) > 1 else norms.mean())


def steering_hook(layer: int, vector: Float[Tensor, " d_model"], scale: float):
    def add(resid: Tensor, hook) -> Tensor:  # noqa: ARG001
        return resid + (scale * vector).to(resid.device, resid.dtype)

    return (hooks.resid_post(layer), add)


def generate(model: LoadedModel, prompt: str, fwd_hooks: list, max_new_tokens: int = 40, temperature: float = 0.0, seed: int = 0) -> str:
    """Greedy (temperature 0) or sampled continuation; a full forward per token keeps hooks exact."""
    tokens = torch.tensor([model.tokenizer(prompt)["input_ids"]])
    generator = torch.Generator().manual_seed(seed)
    eos = model.tokenizer.eos_token_id
    new: list[int] = []
    for _ in range(max_new_tokens):
        with torch.inference_mode():
            logits = model.bridge.run_with_hooks(tokens.to(model.bridge.cfg.device), fwd_hooks=fwd_hooks)[0, -1].float().cpu()
        if temperature > 0:
            token = int(torch.multinomial((logits / temperature).softmax(-1), 1, generator=generator))
        else:
            token = int(logits.argmax())
        if token == eos:
            break
        new.append(token)
        tokens = torch.cat([tokens, torch.tensor([[token]])], dim=1)
    return model.tokenizer.decode(new)


def concept_vector(readout: Readout, concept: str, layer: int) -> Float[Tensor, " d_model"]:
    if concept not in readout.concepts:
        raise UserError(f"unknown concept {concept!r}; the vectors have: {', '.join(readout.concepts)}")
    if layer not in readout.layers:
        raise UserError(f"layer {layer} is not in the vectors (layers: {', '.join(map(str, readout.layers))})")
    return readout.vectors[layer][readout.concepts.index(concept)].float()


def check_steer_args(readout: Readout, concept: str, layer: int, alpha: float, temperature: float,
                     max_new_tokens: int, measure: bool) -> None:
    """Everything `steer` can check before the model loads."""
    if concept != "all" or not measure:
        concept_vector(readout, concept, layer)
    elif layer not in readout.layers:
        raise UserError(f"layer {layer} is not in the vectors (layers: {', '.join(map(str, readout.layers))})")
    if not math.isfinite(alpha):
        raise UserError(f"--alpha must be a finite number, got {alpha}")
    if not math.isfinite(temperature) or temperature < 0:
        raise UserError(f"--temperature must be a finite number >= 0, got {temperature}")
    if max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")


def steer(model: LoadedModel, readout: Readout, concept: str, layer: int, alpha: float, prompt: str,
          max_new_tokens: int = 40, temperature: float = 0.0, seed: int = 0) -> dict:
    vector = concept_vector(readout, concept, layer)
    tokens = torch.tensor([model.tokenizer(prompt)["input_ids"]])
    scale = alpha * mean_resid_norm(model, tokens, layer)
    return {
        "prompt": prompt, "concept": concept, "layer": layer, "alpha": alpha, "added_norm": scale,
        "unsteered": generate(model, prompt, [], max_new_tokens, temperature, seed),
        "steered": generate(model, prompt, [steering_hook(layer, vector, scale)], max_new_tokens, temperature, seed),
    }


def readout_at_layers(model: LoadedModel, texts: Sequence[str], readout: Readout, layers: list[int], fwd_hooks: list, batch_size: int = 8) -> dict[int, Tensor]:
    """Serving-convention scores [n_texts, n_concepts] at `layers`, with optional steering hooks."""
    token_ids, _ = tokenize(model.tokenizer, texts, 512)
    resid = last_token_resid(model, make_batches(token_ids, batch_size, model.tokenizer.pad_token_id), layers, fwd_hooks)
    return {layer: resid[layer] @ readout.vectors[layer].float().T for layer in layers}


def measure(model: LoadedModel, readout: Readout, texts: Sequence[str], concepts: Sequence[str], layer: int, alpha: float) -> dict:
    """Steer toward each concept at `layer` on neutral texts; readout shift of every concept at later layers.

    The shift matrix [steered concept x read concept] is averaged over texts and later layers; a
    working vector raises its own readout (the diagonal) more than the others'.
    """
    later = [l for l in readout.layers if l > layer]
    if not later:
        raise UserError(f"--measure needs exported layers after {layer} (have {', '.join(map(str, readout.layers))})")
    clean = readout_at_layers(model, texts, readout, later, [])
    norms = torch.tensor([mean_resid_norm(model, torch.tensor([model.tokenizer(t)["input_ids"]]), layer) for t in texts]).mean()
    rows = {}
    for concept in concepts:
        vector = concept_vector(readout, concept, layer)
        steered = readout_at_layers(model, texts, readout, later, [steering_hook(layer, vector, float(alpha * norms))])
        shift = torch.stack([(steered[l] - clean[l]).mean(0) for l in later]).mean(0)
        own = readout.concepts.index(concept)
        others = torch.cat([shift[:own], shift[own + 1 :]])
        rows[concept] = {"own_shift": float(shift[own]), "others_mean_shift": float(others.mean()) if len(others) else None,
                         "rank_of_own": int((shift > shift[own]).sum()) + 1}
    return {"layer": layer, "alpha": alpha, "read_at": later, "n_texts": len(texts), "concepts": rows}
