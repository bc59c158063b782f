"""`trace`: a text through exported vectors at every token, every exported layer, every concept, as served.

The per-token served score <h_t, v_c>, the running declared reading a client holds after each token,
and that reading in calibrated z where calibration.json is there (tracing.Trace). Output: the terminal
(the text coloured by its top concepts), JSON, and a self-contained HTML page (quality.trace_html).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..model import LoadedModel, load_model
from ..quality.calibration import read_calibration
from ..tracing import Trace, trace_text
from .vectors import load_model_for, open_vectors

COLOURS = ("red", "green", "blue", "magenta", "cyan", "yellow")


@dataclass(kw_only=True)
class TraceConfig:
    """`trace`'s options and their defaults (the command line builds one by keyword)."""

    text: str | None = None  # the text, or the path of a file holding it (a corpus story)
    file: Path | None = None  # the whole file is one text
    vectors: Path = Path("out")
    model: str | None = None
    raw: bool = False  # raw running reading, not z (the default where calibration.json is there)
    layer: int | None = None  # the layer the terminal shows and the page opens on (default: the middle exported layer)
    concept: str | None = None  # the page shades by this concept (default: each token's top concept)
    top: int = 3  # concepts coloured in the terminal
    html: Path | None = None
    device: str | None = None
    trust_remote_code: bool = False


def text_of(config: TraceConfig) -> str:
    """The text argument (or the file it names), or --file's content; exactly one of them."""
    if (config.text is None) == (config.file is None):
        raise UserError("trace takes one text: a text argument, a story file's path, or --file")
    path = config.file if config.file is not None else Path(config.text) if len(config.text or "") < 4096 else None  # type: ignore[arg-type]
    if config.file is not None and not config.file.is_file():
        raise UserError(f"--file {config.file}: no such file")
    if path is not None and path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise UserError(f"{path} is not UTF-8 text ({error})") from None
    else:
        text = config.text or ""
    if not text.strip():
        raise UserError("the text is empty: nothing to trace")
    return text.strip()


def run_trace(config: TraceConfig, *, loader: Callable[..., LoadedModel] | None = None, warn: Callable[[str], None] = lambda message: None) -> Trace:
    """The trace of one text through the vectors in `config.vectors`, calibrated unless `raw`."""
    if config.top < 1:
        raise UserError(f"--top must be at least 1, got {config.top}")
    text = text_of(config)
    vectors = open_vectors(config.vectors)
    if config.layer is not None:
        vectors.readout.check_layers([config.layer])
    if config.concept is not None:
        vectors.readout.check_concept(config.concept)
    calibration = None if config.raw else read_calibration(vectors.directory, vectors.record, vectors.readout)
    loaded = load_model_for(vectors, config.model, config.device, config.trust_remote_code, loader or load_model)
    return trace_text(loaded, vectors.readout, text, vectors.pooling, max_length=vectors.max_length, calibration=calibration, warn=warn)


def trace(
    vectors_dir: str | Path,
    text: str,
    *,
    model: str | None = None,
    device: str | None = None,
    raw: bool = False,
    loader: Callable[..., LoadedModel] | None = None,
) -> Trace:
    """Python API: the served readout of `text` at every token through the exported vectors in `vectors_dir`."""
    if not isinstance(text, str) or not text.strip():
        raise UserError("trace takes a non-empty text")
    return run_trace(TraceConfig(text=text, vectors=Path(vectors_dir), model=model, device=device, raw=raw), loader=loader)


def shown_layer(trace: Trace, layer: int | None) -> int:
    return layer if layer is not None else trace.layers[len(trace.layers) // 2]


def terminal_lines(trace: Trace, layer: int | None = None, top: int = 3) -> list[str]:
    """Rich markup: a legend of the text's `top` concepts (highest final reading), then the text with each token
    coloured by whichever of them reads highest there (bold where it is above 2 z, or the top fifth raw)."""
    from rich.markup import escape

    layer = shown_layer(trace, layer)
    values = trace.reading(layer)
    final = values[-1]
    chosen = [int(i) for i in final.argsort(descending=True)[:top]]
    strong = 2.0 if trace.calibrated else float(values[:, chosen].quantile(0.8))
    units = "z" if trace.calibrated else "raw"
    legend = "  ".join(f"[{COLOURS[k % len(COLOURS)]}]{trace.concepts[c]} {float(final[c]):+.2f}[/]" for k, c in enumerate(chosen))
    pieces = []
    for t, token in enumerate(trace.tokens):
        k = int(values[t, chosen].argmax())
        style = COLOURS[k % len(COLOURS)] + (" bold" if float(values[t, chosen[k]]) > strong else " dim")
        pieces.append(f"[{style}]{escape(token)}[/]")
    header = f"[bold]layer {layer}[/] ({trace.pooling} reading, {units}; {len(trace.tokens)} tokens)  {legend}"
    return [header, "".join(pieces)]
