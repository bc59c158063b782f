"""Trace: the served readout of one text at every token, every exported layer, every concept.

`raw[layer][t, c]` is the score the server returns for token t (`<h_t, v_c>`, fp16 rows, fp32 math,
formats.readout.served_scores); `running[layer][t, c]` is the declared reading a client holds after
tokens 0..t (capture.pooling.running_reading); `z` is `running` in calibrated units (calibration.json
beside the vectors: (running - mean) / std per layer and concept), or None where there is none.
`trace` and `generate --readout` both build one; quality.trace_html renders it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor


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
