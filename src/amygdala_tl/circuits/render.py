"""Heatmaps (PNG) and HTML pages for head detectors and ablations."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .. import atomic  # noqa: E402
from ..quality.html import figure_uri  # noqa: E402
from .detectors import DetectorResult  # noqa: E402


def heatmap(result: DetectorResult):
    scores = result.scores.numpy()
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * scores.shape[1] + 2), max(3, 0.25 * scores.shape[0] + 1.5)))
    image = ax.imshow(scores, cmap="magma", aspect="auto")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(f"{result.name} (flag > {result.threshold:g}: {len(result.flagged)} heads)")
    fig.colorbar(image, ax=ax)
    return fig


def write_detector_outputs(results: dict[str, DetectorResult], output_dir: Path) -> list[Path]:
    """heads.json, one PNG heatmap per detector, and heads.html with all of them."""
    output_dir = Path(output_dir)
    files: list[tuple[Path, bytes]] = []
    sections = []
    for name, result in results.items():
        uri = figure_uri(heatmap(result))
        files.append((output_dir / f"heads_{name}.png", base64.b64decode(uri.split(",", 1)[1])))
        flagged = ", ".join(result.flagged[:12]) or "none"
        sections.append(
            f"<section id={name}><h2>{name.replace('_', ' ')}</h2><p>{html.escape(result.data)}. "
            f"Flag threshold {result.threshold:g}; flagged: {html.escape(flagged)}</p><img alt='{name}' src='{uri}'></section>"
        )
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>amygdala-tl head census</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}img{max-width:100%}</style></head><body>"
        f"<h1>Head census</h1>{''.join(sections)}</body></html>"
    )
    payload = {name: result.to_dict() for name, result in results.items()}
    files += [(output_dir / "heads.json", atomic.dumps_json(payload).encode()), (output_dir / "heads.html", page.encode())]
    atomic.commit_all(files)
    return [path for path, _ in files]


def _colour(value: float, scale: float) -> str:
    strength = min(abs(value) / max(scale, 1e-9), 1.0)
    return f"rgba(0,128,0,{strength:.2f})" if value > 0 else f"rgba(200,0,0,{strength:.2f})"


def ablation_html(results: list[dict]) -> str:
    """A table per condition: the prompt's tokens (ablated position highlighted) and colour-coded changes."""
    blocks = []
    for result in results:
        rows = []
        scale = max((abs(v) for r in result["prompts"] for _, v in r["increases"] + r["decreases"]), default=1.0)
        for row in result["prompts"]:
            tokens = "".join(
                f"<span class={'ablated' if i == row['ablated_position'] else 'tok'}>{html.escape(t)}</span>" for i, t in enumerate(row["tokens"])
            )
            cells = lambda pairs, scale=scale: " ".join(
                f"<span style='background:{_colour(v, scale)}'>{html.escape(t)} {v:+.2f}</span>" for t, v in pairs
            )
            rows.append(
                f"<tr><td>{tokens}</td><td>{html.escape(row['clean_top1'])} &rarr; {html.escape(row['ablated_top1'])}</td>"
                f"<td style='background:{_colour(row['clean_top1_logit_change'], scale)}'>{row['clean_top1_logit_change']:+.2f}</td>"
                f"<td>{row['kl_clean_ablated']:.4f}</td><td>{cells(row['increases'])}</td><td>{cells(row['decreases'])}</td></tr>"
            )
        header = "".join(
            f"<th>{h}</th>" for h in ("prompt", "top-1", "clean top-1 logit", "KL(clean||ablated)", "largest increases", "largest decreases")
        )
        blocks.append(
            f"<h2>{html.escape(result['condition'])}</h2><p>top-1 changed on {result['top1_changed_fraction']:.0%} of prompts</p>"
            f"<table><tr>{header}</tr>{''.join(rows)}</table>"
        )
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px}.tok{padding:0 1px}.ablated{background:#ffd54f;outline:1px solid #e65100}"
    )
    return f"<!doctype html><html lang=en><head><meta charset=utf-8><title>amygdala-tl ablations</title><style>{style}</style></head><body>{''.join(blocks)}</body></html>"
