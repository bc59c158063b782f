"""Head detectors: one score per [layer, head] from `blocks.<l>.attn.hook_pattern`.

Each detector is one record in DETECTORS (below): its function, its flag threshold, whether it reads the
natural texts; `heads detect --help` and the README table read the thresholds there. Each result states its data.
Scores average over the positions where the behaviour is defined (see patterns.score_detection).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from einops import einsum
from jaxtyping import Float, Int
from torch import Tensor

from ..capture.forward import bos_id, encode
from ..errors import UserError
from ..model import LoadedModel
from .head import flat_heads
from .patterns import attention_patterns, duplicate_token_detection, induction_detection, previous_token_detection, score_detection


@dataclass
class DetectorResult:
    name: str
    scores: Float[Tensor, "n_layers n_heads"]
    threshold: float
    data: str
    extra: dict = field(default_factory=dict)

    @property
    def flagged(self) -> list[str]:
        order = torch.argsort(self.scores.flatten(), descending=True)
        return [str(head) for head, i in zip(flat_heads(order, self.scores.shape[1]), order) if self.scores.flatten()[i] > self.threshold]

    def summary(self) -> str:
        return f"{self.name:16s} flagged {len(self.flagged):3d}  top: " + ", ".join(f"{head} {score:.2f}" for head, score in self.top(3))

    def top(self, k: int = 5) -> list[list]:
        order = torch.argsort(self.scores.flatten(), descending=True)[:k]
        return [[str(head), float(self.scores.flatten()[i])] for head, i in zip(flat_heads(order, self.scores.shape[1]), order)]

    def to_dict(self) -> dict:
        return {
            "threshold": self.threshold,
            "data": self.data,
            "flagged": self.flagged,
            "top": self.top(),
            "scores": [[round(float(v), 5) for v in row] for row in self.scores],
            **self.extra,
        }


def natural_batch(tokenizer, texts: Sequence[str], length: int, n_texts: int = 32) -> Int[Tensor, "batch pos"]:
    """[BOS] + the first `length - 1` tokens of the first `n_texts` texts long enough (equal lengths: no padding)."""
    rows = [ids[:length] for ids in encode(tokenizer, texts, force_bos=True)[0] if len(ids) >= length][:n_texts]
    if not rows:
        raise UserError(f"no text has {length} tokens for the natural-text detectors: give longer texts or a smaller --length")
    return torch.tensor(rows)


def random_tokens(tokenizer, batch: int, length: int, seed: int = 0) -> Int[Tensor, "batch pos"]:
    """[BOS] + uniform random ordinary tokens (ids above the first 100, where special tokens live)."""
    generator = torch.Generator().manual_seed(seed)
    body = torch.randint(min(100, len(tokenizer) // 2), len(tokenizer), (batch, length - 1), generator=generator)
    return torch.cat([torch.full((batch, 1), bos_id(tokenizer)), body], dim=1)


def repeated_random_tokens(tokenizer, batch: int, half: int, seed: int = 0) -> Int[Tensor, "batch pos"]:
    """[BOS] x x with x random of length `half`: the induction data."""
    x = random_tokens(tokenizer, batch, half + 1, seed)[:, 1:]
    return torch.cat([torch.full((batch, 1), bos_id(tokenizer)), x, x], dim=1)


# ---- pattern detectors -------------------------------------------------------------------------


def previous_token(model: LoadedModel, natural: Int[Tensor, "batch pos"], patterns: Tensor | None = None) -> DetectorResult:
    """Attention from q to q-1 on natural text, with a random-token control: a head scoring high on
    both is positional; high on text only, content-driven."""
    patterns = attention_patterns(model, natural) if patterns is None else patterns
    text_scores = score_detection(patterns, previous_token_detection(natural))
    control = random_tokens(model.tokenizer, natural.shape[0], natural.shape[1], seed=1)
    control_scores = score_detection(attention_patterns(model, control), previous_token_detection(control))
    return DetectorResult(
        "previous_token",
        text_scores,
        DETECTORS["previous_token"].threshold,
        f"{natural.shape[0]} natural texts x {natural.shape[1]} tokens; control: random tokens",
        {"random_token_control": [[round(float(v), 5) for v in row] for row in control_scores]},
    )


def induction(model: LoadedModel, batch: int = 8, half: int = 40, seed: int = 0) -> DetectorResult:
    tokens = repeated_random_tokens(model.tokenizer, batch, half, seed)
    scores = score_detection(attention_patterns(model, tokens), induction_detection(tokens))
    return DetectorResult(
        "induction",
        scores,
        DETECTORS["induction"].threshold,
        f"{batch} sequences [BOS] x x, x = {half} random tokens; random-pattern level ~{1 / half:.3f}",
    )


def duplicate_token(model: LoadedModel, batch: int = 8, half: int = 40, seed: int = 0) -> DetectorResult:
    tokens = repeated_random_tokens(model.tokenizer, batch, half, seed)
    scores = score_detection(attention_patterns(model, tokens), duplicate_token_detection(tokens))
    return DetectorResult("duplicate_token", scores, DETECTORS["duplicate_token"].threshold, f"{batch} sequences [BOS] x x, x = {half} random tokens")


def positional(model: LoadedModel, natural: Int[Tensor, "batch pos"], patterns: Tensor | None = None, max_offset: int = 8) -> DetectorResult:
    """Attention vs offset q - k per head (queries after BOS); the score is the mass at the peak
    offset. Position 0 (BOS) also counts at offset q for query q; `bos_mass` reports it separately."""
    patterns = (attention_patterns(model, natural) if patterns is None else patterns).double()  # layer batch head q k
    profile = torch.stack(
        [torch.diagonal(patterns, offset=-offset, dim1=-2, dim2=-1)[..., max(0, 1 - offset) :].mean((1, -1)) for offset in range(max_offset + 1)],
        dim=-1,
    )  # [L, H, offsets]; queries q >= 1
    bos_mass = patterns[..., 1:, 0].mean((1, -1))
    peak_mass, peak_offset = profile.max(-1)
    return DetectorResult(
        "positional",
        peak_mass.float(),
        DETECTORS["positional"].threshold,
        f"{natural.shape[0]} natural texts; offsets 0..{max_offset}, queries after BOS",
        {
            "peak_offset": peak_offset.tolist(),
            "bos_mass": [[round(float(v), 5) for v in row] for row in bos_mass],
            "profile": [[[round(float(v), 4) for v in head] for head in layer] for layer in profile],
        },
    )


DELIMITERS = {".", ",", ";", ":", "!", "?", "(", ")", "-", "—", '"', "'"}


def delimiter(model: LoadedModel, natural: Int[Tensor, "batch pos"], patterns: Tensor | None = None) -> DetectorResult:
    """Attention mass on delimiter keys divided by their share of the keys a query can see (BOS excluded)."""
    pieces = {t: model.tokenizer.decode([t]) for t in set(natural.flatten().tolist())}
    is_delim = torch.tensor([[pieces[t].strip() in DELIMITERS or "\n" in pieces[t] for t in row] for row in natural.tolist()], dtype=torch.float64)
    is_delim[:, 0] = 0
    patterns = (attention_patterns(model, natural) if patterns is None else patterns).double()
    causal = torch.tril(torch.ones(natural.shape[1], natural.shape[1], dtype=torch.float64))
    causal[:, 0] = 0
    visible = causal.sum(-1).clamp_min(1)  # keys a query sees, BOS excluded
    share = einsum(causal, is_delim, "q k, b k -> b q") / visible
    mass = einsum(patterns, is_delim, "l b h q k, b k -> l b h q")
    valid = share > 0
    ratio = torch.where(valid[None, :, None], mass / share.clamp_min(1e-12)[None, :, None], torch.zeros_like(mass))
    scores = ratio.sum((1, 3)) / valid.sum().clamp_min(1)
    return DetectorResult(
        "delimiter",
        scores.float(),
        DETECTORS["delimiter"].threshold,
        f"{natural.shape[0]} natural texts; delimiters {''.join(sorted(DELIMITERS))} and newlines",
    )


ORDINAL_RUNS = [
    "1, 2, 3, 4, 5, 6, 7, 8, 9",
    "A, B, C, D, E, F, G, H, I",
    "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday",
    "January, February, March, April, May, June, July, August, September",
    "one, two, three, four, five, six, seven, eight, nine",
    "first, second, third, fourth, fifth, sixth, seventh",
]
RANDOM_WORDS = "apple, river, stone, window, pencil, garden, rocket, basket, ladder, candle, mirror, blanket, button".split(", ")


def item_positions(tokenizer, items: list[str]) -> tuple[list[int], list[int]]:
    """Tokens of '[BOS] item, item, ...' and the position of each item's first token."""
    ids, starts = [bos_id(tokenizer)], []  # built piece by piece: each item's first-token position is needed
    for index, item in enumerate(items):
        piece = item if index == 0 else ", " + item
        piece_ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
        prefix = tokenizer(", ", add_special_tokens=False)["input_ids"] if index else []
        starts.append(len(ids) + (len(prefix) if piece_ids[: len(prefix)] == prefix else 1))
        ids += piece_ids
    return ids, starts


def _predecessor_attention(model: LoadedModel, runs: list[list[str]]) -> Float[Tensor, "n_layers n_heads"]:
    total = None
    for items in runs:
        ids, starts = item_positions(model.tokenizer, items)
        patterns = attention_patterns(model, torch.tensor([ids]))[:, 0]  # [L, H, Q, K]
        values = torch.stack([patterns[:, :, starts[i], starts[i - 1]] for i in range(1, len(starts))]).mean(0)
        total = values if total is None else total + values
    assert total is not None, "no runs"
    return total / len(runs)


def successor(model: LoadedModel, seed: int = 0) -> DetectorResult:
    """Attention from an ordinal item to its predecessor, minus the same on random-word runs."""
    ordinal = [run.split(", ") for run in ORDINAL_RUNS]
    generator = torch.Generator().manual_seed(seed)
    controls = [[RANDOM_WORDS[int(i)] for i in torch.randperm(len(RANDOM_WORDS), generator=generator)[: len(run)]] for run in ordinal]
    scores = _predecessor_attention(model, ordinal) - _predecessor_attention(model, controls)
    return DetectorResult(
        "successor",
        scores,
        DETECTORS["successor"].threshold,
        f"{len(ordinal)} ordinal runs (digits, letters, weekdays, months, number words, ordinals) minus random-word runs",
    )


NAMES = ["John", "Mary", "Tom", "Anna", "James", "Sarah", "David", "Emma", "Paul", "Lucy", "Mark", "Kate"]
IOI_TEMPLATE = "When {a} and {b} went to the store, {b} gave a drink to"


def single_token_names(tokenizer) -> list[str]:
    return [name for name in NAMES if len(tokenizer(" " + name, add_special_tokens=False)["input_ids"]) == 1]


def ov_copy_scores(model: LoadedModel, names: list[str]) -> Float[Tensor, "n_layers n_heads"]:
    """Does a head's OV circuit copy a name it attends to? For name embeddings e_i (unit-normed, norms
    otherwise ignored): M = E W_V W_O W_U[:, names]; score = mean_i (M_ii - mean_{j!=i} M_ij) / std(M).
    Positive: copies the name (name mover); negative: suppresses it (negative/copy-suppression head)."""
    bridge = model.bridge
    ids = [model.tokenizer(" " + name, add_special_tokens=False)["input_ids"][0] for name in names]
    embeddings = bridge.W_E[ids].detach().float()
    embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True)
    unembed = bridge.W_U[:, ids].detach().float()
    n_heads, n_kv = model.facts.n_heads, model.facts.n_kv_heads or model.facts.n_heads
    scores = torch.zeros(model.facts.n_layers, n_heads)
    off_diagonal = ~torch.eye(len(ids), dtype=torch.bool)
    for layer in range(model.facts.n_layers):
        attn = bridge.blocks[layer].attn
        w_v, w_o = attn.W_V.detach().float(), attn.W_O.detach().float()
        for head in range(n_heads):
            kv = head // (n_heads // n_kv) if w_v.shape[0] == n_kv else head
            logits = embeddings @ w_v[kv] @ w_o[head] @ unembed
            diagonal = logits.diagonal()
            others = logits[off_diagonal].reshape(len(ids), len(ids) - 1).mean(-1)
            scores[layer, head] = ((diagonal - others).mean() / logits.std().clamp_min(1e-12)).item()
    return scores


def s_inhibition(model: LoadedModel) -> DetectorResult:
    """Attention from the final position to the repeated subject S2 on IOI prompts, with OV copy scores.

    What it captures: heads that attend END -> S2. In the IOI circuit (Wang et al. 2022) that is the
    S-inhibition heads' signature, but negative name movers / copy-suppression heads can also attend
    S2 from END; their OV copy score is strongly negative, while S-inhibition heads' OV does not copy
    names (score near 0). Without path patching this is a candidate list, not a causal label.
    """
    names = single_token_names(model.tokenizer)
    if len(names) < 2:
        raise UserError(
            f"the s_inhibition detector needs two names that are single tokens for this tokenizer; found {len(names)} of {', '.join(NAMES)}"
        )
    pairs = [(names[i], names[(i + 1) % len(names)]) for i in range(len(names))]
    total = None
    for a, b in pairs:
        ids = encode(model.tokenizer, [IOI_TEMPLATE.format(a=a, b=b)], force_bos=True)[0][0]
        name_id = model.tokenizer(" " + b, add_special_tokens=False)["input_ids"][0]
        s2 = [i for i, t in enumerate(ids) if t == name_id][1]
        patterns = attention_patterns(model, torch.tensor([ids]))[:, 0]
        value = patterns[:, :, -1, s2]
        total = value if total is None else total + value
    assert total is not None
    scores = total / len(pairs)
    copy = ov_copy_scores(model, names)
    return DetectorResult(
        "s_inhibition",
        scores,
        DETECTORS["s_inhibition"].threshold,
        f"{len(pairs)} IOI prompts '{IOI_TEMPLATE}' with single-token names",
        {"ov_copy_score": [[round(float(v), 4) for v in row] for row in copy]},
    )


@dataclass(frozen=True)
class Detector:
    """One head detector: `fn` scores every head, `threshold` flags a head scoring above it. A detector that
    `needs_text` is called as fn(model, natural, patterns) on the natural texts (all of them share one forward
    pass), any other as fn(model) on data it makes; `note` says what the threshold bounds when it is not an
    attention score."""

    name: str
    fn: Callable[..., DetectorResult]
    threshold: float
    needs_text: bool = False
    note: str = ""

    @property
    def help(self) -> str:
        return f"{self.name} {self.threshold}" + (f" ({self.note})" if self.note else "")


# One record per detector: run_detectors, `heads detect --help` and the README table read them here.
DETECTORS: dict[str, Detector] = {
    detector.name: detector
    for detector in (
        Detector("previous_token", previous_token, 0.4, needs_text=True),
        Detector("induction", induction, 0.3),
        Detector("duplicate_token", duplicate_token, 0.3),
        Detector("positional", positional, 0.5, needs_text=True, note="peak-offset mass"),
        Detector("delimiter", delimiter, 3.0, needs_text=True, note="mass / delimiter share"),
        Detector("successor", successor, 0.2),
        Detector("s_inhibition", s_inhibition, 0.3),
    )
}


def thresholds_help() -> str:
    return ", ".join(detector.help for detector in DETECTORS.values())


def check_detectors(names: Sequence[str]) -> None:
    if unknown := [name for name in names if name not in DETECTORS]:
        raise UserError(f"unknown detector {unknown[0]!r}: choose from {', '.join(DETECTORS)}")


def run_detectors(model: LoadedModel, names: Sequence[str], texts: Sequence[str], length: int = 64, n_texts: int = 32) -> dict[str, DetectorResult]:
    """Run the named detectors; the natural-text ones share one forward pass over the texts."""
    check_detectors(names)
    chosen = [DETECTORS[name] for name in names]
    if any(detector.needs_text for detector in chosen):
        natural = natural_batch(model.tokenizer, texts, length, n_texts)
        patterns = attention_patterns(model, natural)
    return {detector.name: detector.fn(model, natural, patterns) if detector.needs_text else detector.fn(model) for detector in chosen}
