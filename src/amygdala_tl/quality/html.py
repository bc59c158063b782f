"""report.html: a self-contained page (plots inlined as PNG data URIs) a researcher opens offline."""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.cluster.hierarchy import leaves_list, linkage  # noqa: E402

from .heldout import Heldout, combined_line  # noqa: E402
from .report import Quality  # noqa: E402
from .triage import BUCKETS  # noqa: E402

SECTIONS = ("summary", "heldout", "cosines", "pca", "heads", "triage")


def figure_uri(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def heldout_plot(quality: Quality) -> str:
    layers, heldout = quality.layers, quality.heldout
    blocks = [heldout.layers[layer] for layer in layers]
    cv = heldout.grouped_cv
    many = len(layers) > 12  # every block searched: wider, smaller markers, every other tick
    fig, axes = plt.subplots(1, 2, figsize=(max(10, 0.45 * len(layers)), 3.4))
    for ax, key, floor, title in (
        (axes[0], "mean_auroc", "random_auroc", "held-out AUROC (one-vs-rest)"),
        (axes[1], "top1", "random_top1", "held-out top-1 accuracy"),
    ):
        ax.plot(layers, [getattr(b, key) for b in blocks], "o-", markersize=3 if many else 6, label=f"{quality.method}: {heldout.protocol}")
        intervals = [getattr(b, key.replace("mean_", "") + "_interval", None) for b in blocks]
        if all(isinstance(interval, list) for interval in intervals):
            low, high = [i[0] for i in intervals if i], [i[1] for i in intervals if i]
            ax.fill_between(layers, low, high, alpha=0.2, label="90% bootstrap interval")
        if (combined := heldout.recommended_combined) is not None and getattr(combined.figures, key) is not None:
            ax.axhline(getattr(combined.figures, key), color="purple", linestyle=":", label=f"mean of z, layers {combined.layers}")
        if many:
            ax.set_xticks(layers[::2])
        if heldout.protocol != cv.protocol:
            ax.plot(layers, [getattr(cv.layers[layer], key) for layer in layers], "^-", label="grouped cross-validation")
        ax.plot(layers, [getattr(b, floor) for b in blocks], "s--", color="grey", label="random directions")
        ax.set_xlabel("layer")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    return figure_uri(fig)


def cosine_plot(matrix: np.ndarray, concepts: list[str], layer: int) -> str:
    order = leaves_list(linkage(matrix, method="average", metric="euclidean")) if len(concepts) > 2 else np.arange(len(concepts))
    size = max(5.0, 0.16 * len(concepts) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix[np.ix_(order, order)], cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(order)), [concepts[i] for i in order], rotation=90, fontsize=7)
    ax.set_yticks(range(len(order)), [concepts[i] for i in order], fontsize=7)
    ax.set_title(f"cosine between concept directions, layer {layer} (clustered)")
    fig.colorbar(image, ax=ax, shrink=0.7)
    return figure_uri(fig)


def pca_plot(directions: np.ndarray, concepts: list[str], layer: int) -> str:
    centred = directions - directions.mean(0)
    _, singular, vh = np.linalg.svd(centred, full_matrices=False)
    coords = np.zeros((len(concepts), 2))
    coords[:, : min(2, len(vh))] = centred @ vh[:2].T
    explained = np.zeros(2)
    explained[: min(2, len(singular))] = (singular**2 / max((singular**2).sum(), 1e-300))[:2]
    fig, ax = plt.subplots(figsize=(8, 6.5))
    ax.scatter(coords[:, 0], coords[:, 1], s=18)
    for (x, y), name in zip(coords, concepts):
        ax.annotate(name, (x, y), fontsize=7, xytext=(2, 2), textcoords="offset points")
    ax.set_xlabel(f"PC1 ({explained[0]:.0%}; often valence)")
    ax.set_ylabel(f"PC2 ({explained[1]:.0%}; often arousal)")
    ax.set_title(f"concept directions at layer {layer}, first two principal components")
    ax.grid(alpha=0.3)
    return figure_uri(fig)


def heads_plot(per_head: dict, concept: str, n_heads: int) -> str | None:
    blocks = per_head.get(concept, {})
    if not blocks:
        return None
    layers = sorted(blocks, key=int)
    grid = np.zeros((len(layers), n_heads))
    for row, layer in enumerate(layers):
        for head, _, selectivity in blocks[layer]["top_heads"]:
            grid[row, head] = selectivity
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * n_heads + 2), 0.45 * len(layers) + 1.5))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_yticks(range(len(layers)), [f"L{layer}" for layer in layers])
    ax.set_xticks(range(n_heads), [f"H{h}" for h in range(n_heads)])
    ax.set_title(f"per-head selectivity for '{concept}' (top heads per layer)")
    fig.colorbar(image, ax=ax)
    return figure_uri(fig)


def triage_section(quality: Quality) -> str:
    """Each bucket (evidence, action, members), then every concept's evidence at the triage layer."""
    triage, middle = quality.triage, quality.middle_layer
    buckets = "".join(
        f"<tr><td><b>{name.replace('_', ' ')}</b></td><td>{html.escape(BUCKETS[name][0])}</td><td>{len(members)}</td>"
        f"<td>{html.escape(BUCKETS[name][1])}</td><td class=small>{html.escape(', '.join(members))}</td></tr>"
        for name, members in triage.buckets.items()
    )
    rows = []
    for concept, entry in quality.concepts.items():
        found = triage.concepts[concept]
        nearest = entry.nearest_concepts[0] if entry.nearest_concepts else ["", float("nan")]
        outliers = "<br>".join(f"{html.escape(o['path'].split('/corpus/')[-1])} ({o['alignment']:.2f})" for o in entry.outlier_stories)
        confused = ", ".join(f"{other} {count}" for other, count in found.confused_with)
        heads = "" if found.head_concentration is None else f"{found.head_concentration:.2f} (H{', H'.join(map(str, found.top_heads))})"
        neuron = "–" if found.best_neuron_cosine is None else f"{found.best_neuron_cosine:+.2f} (#{found.best_neuron})"
        rows.append(
            f"<tr><td>{html.escape(concept)}</td><td>{html.escape(', '.join(b.replace('_', ' ') for b in found.buckets))}</td>"
            f"<td>{entry.n_positive_stories}</td><td>{_fmt(found.auroc)}</td><td>{_fmt(found.top1)}</td><td>{html.escape(confused)}</td>"
            f"<td>{_fmt(found.r_squared)}</td><td>{heads or '–'}</td><td>{neuron}</td>"
            f"<td>{entry.per_layer[triage.layer]['first_pc_variance_ratio']:.2f}</td>"
            f"<td>{html.escape(str(nearest[0]))} ({nearest[1]:.2f})</td><td class=small>{outliers}</td></tr>"
        )
    header = "".join(
        f"<th>{h}</th>"
        for h in (
            "concept",
            "triage",
            "stories",
            "AUROC",
            "top-1",
            "read instead as",
            "ridge R²",
            "head concentration",
            "best neuron cos",
            "first PC",
            f"nearest (layer {middle})",
            f"outlier stories (layer {middle})",
        )
    )
    return (
        f"<section id=triage><h2>Triage (layer {triage.layer}, {html.escape(triage.protocol)})</h2>"
        "<p>Each concept sorted by evidence at the best layer: its held-out AUROC and top-1 and the concepts its held-out texts were read as "
        "(the leading protocol), the ridge R² of its direction on the others, the head concentration and the best MLP neuron. "
        "A concept lands in every bucket its evidence supports; clean ones in none.</p>"
        "<table><thead><tr><th>bucket</th><th>evidence</th><th>concepts</th><th>what to do</th><th>which</th></tr></thead>"
        f"<tbody>{buckets}</tbody></table><h3>Per concept</h3>"
        f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table></section>"
    )


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def combined_html(heldout: Heldout) -> str:
    """The multi-layer readings on the development test set, and the recommendation when one beats the best layer."""
    if heldout.development_set is None or not heldout.development_set.combined:
        return ""
    rows = "".join(f"<li>{html.escape(combined_line(reading))}</li>" for reading in heldout.development_set.combined)
    combined = heldout.recommended_combined
    verdict = (
        f"<p><b>Recommended reading: the mean of z over layers {', '.join(map(str, combined.layers))}</b> (a client computes each "
        "layer's z from calibration.json, then the mean over the layers; <code>score --layers-combined "
        f"{combined.k}</code>): better than layer {heldout.best_layer} beyond its 90% interval.</p>"
        if combined is not None
        else f"<p>No multi-layer reading beats layer {heldout.best_layer} beyond its interval: read the single layer.</p>"
    )
    return f"<p>Multi-layer readings (the mean of each concept's z over the best layers):</p><ul>{rows}</ul>{verdict}"


def render_html(quality: Quality, directions_by_layer: dict[int, np.ndarray], n_heads: int | None, head_concept: str | None = None) -> str:
    concepts = list(quality.concepts)
    heldout = quality.heldout
    best = heldout.best_layer
    best_block = heldout.layers[best]
    per_head = {c: e.per_head for c, e in quality.concepts.items() if e.per_head}
    if head_concept is None and per_head:
        head_concept = max(per_head, key=lambda c: max(b["head_concentration"] for b in per_head[c].values()))
    heads_uri = heads_plot(per_head, head_concept, n_heads) if head_concept and n_heads else None
    triage = quality.triage
    counts = ", ".join(f"{name.replace('_', ' ')}: {len(members)}" for name, members in triage.buckets.items() if members)
    matrix = np.array([[round(float(v), 4) for v in row] for row in quality.cosine_matrices[best]])
    parts = [
        f"<section id=summary><h1>amygdala-tl quality report</h1><p>{len(concepts)} concepts, method <b>{html.escape(quality.method)}</b>, "
        f"layers {', '.join(map(str, quality.layers))}. Best layer <b>{best}</b>: held-out AUROC <b>{best_block.mean_auroc:.3f}</b>, "
        f"top-1 <b>{best_block.top1:.3f}</b> (random {best_block.random_auroc:.2f} / {best_block.random_top1:.3f}).</p>"
        + (
            f"<p>Tied with layer {best} (their 90% interval reaches its AUROC): {', '.join(map(str, sorted(tied)))}.</p>"
            if (tied := heldout.tied_with_best)
            else ""
        )
        + (f"<p><b>Note: {html.escape(disagreement)}</b></p>" if (disagreement := heldout.disagreement) else "")
        + f"<p><a href='#triage'>Triage</a> at layer {triage.layer} ({html.escape(triage.protocol)}): {counts}.</p></section>",
        f"<section id=heldout><h2>Held-out evaluation</h2><p>Leading figure: {html.escape(heldout.protocol)}. "
        "Scored as a client of the server scores: the raw dot product of each text's residual, pooled as the export declares in calibration.json "
        "(by default the mean over the text's last 128 tokens, which equals the mean of those tokens' per-token served scores), with each "
        "exported fp16 row, each concept's scores z-scored over the evaluation texts, one-vs-rest AUROC per concept and top-1 among every "
        f"concept. Cross-validation: {html.escape(heldout.grouped_cv.protocol)} ({heldout.grouped_cv.n_splits} folds; a paired scenario's "
        "texts are held out together"
        + (f"; not by writer: {html.escape(why)}" if (why := heldout.grouped_cv.not_by_writer) else "")
        + ").</p>"
        + combined_html(heldout)
        + f"<img alt='held-out curves' src='{heldout_plot(quality)}'></section>",
        f"<section id=cosines><h2>Concept similarity</h2><img alt='cosine matrix' src='{cosine_plot(matrix, concepts, best)}'></section>",
        f"<section id=pca><h2>Concept map</h2><img alt='PCA map' src='{pca_plot(directions_by_layer[best], concepts, best)}'></section>",
        "<section id=heads><h2>Per-head selectivity</h2>"
        + (f"<img alt='head selectivity' src='{heads_uri}'>" if heads_uri else "<p>No per-head decomposition in this run.</p>")
        + "</section>",
        triage_section(quality),
    ]
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}"
        "th{background:#f3f3f3;position:sticky;top:0}.small{font-size:11px}img{max-width:100%}section{margin-bottom:2.5em}"
    )
    return f"<!doctype html><html lang=en><head><meta charset=utf-8><title>amygdala-tl quality report</title><style>{style}</style></head><body>{''.join(parts)}</body></html>"
