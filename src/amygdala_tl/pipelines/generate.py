"""`generate --readout`: the model writes, and each new token's readout comes back as a server returns it.

One prefill pass over the prompt, then one cached forward step per new token (HF KV cache): the
readout of a step is read from that same step's residual at every exported layer (`<h_t, v_c>`, fp16
rows, fp32 math: formats.readout.served_scores), as the serving side computes it at decode time. The
prefill's positions are served too, so the declared reading (capture.pooling.running_reading) runs
over the prompt's tokens and the new ones. `--steer CONCEPT:ALPHA` adds alpha * (the layer's mean
residual norm on the prompt) * v at every position, prompt included (steer.steering_hook), so the
readout shown is the steered model's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from .. import hooks
from ..capture import forward, running_reading
from ..capture.forward import Intervention
from ..errors import UserError
from ..formats.readout import Readout, served_scores
from ..model import LoadedModel, load_model
from ..quality.calibration import read_calibration
from ..quality.trace_html import write_trace_html
from ..tracing import Trace, decoded_tokens
from .steer import MAX_ALPHA, MIN_TEMPERATURE, concept_vector, mean_resid_norm, pick_token, prompt_tokens, steering_hook
from .vectors import Vectors, load_model_for, open_vectors

STEER_FORMAT = re.compile(r"^(?P<concept>[^:@]+):(?P<alpha>[^:@]+)(?:@(?P<layer>-?[0-9]+))?$")


@dataclass(kw_only=True)
class GenerateConfig:
    """`generate`'s options and their defaults (the command line builds one by keyword)."""

    prompt: str
    vectors: Path = Path("out")
    readout: bool = False  # print each new token's readout (the result always carries it)
    layer: int | None = None  # the layer shown, and where --steer adds its vector; None: the middle exported layer
    steer: list[str] = field(default_factory=list)  # CONCEPT:ALPHA or CONCEPT:ALPHA@LAYER
    max_new_tokens: int = 40
    temperature: float = 0.0
    seed: int = 0
    top: int = 3
    html: Path | None = None  # also write the trace page (as `trace --html`) of prompt + completion
    model: str | None = None
    device: str | None = None
    trust_remote_code: bool = False


@dataclass(frozen=True)
class Steering:
    concept: str
    alpha: float  # in units of the layer's mean residual norm on the prompt (BOS excluded)
    layer: int


def shown_layer(readout: Readout, layer: int | None) -> int:
    """--layer, checked; by default the middle exported layer."""
    if layer is None:
        return readout.layers[len(readout.layers) // 2]
    if layer not in readout.layers:
        raise UserError(f"layer {layer} is not in the vectors (layers: {', '.join(map(str, readout.layers))})")
    return layer


def parse_steering(spec: str, readout: Readout, default_layer: int) -> Steering:
    """--steer CONCEPT:ALPHA (at --layer) or CONCEPT:ALPHA@LAYER, every part checked against the vectors."""
    match = STEER_FORMAT.match(spec.strip())
    if not match:
        raise UserError(f"--steer {spec!r}: expected CONCEPT:ALPHA or CONCEPT:ALPHA@LAYER, e.g. afraid:4 or afraid:4@14")
    try:
        alpha = float(match["alpha"])
    except ValueError:
        raise UserError(f"--steer {spec!r}: alpha {match['alpha']!r} is not a number") from None
    if not math.isfinite(alpha) or abs(alpha) > MAX_ALPHA:
        raise UserError(f"--steer {spec!r}: alpha must be a number between -{MAX_ALPHA:g} and {MAX_ALPHA:g} (residual norms), got {alpha}")
    layer = int(match["layer"]) if match["layer"] is not None else default_layer
    concept_vector(readout, match["concept"], layer)  # unknown concept, layer not exported
    return Steering(match["concept"], alpha, layer)


def check_generate_args(readout: Readout, config: GenerateConfig) -> tuple[int, list[Steering]]:
    """Everything `generate` can check before the model loads: the layer shown and the steering."""
    if not config.prompt.strip():
        raise UserError("the prompt is empty: generate continues a text")
    if config.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be at least 1, got {config.max_new_tokens}")
    temperature = config.temperature
    if not math.isfinite(temperature) or temperature < 0 or 0 < temperature < MIN_TEMPERATURE:
        raise UserError(f"--temperature must be 0 (greedy) or a finite number >= {MIN_TEMPERATURE:g}, got {temperature}")
    if config.top < 1:
        raise UserError(f"--top must be at least 1, got {config.top}")
    layer = shown_layer(readout, config.layer)
    return layer, [parse_steering(spec, readout, layer) for spec in config.steer]


@dataclass
class Step:
    """One new token as it is produced: its running reading at the layer shown, top concepts first."""

    index: int  # position in the text (prompt tokens included)
    token: str
    top: list[tuple[str, float]]


@dataclass
class Generation:
    prompt: str
    completion: str
    n_prompt_tokens: int
    layer: int  # the layer shown
    steering: list[dict]  # concept, alpha, layer, added_norm
    trace: Trace

    def to_json(self) -> dict:
        return {
            "prompt": self.prompt,
            "completion": self.completion,
            "n_prompt_tokens": self.n_prompt_tokens,
            "layer": self.layer,
            "steering": self.steering,
            "trace": self.trace.to_json(),
        }


def top_concepts(values: Float[Tensor, " n_concepts"], concepts: Sequence[str], k: int) -> list[tuple[str, float]]:
    order = torch.argsort(values, descending=True)[:k]
    return [(concepts[int(i)], float(values[i])) for i in order]


def generate_with_readout(
    model: LoadedModel,
    readout: Readout,
    prompt: str,
    *,
    pooling: str,
    interventions: Sequence[Intervention] = (),
    max_new_tokens: int = 40,
    temperature: float = 0.0,
    seed: int = 0,
    readout_layers: Sequence[int] | None = None,
    on_step: Callable[[int, int, dict[int, Tensor]], None] | None = None,
) -> tuple[list[int], int, dict[int, Tensor]]:
    """KV-cached generation with the served readout of every position, the way a server returns it.

    Returns (token ids, prompt included; the prompt's length; {layer: raw served scores [n_tokens,
    n_concepts]}). `on_step(position, token id, {layer: raw scores so far})` runs after each new token's
    step. `readout_layers=[]` generates the same way without reading (the benchmark's baseline)."""
    layers = list(readout.layers if readout_layers is None else readout_layers)
    read = [hooks.resid_post(layer) for layer in layers]
    rows = {layer: readout.vectors[layer].to(model.bridge.cfg.device) for layer in layers}
    ids = prompt_tokens(model, prompt).tolist()
    n_prompt = len(ids)
    generator = torch.Generator().manual_seed(seed)
    eos = model.tokenizer.eos_token_id
    raw: dict[int, list[Tensor]] = {layer: [] for layer in layers}

    def served(step_acts: dict[str, Tensor]) -> None:
        for layer, name in zip(layers, read):
            raw[layer].append(served_scores(step_acts[name][0], rows[layer]).cpu())

    step = forward(model, torch.tensor([ids]), read=read, interventions=interventions, logits=True, use_cache=True)
    served(step.acts)
    for _ in range(max_new_tokens):
        assert step.logits is not None
        token = pick_token(step.logits[0, -1], temperature, generator)
        if token == eos:
            break
        ids.append(token)
        step = forward(model, torch.tensor([[token]]), read=read, interventions=interventions, logits=True, cache=step.cache)
        served(step.acts)
        if on_step is not None:
            on_step(len(ids) - 1, token, {layer: torch.cat(raw[layer]) for layer in layers})
    return ids, n_prompt, {layer: torch.cat(raw[layer]) for layer in layers}


def run_generate(
    model: LoadedModel,
    vectors: Vectors,
    prompt: str,
    layer: int,
    steering: Sequence[Steering] = (),
    *,
    max_new_tokens: int = 40,
    temperature: float = 0.0,
    seed: int = 0,
    top: int = 3,
    on_step: Callable[[Step], None] | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> Generation:
    """Generate with the readout (and steering), calling `on_step` as each token comes."""
    readout, pooling = vectors.readout, vectors.pooling
    tokens = prompt_tokens(model, prompt)
    interventions, applied = [], []
    for steer in steering:
        scale = steer.alpha * mean_resid_norm(model, tokens, steer.layer)
        interventions.append(steering_hook(steer.layer, concept_vector(readout, steer.concept, steer.layer), scale))
        applied.append({"concept": steer.concept, "alpha": steer.alpha, "layer": steer.layer, "added_norm": scale})
        log(f"steering toward {steer.concept} at layer {steer.layer}, alpha {steer.alpha} (added norm {scale:.1f})")

    calibration = read_calibration(vectors.directory, vectors.record, readout)

    def report(position: int, token: int, raw: dict[int, Tensor]) -> None:
        if on_step is not None:
            running = running_reading(raw[layer], pooling)[-1]
            shown = calibration.z(layer, running) if calibration is not None else running
            on_step(Step(position, model.tokenizer.decode([token]), top_concepts(shown, readout.concepts, top)))

    ids, n_prompt, raw = generate_with_readout(
        model,
        readout,
        prompt,
        pooling=pooling,
        interventions=interventions,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        on_step=report,
    )
    log(f"readout at layer {layer}: the declared reading ({pooling}) after each token, " + ("calibrated z" if calibration else "raw served scores"))
    pieces = decoded_tokens(model.tokenizer, list(ids))  # as `trace` shows a text: concatenated, they are the text
    text = "".join(pieces)
    completion = text[len(prompt) :] if text.startswith(prompt) else "".join(pieces[n_prompt:])
    running = {l: running_reading(values, pooling) for l, values in raw.items()}
    trace = Trace(
        text=prompt + completion,
        tokens=pieces,
        layers=list(readout.layers),
        concepts=list(readout.concepts),
        raw=raw,
        running=running,
        z={l: calibration.z(l, values) for l, values in running.items()} if calibration is not None else None,
        pooling=pooling,
    )
    return Generation(prompt, completion, n_prompt, layer, applied, trace)


def run_generate_command(
    config: GenerateConfig,
    *,
    log: Callable[[str], None] = lambda _: None,
    on_step: Callable[[Step], None] | None = None,
    loader: Callable[..., LoadedModel] = load_model,
) -> Generation:
    """`generate`: every argument checked against the vectors before the model loads."""
    vectors = open_vectors(config.vectors)
    vectors.pooling  # noqa: B018 - a bad declared reading is refused before the load
    layer, steering = check_generate_args(vectors.readout, config)
    loaded = load_model_for(vectors, config.model, config.device, config.trust_remote_code, loader, log)
    generation = run_generate(
        loaded,
        vectors,
        config.prompt,
        layer,
        steering,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        seed=config.seed,
        top=config.top,
        on_step=on_step,
        log=log,
    )
    if config.html is not None:
        log(f"wrote {write_trace_html(generation.trace, config.html, layer)}")
    return generation
