"""`steer --sweep`: which strength to steer with, measured on the text it writes and what it costs in fluency.

For each strength alpha (units of the steered layer's mean residual norm on the prompt, as `steer --alpha`)
and each prompt, the model writes a continuation (KV-cached, `generate.generate_with_readout` with no
readout; alpha 0 adds no hook: it is the unsteered model). Each continuation is then read in one plain
forward pass of prompt + continuation with **no hook** (the unsteered model), and only the continuation's
tokens count:

- concept z: the per-token served scores `<h_t, v>` at the recommended readout layer (the first of
  calibration.json's `layers_ranked`), each calibrated `(s_t - mean) / std` with that layer's calibration,
  averaged over the continuation's tokens (equal to z of the mean per-token score); per strength, the mean
  over prompts, and the concept's rank among every concept's (1: the highest);
- perplexity: exp(mean negative log-likelihood of the continuation's tokens given the prompt and the tokens
  before them); relative perplexity at alpha = the geometric mean over prompts of ppl(alpha) / ppl(alpha 0);
- concept term = max(0, 2 Phi(lift) - 1) = max(0, erf(lift / sqrt 2)), lift = concept z(alpha) - concept z(alpha 0)
  (0 at or below the unsteered text, 0.68 at lift 1, 0.95 at lift 2); fluency term = min(1, 1 / relative perplexity);
- steering score = their harmonic mean 2 c f / (c + f) (0 when either is 0). The best strength is the one
  with the highest steering score (the smallest such alpha on a tie).

llama.cpp: `export --format gguf-control --layers L --scale s` stores u * s with u = v / |v|, and
`--control-vector-scaled FILE S` adds S * s * u at every position of block L's output; `steer` adds
alpha * mean_norm * v = alpha * mean_norm * |v| * u, so S = alpha * mean_norm * |v| / s (mean_norm: the
mean over the sweep's prompts, the same prompt-dependence `steer --alpha` has).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .. import atomic, hooks
from ..capture import forward
from ..capture.forward import Intervention
from ..errors import UserError
from ..formats.readout import Readout, served_scores
from ..model import LoadedModel, load_model
from ..quality.calibration import Calibration, read_calibration
from ..rundir import check_output_dir
from .generate import generate_with_readout
from .steer import MAX_ALPHA, MIN_TEMPERATURE, concept_vector, mean_resid_norm, prompt_tokens, steering_hook
from .vectors import Vectors, load_model_for, open_vectors

SWEEP_FILE = "steer_sweep.json"
PLOT_FILE = "steer_sweep.png"
DEFAULT_ALPHAS = (0.0, 0.1, 0.2, 0.4, 0.8)  # the bundled model's text breaks near alpha 1 (docs/gguf.md)
DEFAULT_PROMPTS = (
    "The meeting started and",
    "On the way to the station,",
    "She opened the letter and",
    "The weather this morning was",
    "He put the kettle on and",
    "After lunch, the two of them",
    "The report on the desk said",
    "When the bus finally arrived,",
    "I looked out of the window and",
    "The first thing we did that day was",
)
MAX_PROMPT_FILE = 1 << 20
FORMULAS = {
    "concept_z": "mean over the continuation's tokens of (<h_t, v_c> - mean_c) / std_c at read_layer (calibration.json), "
    "h_t from one forward pass of prompt + continuation with no hook; the mean over prompts per alpha",
    "rank": "1 + the number of concepts whose concept_z (same texts, same formula) is higher",
    "perplexity": "exp(mean over the continuation's tokens of -log p(token | prompt, earlier tokens)), unsteered model",
    "relative_perplexity": "geometric mean over prompts of perplexity(alpha) / perplexity(alpha 0)",
    "concept_lift": "concept_z(alpha) - concept_z(alpha 0)",
    "concept_term": "max(0, erf(concept_lift / sqrt(2))) = max(0, 2 Phi(lift) - 1)",
    "fluency_term": "min(1, 1 / relative_perplexity)",
    "steering_score": "2 c f / (c + f), c the concept term, f the fluency term (0 when either is 0)",
    "control_vector_scaled": "alpha * mean_resid_norm * |v| / gguf_scale (export --layers steer_layer --scale gguf_scale)",
}


@dataclass(kw_only=True)
class SweepConfig:
    """`steer --sweep`'s options and their defaults."""

    concept: str  # one concept, several separated by commas, or 'all': every concept of the vectors
    layer: int  # the steered block (exported)
    vectors: Path = Path("out")
    alphas: Sequence[float] = field(default_factory=lambda: list(DEFAULT_ALPHAS))  # alpha 0 is always measured (fluency is relative to it)
    prompts: Path | None = None  # one prompt a line; None: DEFAULT_PROMPTS
    max_new_tokens: int = 16
    temperature: float = 0.0
    seed: int = 0
    gguf_scale: float = 1.0  # the --scale the GGUF is (or will be) exported with
    output: Path | None = None  # the directory for steer_sweep.json and the plot; None: beside the vectors
    model: str | None = None
    device: str | None = None
    trust_remote_code: bool = False


def parse_alphas(text: str) -> list[float]:
    """--alphas '0,1,2,4,8'."""
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--alphas {text!r}: expected numbers separated by commas, e.g. 0,1,2,4,8") from None


def checked_alphas(alphas: Sequence[float]) -> list[float]:
    """Sorted, unique, alpha 0 included, each finite within +-MAX_ALPHA."""
    if not alphas:
        raise UserError("--alphas is empty: give strengths such as 0,1,2,4,8")
    for alpha in alphas:
        if not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or abs(alpha) > MAX_ALPHA:
            raise UserError(f"--alphas: each must be a number between -{MAX_ALPHA:g} and {MAX_ALPHA:g} (residual norms), got {alpha}")
    return sorted({0.0, *(float(a) for a in alphas)})


def read_prompts(path: Path | None) -> list[str]:
    """--prompts FILE: one prompt a line, blank lines skipped; the shipped neutral openings without one."""
    if path is None:
        return list(DEFAULT_PROMPTS)
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--prompts {path}: no such file")
    if path.stat().st_size > MAX_PROMPT_FILE:
        raise UserError(f"--prompts {path}: over {MAX_PROMPT_FILE >> 20} MiB, not a prompt list")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"--prompts {path}: not valid UTF-8") from None
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise UserError(f"--prompts {path} has no prompt (one a line)")
    return prompts


def check_sweep_args(vectors: Vectors, config: SweepConfig) -> tuple[list[str], list[float], list[str], Calibration]:
    """Everything the sweep can check before the model loads: (concepts, alphas, prompts, calibration)."""
    readout = vectors.readout
    if config.concept == "all":
        readout.check_layers([config.layer])
        concepts = list(readout.concepts)
    else:
        concepts = [name.strip() for name in config.concept.split(",") if name.strip()]
        if not concepts:
            raise UserError("--concept is empty: name a concept, several separated by commas, or 'all'")
        for name in concepts:
            concept_vector(readout, name, config.layer)
    alphas = checked_alphas(config.alphas)
    temperature = config.temperature
    if not math.isfinite(temperature) or temperature < 0 or 0 < temperature < MIN_TEMPERATURE:
        raise UserError(f"--temperature must be 0 (greedy) or a finite number >= {MIN_TEMPERATURE:g}, got {temperature}")
    if config.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be at least 1, got {config.max_new_tokens}")
    if not math.isfinite(config.gguf_scale) or config.gguf_scale == 0:
        raise UserError(f"--gguf-scale must be a finite non-zero number, got {config.gguf_scale}")
    prompts = read_prompts(config.prompts)
    calibration = read_calibration(vectors.directory, vectors.record, readout)
    if calibration is None or not calibration.layers_ranked:
        raise UserError(f"--sweep reads the concept in calibrated z: {vectors.directory} has no calibration.json (re-run `amygdala-tl extract`)")
    check_output_dir(Path(config.output) if config.output is not None else vectors.directory, "-o")
    return concepts, alphas, prompts, calibration


@dataclass
class Continuation:
    """One written continuation, read unsteered: its tokens, perplexity and every concept's mean z."""

    prompt: int  # index into the prompts
    text: str
    ids: list[int]  # the continuation's token ids
    perplexity: float | None  # None for an empty continuation (EOS first)
    z: Tensor | None  # [n_concepts], None when empty


def write_continuation(
    model: LoadedModel, readout: Readout, prompt: str, interventions: Sequence[Intervention], config: SweepConfig
) -> tuple[list[int], int]:
    """(prompt + continuation ids, prompt length): KV-cached, the interventions at every position."""
    ids, n_prompt, _ = generate_with_readout(
        model,
        readout,
        prompt,
        pooling="last",
        interventions=interventions,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        seed=config.seed,
        readout_layers=[],
    )
    return ids, n_prompt


def read_continuation(
    model: LoadedModel, readout: Readout, calibration: Calibration, layer: int, ids: list[int], n_prompt: int
) -> tuple[float, Tensor]:
    """(perplexity, mean z per concept) of ids[n_prompt:] given ids[:n_prompt]: one forward pass, no hook."""
    name = hooks.resid_post(layer)
    result = forward(model, torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), read=[name], logits=True)
    assert result.logits is not None
    logprobs = result.logits[0, n_prompt - 1 : -1].double().log_softmax(-1)
    targets = torch.tensor(ids[n_prompt:], device=logprobs.device)
    nll = -logprobs.gather(-1, targets[:, None]).mean()
    raw = served_scores(result.acts[name][0, n_prompt:], readout.vectors[layer]).cpu()
    return float(nll.exp()), calibration.z(layer, raw).double().mean(0)


def measured(model: LoadedModel, readout: Readout, calibration: Calibration, layer: int, index: int, ids: list[int], n_prompt: int) -> Continuation:
    new = ids[n_prompt:]
    text = model.tokenizer.decode(new)
    if not new or n_prompt < 1:
        return Continuation(index, text, new, None, None)
    perplexity, z = read_continuation(model, readout, calibration, layer, ids, n_prompt)
    return Continuation(index, text, new, perplexity, z)


def concept_term(z: float) -> float:
    return max(0.0, math.erf(z / math.sqrt(2)))


def fluency_term(relative_perplexity: float) -> float:
    return min(1.0, 1.0 / relative_perplexity)


def steering_score(concept: float, fluency: float) -> float:
    return 2 * concept * fluency / (concept + fluency) if concept > 0 and fluency > 0 else 0.0


def control_vector_scaled(alpha: float, mean_norm: float, vector: Tensor, gguf_scale: float = 1.0) -> float:
    """llama.cpp's --control-vector-scaled S that adds what `steer` adds (alpha * mean_norm * v) with the GGUF
    `export --scale gguf_scale` writes (its rows are v / |v| * gguf_scale)."""
    return alpha * mean_norm * float(vector.float().norm()) / gguf_scale


@dataclass
class SweepRow:
    alpha: float
    concept_z: float | None
    concept_lift: float | None
    rank: int | None
    relative_perplexity: float | None
    concept_term: float | None
    fluency_term: float | None
    steering_score: float | None
    control_vector_scaled: float
    continuations: list[dict]

    def to_json(self) -> dict:
        return {key: value for key, value in vars(self).items()}


@dataclass
class ConceptSweep:
    concept: str
    rows: list[SweepRow]
    vector_norm: float

    @property
    def best(self) -> SweepRow:
        scored = [row for row in self.rows if row.steering_score is not None]
        return max(scored, key=lambda row: (row.steering_score, -abs(row.alpha))) if scored else self.rows[0]

    def to_json(self) -> dict:
        best = self.best
        return {
            "best_alpha": best.alpha,
            "best_control_vector_scaled": best.control_vector_scaled,
            "vector_norm": self.vector_norm,
            "rows": [row.to_json() for row in self.rows],
        }


@dataclass
class SweepResult:
    steer_layer: int
    read_layer: int
    alphas: list[float]
    prompts: list[str]
    mean_resid_norm: float  # the steered layer's, averaged over the prompts
    gguf_scale: float
    settings: dict
    unsteered: list[Continuation]
    concepts: dict[str, ConceptSweep] = field(default_factory=dict)
    path: Path | None = None
    plot: Path | None = None

    def to_json(self) -> dict:
        return {
            "steer_layer": self.steer_layer,
            "read_layer": self.read_layer,
            "alphas": self.alphas,
            "prompts": self.prompts,
            "mean_resid_norm": self.mean_resid_norm,
            "gguf_scale": self.gguf_scale,
            **self.settings,
            "formulas": FORMULAS,
            "unsteered": [continuation_json(c, None) for c in self.unsteered],
            "concepts": {name: sweep.to_json() for name, sweep in self.concepts.items()},
        }

    def summary(self) -> list[str]:
        head = (
            f"steering at layer {self.steer_layer}, concept read unsteered at layer {self.read_layer} (z), "
            f"{len(self.prompts)} prompts; llama.cpp S for `export --layers {self.steer_layer} --scale {self.gguf_scale:g}`:"
        )
        lines = [head, f"  {'concept':16s} {'alpha':>6s} {'z':>7s} {'lift':>7s} {'rank':>5s} {'rel ppl':>8s} {'score':>6s} {'S':>8s}"]
        for name, sweep in self.concepts.items():
            for row in sweep.rows:
                mark = " <- best" if row is sweep.best else ""
                lines.append(
                    f"  {name:16s} {row.alpha:6g} {fmt(row.concept_z, '+7.2f')} {fmt(row.concept_lift, '+7.2f')} {fmt(row.rank, '5d')} "
                    f"{fmt(row.relative_perplexity, '8.2f')} {fmt(row.steering_score, '6.3f')} {row.control_vector_scaled:8.1f}{mark}"
                )
        for name, sweep in self.concepts.items():
            best = sweep.best
            lines.append(
                f"{name}: best alpha {best.alpha:g}; in llama.cpp: `amygdala-tl export --format gguf-control --concept {name} "
                f"--layers {self.steer_layer} --scale {self.gguf_scale:g}`, then --control-vector-scaled {name}.gguf {best.control_vector_scaled:.2f}"
            )
        return lines


def fmt(value: float | int | None, spec: str) -> str:
    width = int("".join(ch for ch in spec.split(".")[0] if ch.isdigit()) or 0)
    return format(value, spec) if value is not None else "-".rjust(width)


def continuation_json(continuation: Continuation, concept: int | None) -> dict:
    out: dict = {"prompt": continuation.prompt, "text": continuation.text, "token_ids": continuation.ids, "perplexity": continuation.perplexity}
    if concept is not None:
        out["concept_z"] = float(continuation.z[concept]) if continuation.z is not None else None
    return out


def sweep_row(alpha: float, concept: int, steered: list[Continuation], unsteered: list[Continuation], s: float, baseline: float | None) -> SweepRow:
    """The row of one strength: the per-prompt figures averaged as FORMULAS says."""
    pairs = [(c, u) for c, u in zip(steered, unsteered) if c.z is not None]
    texts = [continuation_json(c, concept) for c in steered]
    if not pairs:
        return SweepRow(alpha, None, None, None, None, None, None, None, s, texts)
    z_all = torch.stack([c.z for c, _ in pairs if c.z is not None]).mean(0)
    z = float(z_all[concept])
    rank = int((z_all > z_all[concept]).sum()) + 1
    ratios = [math.log(c.perplexity / u.perplexity) for c, u in pairs if c.perplexity is not None and u.perplexity is not None]
    relative = math.exp(sum(ratios) / len(ratios)) if ratios else None
    lift = z - (baseline if baseline is not None else z)  # alpha 0 (first, no baseline yet) is its own: lift 0
    c_term = concept_term(lift)
    f_term = fluency_term(relative) if relative is not None else None
    score = steering_score(c_term, f_term) if f_term is not None else None
    return SweepRow(alpha, z, lift, rank, relative, c_term, f_term, score, s, texts)


def run_sweep(
    model: LoadedModel,
    vectors: Vectors,
    calibration: Calibration,
    concepts: Sequence[str],
    alphas: Sequence[float],
    prompts: Sequence[str],
    config: SweepConfig,
    log: Callable[[str], None] = lambda _: None,
) -> SweepResult:
    readout, layer = vectors.readout, config.layer
    read_layer = calibration.layers_ranked[0]
    norms = [mean_resid_norm(model, prompt_tokens(model, p), layer) for p in prompts]
    log(
        f"steering at layer {layer}, reading at layer {read_layer} unsteered; {len(prompts)} prompts x {len(alphas)} strengths x {len(concepts)} concepts"
    )
    unsteered = [
        measured(model, readout, calibration, read_layer, i, *write_continuation(model, readout, p, [], config)) for i, p in enumerate(prompts)
    ]
    settings = {"max_new_tokens": config.max_new_tokens, "temperature": config.temperature, "seed": config.seed}
    mean_norm = sum(norms) / len(norms)
    result = SweepResult(layer, read_layer, list(alphas), list(prompts), mean_norm, config.gguf_scale, settings, unsteered)
    for name in concepts:
        index = readout.concepts.index(name)
        vector = concept_vector(readout, name, layer)
        rows: list[SweepRow] = []
        for alpha in alphas:
            if alpha == 0:
                steered = unsteered  # alpha 0 adds nothing: the unsteered model's continuation
            else:
                steered = [
                    measured(
                        model,
                        readout,
                        calibration,
                        read_layer,
                        i,
                        *write_continuation(model, readout, p, [steering_hook(layer, vector, alpha * n)], config),
                    )
                    for i, (p, n) in enumerate(zip(prompts, norms))
                ]
            baseline = rows[0].concept_z if rows else None  # alpha 0 comes first
            rows.append(sweep_row(alpha, index, steered, unsteered, control_vector_scaled(alpha, mean_norm, vector, config.gguf_scale), baseline))
        result.concepts[name] = ConceptSweep(name, rows, float(vector.norm()))
        log(f"  {name}: best alpha {result.concepts[name].best.alpha:g}")
    return result


def plot_sweep(result: SweepResult, path: Path) -> Path:
    """Concept z and relative perplexity against alpha, one line per concept (PNG, written atomically)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, sweep in result.concepts.items():
        alphas = [row.alpha for row in sweep.rows]
        left.plot(alphas, [row.concept_z if row.concept_z is not None else float("nan") for row in sweep.rows], marker="o", label=name)
        right.plot(
            alphas, [row.relative_perplexity if row.relative_perplexity is not None else float("nan") for row in sweep.rows], marker="o", label=name
        )
    left.set(
        xlabel=f"alpha (layer {result.steer_layer} mean residual norms)",
        ylabel=f"concept z at layer {result.read_layer}",
        title="concept in the text",
    )
    right.set(xlabel=f"alpha (layer {result.steer_layer} mean residual norms)", ylabel="perplexity / perplexity at alpha 0", title="fluency cost")
    right.set_yscale("log")
    if len(result.concepts) <= 12:
        left.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic.write_bytes(path, buffer.getvalue())
    return path


def run_sweep_command(
    config: SweepConfig, *, log: Callable[[str], None] = lambda _: None, loader: Callable[..., LoadedModel] = load_model
) -> SweepResult:
    """`steer --sweep`: every argument checked before the model loads; writes steer_sweep.json and the plot."""
    vectors = open_vectors(config.vectors)
    concepts, alphas, prompts, calibration = check_sweep_args(vectors, config)
    loaded = load_model_for(vectors, config.model, config.device, config.trust_remote_code, loader, log)
    result = run_sweep(loaded, vectors, calibration, concepts, alphas, prompts, config, log)
    directory = Path(config.output) if config.output is not None else vectors.directory
    result.path = directory / SWEEP_FILE
    atomic.write_json(result.path, result.to_json())
    result.plot = plot_sweep(result, directory / PLOT_FILE)
    return result
