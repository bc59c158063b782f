"""Write quality.json + report.html, and the printed summary (triage and held-out lines)."""

from __future__ import annotations

from ..layers import describe_layer
from ..rundir import HTML_FILE, QUALITY_FILE, json_payload
from .heldout import combined_line, heldout_line
from .html import render_html
from .report import Quality, QualityInputs, build_quality
from .triage import BUCKETS, ConceptTriage, Triage


def quality_payloads(inputs: QualityInputs, n_heads: int | None, run_id: str, head_concept: str | None = None) -> tuple[Quality, dict[str, bytes]]:
    """quality.json (stamped with the run id) and report.html, as bytes for the run's one commit."""
    quality = build_quality(inputs)
    directions = {layer: inputs.directions[slot].numpy() for slot, layer in enumerate(inputs.layers)}
    page = render_html(quality, directions, n_heads, head_concept)
    return quality, {QUALITY_FILE: json_payload(quality.to_json(), run_id), HTML_FILE: page.encode()}


def summary_lines(quality: Quality, samples: int = 8) -> list[str]:
    """The held-out lines, then the triage (what to do about each concept), last so that it is what a user sees."""
    n_layers, heldout = quality.n_layers, quality.heldout
    lines = [f"note: {heldout.disagreement}"] if heldout.disagreement else []
    lines.append(f"held-out ({heldout.protocol}):")
    for layer in quality.layers:
        lines.append("  " + heldout_line(layer, heldout.layers[layer], lambda l: describe_layer(l, n_layers)))
    lines.append(f"recommended layers (best held-out AUROC first): {', '.join(map(str, heldout.recommended_layers))}")
    if tied := heldout.tied_with_best:
        lines.append(f"  tied with layer {heldout.best_layer} (their 90% interval reaches its AUROC): {', '.join(map(str, sorted(tied)))}")
    if heldout.development_set is not None:
        for reading in heldout.development_set.combined:
            lines.append("  " + combined_line(reading))
        if (combined := heldout.recommended_combined) is not None:
            lines.append(
                f"recommended reading: the mean of z over layers {', '.join(map(str, combined.layers))} "
                f"(`score --layers-combined {combined.k}`): better than layer {heldout.best_layer} beyond its interval"
            )
    return lines + triage_lines(quality.triage, n_layers, samples)


def triage_lines(triage: Triage, n_layers: int, samples: int = 8) -> list[str]:
    """`weak (held-out AUROC below 0.85): 2: grateful (AUROC 0.827), skeptical (AUROC 0.846)` and its action, bucket by bucket."""
    lines = [
        f"triage at {describe_layer(triage.layer, n_layers)}, {triage.protocol} figures (a concept lands in every bucket its evidence supports):"
    ]
    for name, members in triage.buckets.items():
        evidence, action = BUCKETS[name]
        shown = [f"{concept}{evidence_of(name, triage.concepts[concept])}" for concept in members[:samples]]
        listed = (": " + ", ".join(shown) + (", ..." if len(members) > samples else "")) if members else ""
        lines.append(f"  {name.replace('_', ' ')} ({evidence}): {len(members)}{listed}")
        if members:
            lines.append(f"    -> {action}")
    return lines


def evidence_of(bucket: str, entry: ConceptTriage) -> str:
    """What put a concept in a bucket, printed after its name."""
    if bucket == "weak":
        return f" (AUROC {entry.auroc:.3f})"
    if bucket == "confused_with":
        return " (" + ", ".join(f"{other} {count}" for other, count in entry.confused_with) + ")" if entry.confused_with else ""
    if bucket == "redundant":
        return f" (R2 {entry.r_squared:.2f})"
    if bucket == "sparse_head_circuit":
        return f" ({entry.head_concentration:.2f}, heads {', '.join(map(str, entry.top_heads))})"
    if bucket == "single_neuron":
        return f" (neuron {entry.best_neuron}, {entry.best_neuron_cosine:+.2f})"
    return ""
