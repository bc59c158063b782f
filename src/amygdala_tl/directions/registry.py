"""Every direction method, registered once: the CLI, compare, report and held-out evaluation ask here.

A method is a plain callable `fit(acts, membership, inputs) -> directions` over one layer's pooled
activations [n_texts, d_model] and concept membership [n_concepts, n_texts], returning unit
directions [n_concepts, d_model] sign-aligned with the pooled diff-of-means. `Method` adds what the
pipelines need to know about it, including its own hyperparameters (`Param`): `method.bind(values)`
checks and sets them (`--method logistic_l1 --param c=0.5` on the command line), the fit reads them
as `inputs.params`, and the run record stores them beside the method's name. A Python user can pass
their own callable (see `as_method`) or register a `Method` of their own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from numbers import Real
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..capture.activations import Activations
from ..errors import UserError
from .aggregators import DEFAULT_L1_C, align, logistic_aligned, mean_directions, pca_aligned
from .lda import LdaFolds, lda_directions
from .pooled import diff_of_means, normalize
from .subspace import SubspaceCollector, subspace_directions


@dataclass(frozen=True)
class MethodInputs:
    """What a method may need besides one layer's pooled activations and the membership."""

    partner: Int[Tensor, " n_texts"]  # paired framing -> index of its scenario baseline, -1 otherwise
    bases: list[Tensor] = field(default_factory=list)  # per-story token bases at this layer (needs_tokens methods)
    neutral: Bool[Tensor, " n_texts"] | None = None  # texts that frame no concept (the scenario baselines)
    denoise_k: int = 0  # project out the top-k principal components of the neutral texts before and after fitting
    params: Mapping[str, Any] = field(default_factory=dict)  # the method's parameter values (fit_layer sets them)

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
    """`method.fit` with the method's parameter values in `inputs.params`, and the neutral texts' top principal
    components projected out first when asked (the emotion-vector recipe): out of the activations before fitting
    and out of the directions after."""
    inputs = replace(inputs, params=method.values)
    if inputs.denoise_k == 0 or inputs.neutral is None or not inputs.neutral.any():
        return method.fit(acts, membership, inputs)
    basis = neutral_components(acts, inputs.neutral, inputs.denoise_k)
    project = lambda x: x.double() - (x.double() @ basis) @ basis.T
    directions = project(method.fit(project(acts).float(), membership, inputs))
    return align(directions, diff_of_means(acts, membership)).float()


Fit = Callable[[Float[Tensor, "n_texts d_model"], Bool[Tensor, "n_concepts n_texts"], MethodInputs], Float[Tensor, "n_concepts d_model"]]
# (one layer's acts, membership) -> (held-out mask -> the directions fit learns from the other texts)
FoldRefits = Callable[[Float[Tensor, "n_texts d_model"], Bool[Tensor, "n_concepts n_texts"]], Callable[[Tensor], Tensor]]
Diagnose = Callable[
    [Float[Tensor, "n_texts d_model"], Bool[Tensor, "n_concepts n_texts"], MethodInputs], tuple[Float[Tensor, "n_concepts d_model"], list[dict]]
]


@dataclass(frozen=True)
class Param:
    """One hyperparameter of a method: `--param NAME=VALUE` on the command line, `params={NAME: VALUE}` from Python.

    `kind` is int or float (default: the default's type); a float must be finite; `check` says which values
    are valid and `expected` says so in words. A default of None means "none" is a valid value too."""

    name: str
    default: int | float | None
    help: str = ""
    kind: type | None = None
    check: Callable[[Any], bool] | None = None
    expected: str = ""

    def __post_init__(self) -> None:
        if (self.kind or type(self.default)) not in (int, float):
            raise TypeError(f"Param {self.name!r}: kind must be int or float (a default of None needs kind=)")

    def parse(self, method: str, value: object) -> int | float | None:
        """The checked value (a string from the command line is converted), or a one-line UserError naming the parameter."""
        kind = self.kind or type(self.default)
        expected = (self.expected or ("an integer" if kind is int else "a finite number")) + (" or none" if self.default is None else "")
        problem = UserError(f"--param {self.name} of the {method} method must be {expected}, got {value}")
        if self.default is None and (value is None or (isinstance(value, str) and value.strip().lower() == "none")):
            return None
        if isinstance(value, str):
            try:
                value = kind(value.strip())
            except ValueError:
                raise problem from None
        if isinstance(value, bool) or not isinstance(value, int if kind is int else Real):
            raise problem
        parsed = kind(value)
        if (kind is float and not math.isfinite(parsed)) or (self.check is not None and not self.check(parsed)):
            raise problem
        return parsed


@dataclass(frozen=True)
class Method:
    name: str
    fit: Fit
    summary: str = ""
    needs_tokens: bool = False  # learns from per-token activations (the pooled store cannot serve it)
    exact_loo: bool = False  # held-out by closed-form leave-one-out instead of refits
    diagnose: Diagnose | None = None  # fit plus per-concept diagnostics (the subspace eigenvalues)
    fold_refits: FoldRefits | None = None  # exact refits without held-out sets from statistics computed once (CV)
    params: tuple[Param, ...] = ()  # its hyperparameters, with defaults and checks
    bound: Mapping[str, Any] = field(default_factory=dict, hash=False)  # the values `bind` set; defaults fill the rest

    @property
    def values(self) -> dict[str, Any]:
        """Every parameter's value: bound, else its default (what the fit reads as `inputs.params`)."""
        return {param.name: self.bound.get(param.name, param.default) for param in self.params}

    def bind(self, values: Mapping[str, object]) -> Method:
        """This method with `values` set (strings from the command line are parsed), each checked before any work."""
        declared = {param.name: param for param in self.params}
        for name in values:
            if name not in declared:
                takes = f"it takes {', '.join(declared)}" if declared else "it takes none"
                raise UserError(f"unknown --param {name!r} for the {self.name} method: {takes}")
        return replace(self, bound={**self.bound, **{name: declared[name].parse(self.name, value) for name, value in values.items()}})

    def params_help(self) -> str:
        """` (--param NAME=DEFAULT: what it does; ...)` for the command line's --method help; empty without parameters."""
        described = [f"--param {p.name}={'none' if p.default is None else p.default}: {p.help}" for p in self.params]
        return f" ({'; '.join(described)})" if described else ""

    def collector(self, layers: list[int], n_texts: int) -> SubspaceCollector | None:
        """The capture's token sink for a needs_tokens method: per-story bases of rank `k` (its parameter; None: full rank)."""
        return SubspaceCollector(layers, n_texts, self.values.get("k")) if self.needs_tokens else None


def parse_params(options: list[str]) -> dict[str, object]:
    """`--param NAME=VALUE` options (repeatable) as {NAME: VALUE}; the method parses and checks each value."""
    values: dict[str, object] = {}
    for option in options:
        name, sep, value = option.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--param must be NAME=VALUE, got {option!r}")
        values[name.strip()] = value
    return values


def _subspace_diagnose(acts, membership, inputs: MethodInputs):
    result = subspace_directions(inputs.bases, membership, diff_of_means(acts, membership), inputs.params["eigen_k"])
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
        fold_refits=lambda acts, membership: LdaFolds(acts, membership).without,
    )
)
register(
    Method(
        "subspace",
        lambda acts, membership, inputs: _subspace_diagnose(acts, membership, inputs)[0],
        "top eigenvectors of mean_pos V V^T - mean_neg V V^T over per-story token subspaces",
        needs_tokens=True,
        diagnose=_subspace_diagnose,
        params=(
            Param("k", None, "singular vectors kept per story (none: full rank)", int, lambda k: k >= 1, "an integer of at least 1"),
            Param("eigen_k", 5, "top eigenvectors of M_pos - M_base combined", int, lambda k: k >= 1, "an integer of at least 1"),
        ),
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
        lambda acts, membership, inputs: logistic_aligned(acts, membership, "l1", inputs.params["c"]),
        "class-balanced L1 logistic regression weights (sparse)",
        params=(Param("c", DEFAULT_L1_C, "inverse L1 strength C (smaller = sparser)", float, lambda c: c > 0, "a finite positive number"),),
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
    neutral: Bool[Tensor, " n_texts"] | None = None
    denoise_k: int = 0

    def inputs(self, layer: int) -> MethodInputs:
        bases = list(self.collector.bases[layer]) if self.collector is not None else []
        return MethodInputs(self.partner, bases, self.neutral, self.denoise_k, self.method.values)  # type: ignore[arg-type]


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


@dataclass(frozen=True)
class HeldoutFit:
    """The refit for held-out evaluation: (slot, acts, membership, kept) -> directions, and the method's faster
    exact refits per fold when it has them (and no neutral-component projection changes its input per fold)."""

    context: MethodContext
    layers: list[int]

    def __call__(self, slot: int, acts: Tensor, membership: Tensor, kept: Tensor) -> Tensor:
        return fit_layer(self.context.method, acts, membership, self.context.inputs(self.layers[slot]).subset(kept))

    def fold_refits(self, acts: Tensor, membership: Tensor) -> Callable[[Tensor], Tensor] | None:
        refits = self.context.method.fold_refits
        return refits(acts, membership) if refits is not None and self.context.denoise_k == 0 else None


def heldout_fit(context: MethodContext, layers: list[int]) -> HeldoutFit:
    return HeldoutFit(context, layers)
