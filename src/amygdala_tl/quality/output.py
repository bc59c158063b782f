"""Write quality.json + report.html, and the printed summary (triage and held-out lines)."""

from __future__ import annotations

import torch

from ..layers import describe_layer
from ..rundir import HTML_FILE, QUALITY_FILE, json_payload
from .heldout import heldout_line
from .html import render_html
from .report import QualityInputs, build_quality


def quality_payloads(inputs: QualityInputs, n_heads: int | None, run_id: str, head_concept: str | None = None) -> tuple[dict, dict[str, bytes]]:
    """quality.json (stamped with the run id) and report.html, as bytes for the run's one commit."""
    quality = build_quality(inputs)
    directions = {layer: inputs.directions[slot].numpy() for slot, layer in enumerate(inputs.layers)}
    page = render_html(quality, directions, n_heads, head_concept)
    return quality, {QUALITY_FILE: json_payload(quality, run_id), HTML_FILE: page.encode()}


def summary_lines(quality: dict, samples: int = 4) -> list[str]:
    triage, n_layers = quality["triage"], quality["n_layers"]
    lines = [f"triage at {describe_layer(triage['layer'], n_layers)}:"]
    for name, members in triage.items():
        if isinstance(members, list) and members:
            shown = ", ".join(members[:samples]) + (", ..." if len(members) > samples else "")
            lines.append(f"  {name.replace('_', ' ')}: {len(members)} ({shown})")
    lines.append(f"held-out ({quality['heldout'].get('protocol', 'leave-one-out')}):")
    for layer in quality["layers"]:
        lines.append("  " + heldout_line(layer, quality["heldout"]["layers"][str(layer)], lambda l: describe_layer(l, n_layers)))
    best = quality["heldout"]["recommended_layers"]
    lines.append(f"recommended layers (best held-out AUROC first): {', '.join(map(str, best))}")
    if quality["heldout"].get("disagreement"):
        lines.append(f"note: {quality['heldout']['disagreement']}")
    return lines


def served(vectors: dict[int, torch.Tensor], layers: list[int]) -> torch.Tensor:
    """The exported fp16 rows as fp32 [n_layers, n_concepts, d]: what every metric is computed on."""
    return torch.stack([vectors[layer].float() for layer in layers])
