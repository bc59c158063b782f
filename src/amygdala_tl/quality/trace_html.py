"""The trace page: one self-contained HTML file (data and script inline, opens offline) for a tracing.Trace.

The text with each token shaded by a chosen concept or by its top concept, a hover listing the top 5
concepts there with their values, a line plot of the text's top concepts over positions, a layer
selector. `trace --html` and `generate --readout --html` both write it: `render_trace_html(trace)`.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from .. import atomic
from ..tracing import Trace

SECTIONS = ("controls", "text", "plot")

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>amygdala-tl trace</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.3em; } .note { color: #666; font-size: 0.9em; }
#controls label { margin-right: 1.5em; }
#tokens { font-family: Georgia, serif; font-size: 1.05em; line-height: 1.9; white-space: pre-wrap; border: 1px solid #ddd;
  padding: 0.8em; border-radius: 6px; }
.tok { border-radius: 3px; cursor: default; }
.tok:hover { outline: 1px solid #333; }
#tip { position: fixed; display: none; background: #fff; border: 1px solid #999; border-radius: 4px; padding: 0.4em 0.6em;
  font-size: 0.85em; box-shadow: 0 2px 6px rgba(0,0,0,0.2); pointer-events: none; z-index: 10; }
#tip table { border-collapse: collapse; } #tip td { padding: 0 0.4em; } #tip td.v { text-align: right; font-variant-numeric: tabular-nums; }
#legend span { margin-right: 1em; } #legend i { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.3em; vertical-align: -1px; }
svg text { font-size: 11px; fill: #444; }
</style></head><body>
<h1>Trace: the served readout, token by token</h1>
<p class="note">__NOTE__</p>
<section id="controls">
<label>layer <select id="layer"></select></label>
<label>shade by <select id="concept"><option value="-1">top concept at each token</option></select></label>
</section>
<section id="text"><h2>Text</h2><div id="tokens"></div></section>
<section id="plot"><h2>Top concepts over positions</h2><div id="legend"></div><svg id="lines" width="1060" height="260"></svg></section>
<div id="tip"></div>
<script id="trace-data" type="application/json">__DATA__</script>
<script>
"use strict";
const T = JSON.parse(document.getElementById("trace-data").textContent);
const PALETTE = ["#d62728", "#2ca02c", "#1f77b4", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#bcbd22", "#7f7f7f"];
const layerSel = document.getElementById("layer"), conceptSel = document.getElementById("concept");
const tokensDiv = document.getElementById("tokens"), tip = document.getElementById("tip");
T.layers.forEach(l => layerSel.add(new Option("layer " + l, String(l))));
T.concepts.forEach((c, i) => conceptSel.add(new Option(c, String(i))));
layerSel.value = String(T.layer);
conceptSel.value = String(T.concept);
const shown = () => T.values[layerSel.value];
function order(row) { return row.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0]); }
function scale(values) {
  if (T.calibrated) return 3;
  let m = 0; values.forEach(r => r.forEach(v => { m = Math.max(m, Math.abs(v)); })); return m || 1;
}
function rgba(hex, a) {
  const n = parseInt(hex.slice(1), 16);
  return "rgba(" + (n >> 16) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + a.toFixed(3) + ")";
}
function topConcepts(values) { return order(values[values.length - 1]).slice(0, 5).map(p => p[1]); }
function shade() {
  const values = shown(), s = scale(values), chosen = Number(conceptSel.value), tops = topConcepts(values);
  const colourOf = c => PALETTE[tops.indexOf(c) >= 0 ? tops.indexOf(c) : 5 + (c % 5)];
  tokensDiv.querySelectorAll(".tok").forEach(span => {
    const row = values[Number(span.dataset.i)];
    if (chosen >= 0) {
      const v = row[chosen], a = Math.min(1, Math.abs(v) / s) * 0.85;
      span.style.background = rgba(v >= 0 ? "#d62728" : "#1f77b4", a);
    } else {
      const best = order(row)[0], a = Math.max(0.08, Math.min(1, best[0] / s) * 0.85);
      span.style.background = rgba(colourOf(best[1]), a);
      span.dataset.top = T.concepts[best[1]];
    }
  });
  plot(values, tops);
}
function plot(values, tops) {
  const svg = document.getElementById("lines"), W = 1060, H = 260, L = 50, R = 10, P = 20, B = 30;
  let lo = Infinity, hi = -Infinity;
  tops.forEach(c => values.forEach(r => { lo = Math.min(lo, r[c]); hi = Math.max(hi, r[c]); }));
  if (hi - lo < 1e-9) { hi += 1; lo -= 1; }
  const n = values.length, x = t => L + (n > 1 ? t / (n - 1) : 0.5) * (W - L - R), y = v => P + (hi - v) / (hi - lo) * (H - P - B);
  let out = '<line x1="' + L + '" y1="' + (H - B) + '" x2="' + (W - R) + '" y2="' + (H - B) + '" stroke="#999"/>';
  out += '<line x1="' + L + '" y1="' + P + '" x2="' + L + '" y2="' + (H - B) + '" stroke="#999"/>';
  [lo, (lo + hi) / 2, hi].forEach(v => { out += '<text x="4" y="' + (y(v) + 4) + '">' + v.toFixed(2) + "</text>"; });
  out += '<text x="' + (W / 2) + '" y="' + (H - 6) + '">token position (0..' + (n - 1) + ")</text>";
  tops.forEach((c, k) => {
    const pts = values.map((r, t) => x(t).toFixed(1) + "," + y(r[c]).toFixed(1)).join(" ");
    out += '<polyline class="series" fill="none" stroke-width="1.6" stroke="' + PALETTE[k] + '" points="' + pts + '"/>';
  });
  svg.innerHTML = out;
  document.getElementById("legend").innerHTML = tops.map((c, k) =>
    '<span><i style="background:' + PALETTE[k] + '"></i>' + T.concepts[c] + " " + values[n - 1][c].toFixed(2) + "</span>").join("");
}
T.tokens.forEach((token, i) => {
  const span = document.createElement("span");
  span.className = "tok"; span.dataset.i = String(i); span.textContent = token;
  tokensDiv.appendChild(span);
});
tokensDiv.addEventListener("mousemove", event => {
  const span = event.target.closest(".tok");
  if (!span) { tip.style.display = "none"; return; }
  const i = Number(span.dataset.i), row = shown()[i], raw = T.raw[layerSel.value][i];
  const rows = order(row).slice(0, 5).map(p => "<tr><td>" + T.concepts[p[1]] + '</td><td class="v">' + p[0].toFixed(2) +
    '</td><td class="v">' + raw[p[1]].toFixed(2) + "</td></tr>").join("");
  tip.innerHTML = "<b>token " + i + "</b> " + JSON.stringify(T.tokens[i]) + '<table><tr><td></td><td class="v">' + T.units +
    '</td><td class="v">served</td></tr>' + rows + "</table>";
  tip.style.left = Math.min(event.clientX + 14, window.innerWidth - 260) + "px"; tip.style.top = (event.clientY + 14) + "px";
  tip.style.display = "block";
});
tokensDiv.addEventListener("mouseleave", () => { tip.style.display = "none"; });
layerSel.addEventListener("change", shade);
conceptSel.addEventListener("change", shade);
shade();
</script></body></html>
"""


def page_data(trace: Trace, layer: int | None = None, concept: str | None = None) -> dict:
    """What the page's script reads: tokens, the shown values (running reading: z, else raw) and the served per-token scores."""
    rounded = lambda table: {str(layer): [[round(float(v), 4) for v in row] for row in table[layer]] for layer in trace.layers}  # noqa: E731
    return {
        "tokens": trace.tokens,
        "layers": trace.layers,
        "concepts": trace.concepts,
        "layer": layer if layer is not None else trace.layers[len(trace.layers) // 2],
        "concept": trace.concepts.index(concept) if concept is not None else -1,
        "calibrated": trace.calibrated,
        "units": "z" if trace.calibrated else "raw",
        "values": rounded(trace.z if trace.z is not None else trace.running),
        "raw": rounded(trace.raw),
    }


def render_trace_html(trace: Trace, layer: int | None = None, concept: str | None = None) -> str:
    """The page as a string (self-contained: no network, no files beside it)."""
    units = "calibrated z (calibration.json)" if trace.calibrated else "raw dot products (no calibration.json)"
    note = (
        f"{len(trace.tokens)} tokens, {len(trace.concepts)} concepts, layers {', '.join(map(str, trace.layers))}. "
        f"Shading and plot: the running declared reading ({trace.pooling}) a client holds after each token, in {units}; "
        "the hover also lists the served per-token score &lt;h_t, v_c&gt;."
    )
    data = json.dumps(page_data(trace, layer, concept)).replace("</", "<\\/")
    return (
        PAGE.replace("__NOTE__", note)
        .replace("__DATA__", data)
        .replace("<title>amygdala-tl trace</title>", f"<title>trace: {html.escape(trace.text[:60])}</title>")
    )


def write_trace_html(trace: Trace, path: Path, layer: int | None = None, concept: str | None = None) -> Path:
    """Write the page atomically; returns its path."""
    path = Path(path)
    atomic.commit_all([(path, render_trace_html(trace, layer, concept).encode("utf-8"))])
    return path
