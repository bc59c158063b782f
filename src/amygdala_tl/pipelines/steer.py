"""Generation with a concept direction added to the residual stream, and a measurable check of it.

alpha is in units of the layer's mean residual norm on the prompt (BOS excluded, since its norm is
often an outlier): the intervention adds alpha * mean_norm * v to `blocks.<l>.hook_resid_post` at
every position, so alpha 1 is a push as large as a typical residual vector.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from .. import hooks
from ..capture import encode, forward, last_token_resid, make_batches
from ..capture.forward import Intervention
from ..corpus import DEFAULT_CORPUS, load_corpus
from ..errors import UserError
from ..formats.readout import Readout, score
from ..model import LoadedModel, load_model
from .vectors import load_model_for, open_vectors


def prompt_tokens(model: LoadedModel, prompt: str) -> Tensor:
    return torch.tensor(encode(model.tokenizer, [prompt])[0][0])


def mean_resid_norm(model: LoadedModel, tokens: Tensor, layer: int) -> float:
    """Mean residual norm over the prompt's tokens after the first (often a BOS with an outlier norm)."""
    resid = forward(model, tokens[None], read=[hooks.resid_post(layer)]).acts[hooks.resid_post(layer)]
    norms = resid[0].float().norm(dim=-1)
    return float(norms[1:].mean() if len(norms) > 1 else norms.mean())


def steering_hook(layer: int, vector: Float[Tensor, " d_model"], scale: float) -> Intervention:
    def add(resid: Tensor, hook) -> Tensor:  # noqa: ARG001
        return resid + (scale * vector).to(resid.device, resid.dtype)

    return (hooks.resid_post(layer), add)


def pick_token(logits: Float[Tensor, " vocab"], temperature: float, generator: torch.Generator) -> int:
    """The next token: the argmax at temperature 0, else a sample from softmax(logits / temperature)."""
    last = logits.float().cpu()
    return int(torch.multinomial((last / temperature).softmax(-1), 1, generator=generator)) if temperature > 0 else int(last.argmax())


def generate(
    model: LoadedModel, prompt: str, interventions: Sequence[Intervention], max_new_tokens: int = 40, temperature: float = 0.0, seed: int = 0
) -> str:
    """Greedy (temperature 0) or sampled continuation; a full forward per token keeps interventions exact."""
    tokens = prompt_tokens(model, prompt)[None]
    generator = torch.Generator().manual_seed(seed)
    eos = model.tokenizer.eos_token_id
    new: list[int] = []
    for _ in range(max_new_tokens):
        logits = forward(model, tokens, interventions=interventions, logits=True).logits
        assert logits is not None
        token = pick_token(logits[0, -1], temperature, generator)
        if token == eos:
            break
        new.append(token)
        tokens = torch.cat([tokens, torch.tensor([[token]])], dim=1)
    return model.tokenizer.decode(new)


def concept_vector(readout: Readout, concept: str, layer: int) -> Float[Tensor, " d_model"]:
    readout.check_concept(concept)
    readout.check_layers([layer])
    return readout.vectors[layer][readout.concepts.index(concept)].float()


@dataclass(kw_only=True)
class SteerConfig:
    """`steer`'s options and their defaults (the command line builds one by keyword)."""

    concept: str  # 'all' with measure: every concept of the vectors
    layer: int
    prompt: str
    vectors: Path = Path("out")
    alpha: float = 0.2  # in mean residual norms; on the bundled model 0.1-0.4 steer readably (steer --sweep), 4 breaks the text
    max_new_tokens: int = 40
    temperature: float = 0.0
    seed: int = 0
    measure: bool = False
    corpus: Path = DEFAULT_CORPUS  # --measure: its paired baselines are the texts steered
    model: str | None = None
    device: str | None = None
    trust_remote_code: bool = False


MAX_ALPHA = 100.0  # alpha 100 adds a hundred typical residual norms: the text is noise long before
MIN_TEMPERATURE = 1e-3  # below it, logits / temperature overflow fp32 (1e-45 gives inf, then NaN probabilities)


def check_steer_args(readout: Readout, config: SteerConfig) -> None:
    """Everything `steer` can check before the model loads."""
    concept, layer, measure, alpha, temperature = config.concept, config.layer, config.measure, config.alpha, config.temperature
    if concept != "all" or not measure:
        concept_vector(readout, concept, layer)
    else:
        readout.check_layers([layer])
    if measure and not any(l > layer for l in readout.layers):
        raise UserError(f"--measure needs exported layers after {layer} (have {', '.join(map(str, readout.layers))})")
    if not measure and not config.prompt.strip():
        raise UserError("the prompt is empty: steer continues a text (give one, or use --measure)")
    if not math.isfinite(alpha) or abs(alpha) > MAX_ALPHA:
        raise UserError(f"--alpha must be a number between -{MAX_ALPHA:g} and {MAX_ALPHA:g} (residual norms), got {alpha}")
    if not math.isfinite(temperature) or temperature < 0 or 0 < temperature < MIN_TEMPERATURE:
        raise UserError(f"--temperature must be 0 (greedy) or a finite number >= {MIN_TEMPERATURE:g}, got {temperature}")
    if config.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be at least 1, got {config.max_new_tokens}")


@dataclass
class SteerResult:
    prompt: str
    concept: str
    layer: int
    alpha: float
    added_norm: float
    unsteered: str
    steered: str

    def to_json(self) -> dict:
        return asdict(self)


def steer(
    model: LoadedModel,
    readout: Readout,
    concept: str,
    layer: int,
    alpha: float,
    prompt: str,
    max_new_tokens: int = 40,
    temperature: float = 0.0,
    seed: int = 0,
) -> SteerResult:
    vector = concept_vector(readout, concept, layer)
    scale = alpha * mean_resid_norm(model, prompt_tokens(model, prompt), layer)
    return SteerResult(
        prompt,
        concept,
        layer,
        alpha,
        scale,
        generate(model, prompt, [], max_new_tokens, temperature, seed),
        generate(model, prompt, [steering_hook(layer, vector, scale)], max_new_tokens, temperature, seed),
    )


def readout_at_layers(
    model: LoadedModel,
    texts: Sequence[str],
    readout: Readout,
    layers: list[int],
    interventions: Sequence[Intervention],
    batch_size: int = 8,
    max_length: int = 512,
) -> dict[int, Tensor]:
    """Serving-convention scores [n_texts, n_concepts] at `layers`, under optional interventions."""
    token_ids, _ = encode(model.tokenizer, texts, max_length)
    resid = last_token_resid(model, make_batches(token_ids, batch_size, model.tokenizer.pad_token_id), layers, interventions)
    return score(readout, resid, layers)


@dataclass
class ShiftRow:
    own_shift: float
    others_mean_shift: float | None
    rank_of_own: int


@dataclass
class MeasureResult:
    layer: int
    alpha: float
    read_at: list[int]
    n_texts: int
    concepts: dict[str, ShiftRow]

    def to_json(self) -> dict:
        return asdict(self)

    def summary(self) -> list[str]:
        head = f"readout shift at layers {self.read_at} when steering at layer {self.layer} (alpha {self.alpha}), {self.n_texts} baseline texts:"
        return [head] + [
            f"  {name:16s} own {row.own_shift:+8.2f}   others {row.others_mean_shift or 0:+8.2f}   own rank {row.rank_of_own}"
            for name, row in self.concepts.items()
        ]


def measure(model: LoadedModel, readout: Readout, texts: Sequence[str], concepts: Sequence[str], layer: int, alpha: float) -> MeasureResult:
    """Steer toward each concept at `layer` on neutral texts; readout shift of every concept at later layers.

    The shift matrix [steered concept x read concept] is averaged over texts and later layers; a
    working vector raises its own readout (the diagonal) more than the others'.
    """
    later = [l for l in readout.layers if l > layer]
    if not later:
        raise UserError(f"--measure needs exported layers after {layer} (have {', '.join(map(str, readout.layers))})")
    clean = readout_at_layers(model, texts, readout, later, [])
    norms = torch.tensor([mean_resid_norm(model, prompt_tokens(model, t), layer) for t in texts]).mean()
    rows = {}
    for concept in concepts:
        vector = concept_vector(readout, concept, layer)
        steered = readout_at_layers(model, texts, readout, later, [steering_hook(layer, vector, float(alpha * norms))])
        shift = torch.stack([(steered[l] - clean[l]).mean(0) for l in later]).mean(0)
        own = readout.concepts.index(concept)
        others = torch.cat([shift[:own], shift[own + 1 :]])
        rows[concept] = ShiftRow(float(shift[own]), float(others.mean()) if len(others) else None, int((shift > shift[own]).sum()) + 1)
    return MeasureResult(layer, alpha, later, len(texts), rows)


def run_steer_command(
    config: SteerConfig, *, log: Callable[[str], None] = lambda _: None, loader: Callable[..., LoadedModel] = load_model
) -> SteerResult | MeasureResult:
    """`steer`: every argument checked against the vectors (and the corpus for --measure) before the model loads."""
    vectors = open_vectors(config.vectors)
    check_steer_args(vectors.readout, config)
    baselines = [s.text for s in load_corpus(config.corpus).stories if s.is_baseline] if config.measure else []
    if config.measure and not baselines:
        raise UserError(f"--measure needs neutral baseline texts: {config.corpus} has no paired/<scenario>/baseline.txt")
    loaded = load_model_for(vectors, config.model, config.device, config.trust_remote_code, loader, log)
    if config.measure:
        concepts = vectors.readout.concepts if config.concept == "all" else [config.concept]
        return measure(loaded, vectors.readout, baselines, concepts, config.layer, config.alpha)
    return steer(
        loaded, vectors.readout, config.concept, config.layer, config.alpha, config.prompt, config.max_new_tokens, config.temperature, config.seed
    )
