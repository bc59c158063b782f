"""Trace: the served readout of one text at every token, every exported layer, every concept.

`raw[layer][t, c]` is the score the server returns for token t (`<h_t, v_c>`, fp16 rows, fp32 math,
formats.readout.served_scores); `running[layer][t, c]` is the declared reading a client holds after
tokens 0..t (capture.pooling.running_reading); `z` is `running` in calibrated units (calibration.json
beside the vectors: (running - mean) / std per layer and concept), or None where there is none.
`trace` and `generate --readout` both build one; quality.trace_html renders it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from . import hooks

if TYPE_CHECKING:
    from .formats.readout import Readout
    from .model import LoadedModel
    from .quality.calibration import Calibration


@dataclass
class Trace:
    text: str
    tokens: list[str]  # decoded, one string per position (concatenated they give the text as the model read it)
    layers: list[int]
    concepts: list[str]
    raw: dict[int, Float[Tensor, "n_tokens n_concepts"]]  # per-token served score <h_t, v_c>
    running: dict[int, Float[Tensor, "n_tokens n_concepts"]]  # the declared reading after tokens 0..t
    z: dict[int, Float[Tensor, "n_tokens n_concepts"]] | None  # `running` calibrated, None without calibration.json
    pooling: str  # the declared reading's pooling (capture.pooling)

    @property
    def calibrated(self) -> bool:
        return self.z is not None

    def reading(self, layer: int) -> Float[Tensor, "n_tokens n_concepts"]:
        """The running reading in the units shown: z when calibrated, else raw."""
        return self.z[layer] if self.z is not None else self.running[layer]

    def final(self, layer: int) -> dict[str, float]:
        """The declared reading of the whole text (the last position): what `score` reports."""
        return {concept: float(value) for concept, value in zip(self.concepts, self.reading(layer)[-1])}

    def top(self, layer: int, position: int = -1, k: int = 5) -> list[tuple[str, float]]:
        """The k highest concepts at a position (the shown units)."""
        values = self.reading(layer)[position]
        order = torch.argsort(values, descending=True)[:k]
        return [(self.concepts[int(i)], float(values[i])) for i in order]

    def to_json(self) -> dict:
        def table(values: dict[int, Tensor] | None) -> dict[str, list[list[float]]] | None:
            if values is None:
                return None
            return {str(layer): [[round(float(v), 5) for v in row] for row in values[layer]] for layer in self.layers}

        return {
            "text": self.text,
            "tokens": self.tokens,
            "layers": self.layers,
            "concepts": self.concepts,
            "pooling": self.pooling,
            "raw": table(self.raw),
            "running": table(self.running),
            "z": table(self.z),
        }


def decoded_tokens(tokenizer, ids: list[int]) -> list[str]:
    """One string per token whose concatenation is the decoded text (each token's share of the prefix decode,
    so a character split over several byte tokens lands on the token that completes it)."""
    out, previous = [], ""
    for end in range(1, len(ids) + 1):
        prefix = tokenizer.decode(ids[:end], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if "\ufffd" in prefix[len(previous) :] and end < len(ids):
            out.append("")  # an incomplete character: shown with the token that completes it
            continue
        out.append(prefix[len(previous) :] if prefix.startswith(previous) else tokenizer.decode([ids[end - 1]], skip_special_tokens=False))
        previous = prefix
    return out


def trace_text(
    model: LoadedModel,
    readout: Readout,
    text: str,
    pooling: str,
    *,
    max_length: int | None = None,
    calibration: Calibration | None = None,
    warn: Callable[[str], None] = lambda message: None,
) -> Trace:
    """One forward pass of `text` (its last `max_length` tokens, as extract read the corpus), read at every
    token through the fp16 rows: the served score, the running declared reading, and z where calibrated."""
    from .capture import encode, forward, running_reading
    from .formats.readout import served_scores

    (ids,), truncated = encode(model.tokenizer, [text], max_length)
    if truncated:
        warn(f"the text is longer than {max_length} tokens: traced on its last {max_length}, as extract read the corpus")
    names = [hooks.resid_post(layer) for layer in readout.layers]
    acts = forward(model, torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), read=names).acts
    raw = {layer: served_scores(acts[name][0], readout.vectors[layer]).cpu() for layer, name in zip(readout.layers, names)}
    running = {layer: running_reading(values, pooling) for layer, values in raw.items()}
    z = {layer: calibration.z(layer, values) for layer, values in running.items()} if calibration is not None else None
    return Trace(text, decoded_tokens(model.tokenizer, ids), list(readout.layers), list(readout.concepts), raw, running, z, pooling)
