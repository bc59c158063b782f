"""`score`: a user's own sentences through exported vectors, read as the export declares (see capture/pooling)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..capture import capture
from ..corpus import read_lines
from ..errors import UserError
from ..formats.readout import score
from ..model import LoadedModel, load_model
from ..quality.calibration import read_calibration
from .vectors import load_model_for, open_vectors


@dataclass
class TextScores:
    text: str
    centered: bool
    scores: dict[str, dict[str, float]]  # layer -> concept -> score
    units: str = "raw"  # "z": calibrated (calibration.json), "raw": the declared reading's dot product, "centered": raw minus the offset
    combined: dict[str, float] | None = None  # --layers-combined K: concept -> the mean of its z over `combined_layers`
    combined_layers: list[int] | None = None

    def to_json(self) -> dict:
        data = {"text": self.text, "units": self.units, "centered": self.centered, "scores": self.scores}
        return data if self.combined is None else data | {"combined": self.combined, "combined_layers": self.combined_layers}

    def summary(self, top: int = 5) -> list[str]:
        """The text, then the `top` concepts per layer."""
        lines = [f"[bold]{self.text[:100]}[/]" + ("  [dim](z, calibrated)[/]" if self.units == "z" else f"  [dim]({self.units})[/]")]
        for layer, scores in self.scores.items():
            ranked = sorted(scores.items(), key=lambda item: -item[1])[:top]
            lines.append(f"  layer {layer}: " + ", ".join(f"{name} {value:+.2f}" for name, value in ranked))
        if self.combined is not None and self.combined_layers is not None:
            ranked = sorted(self.combined.items(), key=lambda item: -item[1])[:top]
            lines.append(f"  mean of z, layers {','.join(map(str, self.combined_layers))}: " + ", ".join(f"{n} {v:+.2f}" for n, v in ranked))
        return lines


def read_texts(texts: Sequence[str], file: Path | None) -> list[str]:
    texts = list(texts) + (read_lines(file, "--file") if file is not None else [])
    if not texts:
        raise UserError("nothing to score: pass texts or --file")
    if empty := [i for i, text in enumerate(texts) if not text.strip()]:
        raise UserError(f"text {empty[0] + 1} is empty: nothing to score")
    return texts


def check_top(top: int) -> None:
    if top < 1:
        raise UserError(f"--top must be at least 1, got {top}")


@dataclass(kw_only=True)
class ScoreConfig:
    """`score`'s options and their defaults (the command line builds one by keyword)."""

    texts: Sequence[str] = ()
    file: Path | None = None  # each non-empty line is a text too
    vectors: Path = Path("out")
    model: str | None = None
    top: int = 5  # concepts shown per layer (TextScores.summary)
    centered: bool = False  # subtract each concept's corpus offset mu . v_c (from extract.json); raw units
    raw: bool = False  # the raw declared reading <pooled h, v_c>, not z (the default where calibration.json is there)
    layers_combined: int | None = None  # also the mean of each concept's z over the K best exported layers (needs calibration.json)
    device: str | None = None
    trust_remote_code: bool = False


def score_texts(
    config: ScoreConfig, *, loader: Callable[..., LoadedModel] = load_model, warn: Callable[[str], None] = lambda message: None
) -> list[TextScores]:
    """Serving-convention scores of each text, in calibrated z where calibration.json is there (raw with
    `raw`, or where there is none); `centered` subtracts each concept's corpus offset from the raw scores.

    A text longer than extract's --max-length keeps its end, as extract did (`warn` names it)."""
    check_top(config.top)
    vectors_dir, centered = config.vectors, config.centered
    texts = read_texts(config.texts, config.file)
    vectors = open_vectors(vectors_dir)
    readout = vectors.readout
    if centered and vectors.record is None:
        raise UserError(f"--centered needs the score offsets that `amygdala-tl extract` writes to extract.json in {vectors_dir}")
    offsets = vectors.record.offsets(readout.layers) if centered and vectors.record else None
    calibration = None if config.raw or centered else read_calibration(vectors.directory, vectors.record, readout)
    units = "z" if calibration is not None else "centered" if centered else "raw"
    if config.layers_combined is not None:
        if calibration is None:
            raise UserError(f"--layers-combined averages calibrated z: it needs calibration.json in {vectors_dir} (and no --raw / --centered)")
        combined_layers = calibration.combined_layers(config.layers_combined)  # a K out of range fails before the model loads
    loaded = load_model_for(vectors, config.model, config.device, config.trust_remote_code, loader)
    acts = capture(loaded, texts, readout.layers, pooling=vectors.pooling, max_length=vectors.max_length)
    for index in acts.truncated:
        warn(f"text {index + 1} is longer than {vectors.max_length} tokens: scored on its last {vectors.max_length}, as extract read the corpus")
    scores = score(readout, {layer: acts.at(layer) for layer in readout.layers})
    combined = calibration.combined_z(scores, config.layers_combined) if calibration is not None and config.layers_combined else None
    if calibration is not None:
        scores = {layer: calibration.z(layer, values) for layer, values in scores.items()}
    shift = (lambda layer, concept: offsets[layer][concept]) if offsets else (lambda layer, concept: 0.0)
    return [
        TextScores(
            text,
            centered,
            {str(layer): {c: round(float(v) - shift(layer, c), 4) for c, v in zip(readout.concepts, scores[layer][i])} for layer in readout.layers},
            units,
            {c: round(float(v), 4) for c, v in zip(readout.concepts, combined[i])} if combined is not None else None,
            combined_layers if combined is not None else None,
        )
        for i, text in enumerate(texts)
    ]
