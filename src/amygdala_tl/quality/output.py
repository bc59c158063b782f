"""Write quality.json + report.html, and the printed summary (triage and held-out lines)."""

from __future__ import annotations

from ..layers import describe_layer
from ..rundir import HTML_FILE, QUALITY_FILE, json_payload
from .heldout import combined_line, heldout_line
from .html import render_html
from .report import Quality, QualityInputs, build_quality


def quality_payloads(inputs: QualityInputs, n_heads: int | None, run_id: str, head_concept: str | None = None) -> tuple[Quality, dict[str, bytes]]:
    """quality.json (stamped with the run id) and report.html, as bytes for the run's one commit."""
    quality = build_quality(inputs)
    directions = {layer: inputs.directions[slot].numpy() for slot, layer in enumerate(inputs.layers)}
    page = render_html(quality, directions, n_heads, head_concept)
    return quality, {QUALITY_FILE: json_payload(quality.to_json(), run_id), HTML_FILE: page.encode()}


def summary_lines(quality: Quality, samples: int = 4) -> list[str]:
    triage, n_layers, heldout = quality.triage, quality.n_layers, quality.heldout
    lines = [f"triage at {describe_layer(triage.layer, n_layers)}:"]
    for name, members in triage.buckets.items():
        if members:
            shown = ", ".join(members[:samples]) + (", ..." if len(members) > samples else "")
            lines.append(f"  {name.replace('_', ' ')}: {len(members)} ({shown})")
    lines.append(f"held-out ({heldout.protocol}):")
    for layer in quality.layers:
        lines.append("  " + heldout_line(layer, heldout.layers[layer], lambda l: describe_layer(l, n_layers)))
    lines.append(f"recommended layers (best held-out AUROC first): {', '.join(map(str, heldout.recommended_layers))}")
    if heldout.development_set is not None:
        for reading in heldout.development_set.combined:
            lines.append("  " + combined_line(reading))
        if (combined := heldout.recommended_combined) is not None:
            lines.append(
                f"recommended reading: the mean of z over layers {', '.join(map(str, combined.layers))} "
                f"(`score --layers-combined {combined.k}`): better than layer {heldout.best_layer} beyond its interval"
            )
    if heldout.disagreement:
        lines.append(f"note: {heldout.disagreement}")
    return lines
