"""Every direction method, registered once: the CLI, compare, report and held-out evaluation ask here.

A method is a plain callable `fit(acts, membership, inputs) -> directions` over one layer's pooled
activations [n_texts, d_model] and concept membership [n_concepts, n_texts], returning unit
directions [n_concepts, d_model] sign-aligned with the pooled diff-of-means. `Method` adds what the
pipelines need to know about it. A Python user can pass their own callable (see `as_method`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..capture.activations import Activations
from ..errors import UserError
from .aggregators import DEFAULT_L1_C, align, logistic_aligned, mean_directions, pca_aligned
from .lda import lda_directions
from .pooled import diff_of_means, normalize
from .subspace import SubspaceCollector, subspace_directions


@dataclass(frozen=True)
class MethodInputs:
    """What a method may need besides one layer's pooled activations and the membership."""

    partner: Int[Tensor, " n_texts"]  # paired framing -> index of its scenario baseline, -1 otherwise
    bases: list[Tensor] = field(default_factory=list)  # per-story token bases at this layer (needs_tokens methods)
    eigen_k: int = 5
    l1_c: float = DEFAULT_L1_C
    neutral: Bool[Tensor, " n_texts"] | None = None  # texts that frame no concept (the scenario baselines)
    denoise_k: int = 0  # project out the top-k principal components of the neutral texts before and after fitting

    def subset(self, kept: Int[Tensor, " n_kept"]) -> MethodInputs:
        """The inputs of the kept texts only (held-out refits), partner indices renumbered."""
        remap = torch.full((len(self.partner),), -1, dtype=torch.long)
        remap[kept] = torch.arange(len(kept))
        partner = torch.where(self.partner[kept] >= 0, remap[self.partner[kept].clamp_min(0)], torch.tensor(-1))
        bases = [self.bases[i] for i in kept.tolist()] if self.bases else []
        return replace(self, partner=partner, bases=bases, neutral=self.neutral[kept] if self.neutral is not None else None)


def neutral_components(acts: Float[Tensor, "n_texts d_model"], neutral: Bool[Tensor, " n_texts"], k: int) -> Float[Tensor, "d_model k"]:
    """Top-k principal directions of the neutral texts (centred): variance no concept owns (style, topic, length)."""
    x = acts[neutral].double()
    _, singular, vh = torch.linalg.svd(x - x.mean(0), full_matrices=False)
    real = int((singular > singular.max().clamp_min(1e-300) * 1e-6).sum())  # n neutral texts span at most n - 1 directions
    return vh[: min(k, real)].T


def fit_layer(
    method: Method, acts: Float[Tensor, "n_texts d_model"], membership: Bool[Tensor, "n_concepts n_texts"], inputs: MethodInputs
) -> Float[Tensor, "n_concepts d_model"]:
    """`method.fit`, with the neutral texts' top principal components projected out first when asked
    (the emotion-vector recipe): out of the activations before fitting and out of the directions after."""
    if inputs.denoise_k == 0 or inputs.neutral is None or not inputs.neutral.any():
        return method.fit(acts, membership, inputs)
    basis = neutral_components(acts, inputs.neutral, inputs.denoise_k)
    project = lambda x: x.double() - (x.double() @ basis) @ basis.T
    directions = project(method.fit(project(acts).float(), membership, inputs))
    return align(directions, diff_of_means(acts, membership)).float()


Fit = Callable[[Float[Tensor, "n_texts d_model"], Bool[Tensor, "n_concepts n_texts"], MethodInputs], Float[Tensor, "n_concepts d_model"]]
Diagnose = Callable[
    [Float[Tensor, "n_texts d_model"], Bool[Tensor, "n_concepts n_texts"], MethodInputs], tuple[Float[Tensor, "n_concepts d_model"], list[dict]]
]


@dataclass(frozen=True)
class Method:
    name: str
    fit: Fit
    summary: str = ""
    needs_tokens: bool = False  # learns from per-token activations (the pooled store cannot serve it)
    exact_loo: bool = False  # held-out by closed-form leave-one-out instead of refits
    diagnose: Diagnose | None = None  # fit plus per-concept diagnostics (the subspace eigenvalues)


def _subspace_diagnose(acts, membership, inputs: MethodInputs):
    result = subspace_directions(inputs.bases, membership, diff_of_means(acts, membership), inputs.eigen_k)
    diagnostics = [
        {
            "eigvals": [round(float(v), 6) for v in result.eigvals[c]],
            "eigengap": float(result.eigengap[c]) if math.isfinite(float(result.eigengap[c])) else None,
        }
        for c in range(membership.shape[0])
    ]
    return result.directions, diagnostics


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if not isinstance(method, Method):
        raise UserError(f"register takes a Method(name, fit, summary), got {method!r}; a plain fit callable goes to extract(method=...)")
    METHODS[method.name] = method
    return method


register(
    Method(
        "pooled",
        lambda acts, membership, inputs: normalize(diff_of_means(acts, membership)).float(),
        "normalize(mean(P) - mean(N)), fp64",
        exact_loo=True,
    )
)
register(
    Method(
        "lda",
        lambda acts, membership, inputs: lda_directions(acts, membership),
        "whitened diff-of-means: Sigma^-1 (mean(P) - mean(N)), Sigma the Ledoit-Wolf-shrunk within-class covariance",
    )
)
register(
    Method(
        "subspace",
        lambda acts, membership, inputs: _subspace_diagnose(acts, membership, inputs)[0],
        "top eigenvectors of mean_pos V V^T - mean_neg V V^T over per-story token subspaces",
        needs_tokens=True,
        diagnose=_subspace_diagnose,
    )
)
register(Method("mean", lambda acts, membership, inputs: mean_directions(acts, membership), "steering-vectors' mean aggregator"))
register(
    Method(
        "pca",
        lambda acts, membership, inputs: pca_aligned(acts, membership, inputs.partner),
        "first principal component of the deltas (framing - baseline, story - mean(N))",
    )
)
register(
    Method(
        "logistic",
        lambda acts, membership, inputs: logistic_aligned(acts, membership, "l2"),
        "class-balanced L2 logistic regression weights (sklearn)",
    )
)
register(
    Method(
        "logistic_l1",
        lambda acts, membership, inputs: logistic_aligned(acts, membership, "l1", inputs.l1_c),
        "class-balanced L1 logistic regression weights (sparse; --l1-c)",
    )
)


def get_method(method: str | Method | Fit) -> Method:
    """A registered name, a Method, or a user's plain fit callable."""
    if isinstance(method, Method):
        return method
    if callable(method):
        return as_method(method)
    if method not in METHODS:
        raise UserError(f"unknown --method {method!r}: choose one of {', '.join(METHODS)}")
    return METHODS[method]


def as_method(fit: Fit, name: str | None = None) -> Method:
    return Method(name or str(getattr(fit, "__name__", "custom")), fit, "a user-supplied callable")


@dataclass
class MethodContext:
    """A method plus what it needs at every layer (per-story bases come from the capture's collector)."""

    method: Method
    partner: Int[Tensor, " n_texts"]
    collector: SubspaceCollector | None = None
    eigen_k: int = 5
    l1_c: float = DEFAULT_L1_C
    neutral: Bool[Tensor, " n_texts"] | None = None
    denoise_k: int = 0

    def inputs(self, layer: int) -> MethodInputs:
        bases = list(self.collector.bases[layer]) if self.collector is not None else []
        return MethodInputs(self.partner, bases, self.eigen_k, self.l1_c, self.neutral, self.denoise_k)  # type: ignore[arg-type]


def learn(
    context: MethodContext, acts: Activations, membership: Bool[Tensor, "n_concepts n_texts"]
) -> tuple[Float[Tensor, "n_target_layers n_concepts d_model"], list[dict] | None]:
    """Directions at every captured layer, and per concept {layer: diagnostics} when the method has them."""
    method, directions = context.method, []
    diagnostics: list[dict] | None = [{} for _ in range(membership.shape[0])] if method.diagnose else None
    for slot, layer in enumerate(acts.layers):
        if method.diagnose is not None and diagnostics is not None:
            layer_directions, per_concept = method.diagnose(acts.resid[slot], membership, context.inputs(layer))
            for c, entry in enumerate(per_concept):
                diagnostics[c][str(layer)] = entry
        else:
            layer_directions = fit_layer(method, acts.resid[slot], membership, context.inputs(layer))
        directions.append(layer_directions.float())
    return torch.stack(directions), diagnostics


def heldout_fit(context: MethodContext, layers: list[int]):
    """The refit function for held-out evaluation: (slot, acts, membership, kept) -> directions."""

    def fit(slot: int, acts: Tensor, membership: Tensor, kept: Tensor) -> Tensor:
        return fit_layer(context.method, acts, membership, context.inputs(layers[slot]).subset(kept))

    return fit
