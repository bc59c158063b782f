"""Head ablations for one next-token prediction: what changes when chosen heads are silenced.

A condition zero- or mean-ablates heads' `hook_z` (all positions or one), or zeroes the value
vectors (`hook_v`) at chosen positions for the chosen heads' KV groups. Per condition and prompt:
top-k logit increases and decreases vs the clean run, the change of the clean top-1 logit,
KL(clean || ablated), and whether the top-1 token changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from einops import einsum
from jaxtyping import Float
from torch import Tensor

from .. import hooks
from ..capture.forward import Batch, Intervention, encode, forward, read_batch
from ..errors import UserError
from ..model import LoadedModel
from .head import Head, head_name

MODES = ("zero", "mean", "value")


@dataclass(frozen=True)
class Condition:
    heads: tuple[tuple[int, int], ...]  # Head values or plain (layer, head) pairs
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
    """[BOS] + the prompt: the head-probing convention (a sink position at 0)."""
    return torch.tensor(encode(model.tokenizer, [prompt], force_bos=True)[0])


class MeanZ:
    """Running mean of `hook_z` over every real token seen, per layer: the mean-ablation value."""

    def __init__(self, layers: Sequence[int]):
        self.layers = list(layers)
        self.sums: dict[int, Tensor] = {}
        self.count = 0.0

    def add(self, acts: dict[str, Tensor], attention_mask: Tensor) -> None:
        mask = attention_mask.float()
        for layer in self.layers:
            z = acts[hooks.attn_z(layer)].float().cpu()
            self.sums[layer] = self.sums.get(layer, 0) + einsum(z, mask, "batch pos head d, batch pos -> head d")
        self.count += float(mask.sum())

    def means(self) -> dict[int, Float[Tensor, "n_heads d_head"]]:
        return {layer: total / self.count for layer, total in self.sums.items()}


def mean_z(model: LoadedModel, batches: Sequence[Batch], layers: Sequence[int]) -> dict[int, Float[Tensor, "n_heads d_head"]]:
    accumulator = MeanZ(layers)
    for batch in batches:
        accumulator.add(read_batch(model, batch, [hooks.attn_z(layer) for layer in layers]), batch.attention_mask)
    return accumulator.means()


def prompt_batches(model: LoadedModel, prompts: Sequence[str]) -> list[Batch]:
    """One unpadded [BOS] + prompt batch per prompt (the head-probing convention)."""
    return [Batch([i], tokens, torch.ones_like(tokens)) for i, tokens in enumerate(tokens_of(model, prompt) for prompt in prompts)]


def head_ablation(
    layer: int, heads: Sequence[int], replacement: Float[Tensor, "n_heads d_head"] | None = None, position: int | None = None
) -> Intervention:
    """Replace these heads' `hook_z` at `position` (None: every position) by their mean (`replacement`) or zero."""
    where = slice(None) if position is None else position

    def replace(z: Tensor, hook) -> Tensor:  # noqa: ARG001
        z = z.clone()
        for head in heads:
            z[:, where, head] = 0 if replacement is None else replacement[head].to(z.device, z.dtype)
        return z

    return (hooks.attn_z(layer), replace)


def ablation_hooks(model: LoadedModel, condition: Condition, means: dict[int, Tensor] | None) -> list[Intervention]:
    by_layer: dict[int, list[int]] = {}
    for layer, head in condition.heads:
        by_layer.setdefault(layer, []).append(head)
    position = condition.position
    fwd: list[Intervention] = []
    for layer, heads in by_layer.items():
        if condition.mode == "value":

            def zero_values(v, hook, heads=heads):
                v = v.clone()
                v[:, position, value_slots(model, heads, v.shape[2])] = 0
                return v

            fwd.append((f"blocks.{layer}.attn.hook_v", zero_values))
        else:
            fwd.append(head_ablation(layer, heads, means[layer] if condition.mode == "mean" and means else None, position))
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


def final_logits(model: LoadedModel, tokens: Tensor, interventions: Sequence[Intervention]) -> Float[Tensor, " vocab"]:
    logits = forward(model, tokens, interventions=interventions, logits=True).logits
    assert logits is not None
    return logits[0, -1].float().cpu()


@dataclass
class PromptAblation:
    prompt: str
    tokens: list[str]
    ablated_position: int | None
    clean_top1: str
    ablated_top1: str
    top1_changed: bool
    clean_top1_logit_change: float
    kl_clean_ablated: float
    increases: list[list]  # [token, logit change]
    decreases: list[list]


@dataclass
class AblationResult:
    """One condition over every prompt (an ablations.json entry)."""

    condition: str
    mode: str
    heads: list[str]
    top1_changed_fraction: float
    prompts: list[PromptAblation]

    def to_json(self) -> dict:
        return asdict(self)

    def summary(self) -> list[str]:
        return [f"{self.condition}: top-1 changed on {self.top1_changed_fraction:.0%} of prompts"] + [
            f"  {row.prompt[:60]!r}: {row.clean_top1!r} -> {row.ablated_top1!r}, top-1 logit {row.clean_top1_logit_change:+.2f}, "
            f"KL {row.kl_clean_ablated:.4f}"
            for row in self.prompts
        ]


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


def run_ablations(model: LoadedModel, prompts: Sequence[str], conditions: Sequence[Condition], k: int = 5) -> list[AblationResult]:
    """One block per condition: per-prompt comparisons and the fraction of prompts whose top-1 changed."""
    if not prompts:
        raise UserError("no prompt to ablate: pass --prompt")
    for condition in conditions:
        check_condition(condition, model)
    shortest = min(tokens_of(model, prompt).shape[1] for prompt in prompts)
    for condition in conditions:
        if condition.position is not None and not -shortest <= condition.position < shortest:
            raise UserError(f"--position {condition.position} is outside the shortest prompt ({shortest} tokens with BOS)")
    needs_mean = sorted({layer for c in conditions if c.mode == "mean" for layer, _ in c.heads})
    means = mean_z(model, prompt_batches(model, prompts), needs_mean) if needs_mean else None
    clean = {prompt: final_logits(model, tokens_of(model, prompt), []) for prompt in prompts}
    results = []
    for condition in conditions:
        rows = []
        for prompt in prompts:
            tokens = tokens_of(model, prompt)
            ablated = final_logits(model, tokens, ablation_hooks(model, condition, means))
            tokens_text = [model.tokenizer.decode([t]) for t in tokens[0].tolist()]
            position = None if condition.position is None else condition.position % tokens.shape[1]
            rows.append(PromptAblation(prompt, tokens_text, position, **compare(model, clean[prompt], ablated, k)))
        results.append(
            AblationResult(
                condition.label, condition.mode, [str(Head(*h)) for h in condition.heads], sum(r.top1_changed for r in rows) / len(rows), rows
            )
        )
    return results
