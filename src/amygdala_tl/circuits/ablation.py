"""Head ablations for one next-token prediction: what changes when chosen heads are silenced.

A condition zero- or mean-ablates heads' `hook_z` (all positions or one), or zeroes the value
vectors (`hook_v`) at chosen positions for the chosen heads' KV groups. Per condition and prompt:
top-k logit increases and decreases vs the clean run, the change of the clean top-1 logit,
KL(clean || ablated), and whether the top-1 token changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from .. import hooks
from ..errors import UserError
from ..model import LoadedModel
from .detectors import bos_id, head_name

MODES = ("zero", "mean", "value")


@dataclass(frozen=True)
class Condition:
    heads: tuple[tuple[int, int], ...]
    mode: str = "zero"
    position: int | None = None  # None: every position; negative counts from the end

    @property
    def label(self) -> str:
        where = "all positions" if self.position is None else f"position {self.position}"
        return f"{self.mode}-ablate {','.join(head_name(*h) for h in self.heads)} at {where}"


def check_condition(condition: Condition, model: LoadedModel | None = None) -> None:
    """Mode and position always; head ranges once the model (its layer and head counts) is known."""
    if not condition.heads:
        raise UserError("an ablation condition names no heads (e.g. --heads L3H5,L4H1)")
    if condition.mode not in MODES:
        raise UserError(f"unknown ablation mode {condition.mode!r}: choose one of {', '.join(MODES)}")
    if condition.mode == "value" and condition.position is None:
        raise UserError("--mode value zeroes value vectors at a chosen --position")
    if model is None:
        return
    for layer, head in condition.heads:
        if not (0 <= layer < model.facts.n_layers and 0 <= head < model.facts.n_heads):
            raise UserError(f"head {head_name(layer, head)} does not exist ({model.facts.n_layers} layers x {model.facts.n_heads} heads)")


def tokens_of(model: LoadedModel, prompt: str) -> Tensor:
    return torch.tensor([[bos_id(model.tokenizer)] + model.tokenizer(prompt, add_special_tokens=False)["input_ids"]])


def mean_z(model: LoadedModel, prompts: Sequence[str], layers: set[int]) -> dict[int, Float[Tensor, "n_heads d_head"]]:
    """Mean hook_z over every position of the prompts: the mean-ablation value."""
    sums: dict[int, Tensor] = {}
    count = 0
    for prompt in prompts:
        store: dict[int, Tensor] = {}
        fwd = [(hooks.attn_z(l), lambda z, hook, l=l: store.__setitem__(l, z.detach()[0].sum(0))) for l in layers]
        tokens = tokens_of(model, prompt)
        with torch.inference_mode():
            model.bridge.run_with_hooks(tokens.to(model.bridge.cfg.device), fwd_hooks=fwd, return_type=None)
        for l, value in store.items():
            sums[l] = sums.get(l, 0) + value
        count += tokens.shape[1]
    return {l: value / count for l, value in sums.items()}


def ablation_hooks(model: LoadedModel, condition: Condition, means: dict[int, Tensor] | None) -> list:
    by_layer: dict[int, list[int]] = {}
    for layer, head in condition.heads:
        by_layer.setdefault(layer, []).append(head)
    position = condition.position
    fwd = []
    for layer, heads in by_layer.items():
        if condition.mode == "value":
            def zero_values(v, hook, heads=heads):
                v = v.clone()
                v[:, position, value_slots(model, heads, v.shape[2])] = 0
                return v

            fwd.append((f"blocks.{layer}.attn.hook_v", zero_values))
            continue

        def replace(z, hook, heads=heads, layer=layer):
            z = z.clone()
            where = slice(None) if position is None else position
            for head in heads:
                z[:, where, head] = 0 if condition.mode == "zero" else means[layer][head].to(z.dtype)
            return z

        fwd.append((hooks.attn_z(layer), replace))
    return fwd


def value_slots(model: LoadedModel, heads: list[int], n_slots: int) -> list[int]:
    """Indices into hook_v's head axis for these query heads: their KV groups (grouped-query attention
    shares a value vector across a group, so the whole group's values are zeroed)."""
    n_heads = model.facts.n_heads
    group = n_heads // (model.facts.n_kv_heads or n_heads)
    groups = {head // group for head in heads}
    if n_slots == n_heads:  # values already expanded per query head
        return [h for h in range(n_heads) if h // group in groups]
    return sorted(groups)


def final_logits(model: LoadedModel, tokens: Tensor, fwd_hooks: list) -> Float[Tensor, " vocab"]:
    with torch.inference_mode():
        logits = model.bridge.run_with_hooks(tokens.to(model.bridge.cfg.device), fwd_hooks=fwd_hooks)
    return logits[0, -1].float().cpu()


def compare(model: LoadedModel, clean: Tensor, ablated: Tensor, k: int) -> dict:
    decode = lambda i: model.tokenizer.decode([int(i)])  # noqa: E731
    delta = ablated - clean
    top = int(clean.argmax())
    log_clean, log_ablated = clean.log_softmax(-1), ablated.log_softmax(-1)
    return {
        "clean_top1": decode(top),
        "ablated_top1": decode(ablated.argmax()),
        "top1_changed": int(ablated.argmax()) != top,
        "clean_top1_logit_change": float(delta[top]),
        "kl_clean_ablated": float((log_clean.exp() * (log_clean - log_ablated)).sum()),
        "increases": [[decode(i), float(delta[i])] for i in torch.argsort(delta, descending=True)[:k]],
        "decreases": [[decode(i), float(delta[i])] for i in torch.argsort(delta)[:k]],
    }


def run_ablations(model: LoadedModel, prompts: Sequence[str], conditions: Sequence[Condition], k: int = 5) -> list[dict]:
    """One block per condition: per-prompt comparisons and the fraction of prompts whose top-1 changed."""
    if not prompts:
        raise UserError("no prompt to ablate: pass --prompt")
    for condition in conditions:
        check_condition(condition, model)
    shortest = min(tokens_of(model, prompt).shape[1] for prompt in prompts)
    for condition in conditions:
        if condition.position is not None and not -shortest <= condition.position < shortest:
            raise UserError(f"--position {condition.position} is outside the shortest prompt ({shortest} tokens with BOS)")
    needs_mean = {layer for c in conditions if c.mode == "mean" for layer, _ in c.heads}
    means = mean_z(model, prompts, needs_mean) if needs_mean else None
    clean = {prompt: final_logits(model, tokens_of(model, prompt), []) for prompt in prompts}
    results = []
    for condition in conditions:
        rows = []
        for prompt in prompts:
            tokens = tokens_of(model, prompt)
            ablated = final_logits(model, tokens, ablation_hooks(model, condition, means))
            tokens_text = [model.tokenizer.decode([t]) for t in tokens[0].tolist()]
            position = None if condition.position is None else condition.position % tokens.shape[1]
            rows.append({"prompt": prompt, "tokens": tokens_text, "ablated_position": position, **compare(model, clean[prompt], ablated, k)})
        results.append({"condition": condition.label, "mode": condition.mode, "heads": [head_name(*h) for h in condition.heads],
                        "top1_changed_fraction": sum(r["top1_changed"] for r in rows) / len(rows), "prompts": rows})
    return results
