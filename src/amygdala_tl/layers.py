"""--layers: block indices parsed and checked against the model's depth, the default layers, and how a layer is named."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

from .errors import UserError


def parse_layers(spec: str | Sequence[int] | None, n_layers: int | None) -> list[int]:
    """`--layers` ('12,14,-3', or from Python a list of ints) as a sorted list of HF block indices;
    negatives count from the model's end; None: every block (extract searches them all in one pass).

    `n_layers` None (the model's depth is unknown) accepts non-negative indices only."""
    if spec is not None and not isinstance(spec, str):
        if not is_index_list(spec):
            raise UserError(f"layers must be a list of block indices or a string such as '12,14', got {spec!r}")
        spec = ",".join(str(int(i)) for i in spec)
    if spec is None:
        if n_layers is None:
            raise ValueError("default layers need the model's layer count")
        return default_layers(n_layers)
    if not spec.strip():
        raise UserError("--layers is empty: give block indices such as 12,14,-3, or leave the option out for the defaults")
    layers: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        try:
            index = int(part)
        except ValueError:
            raise UserError(f"--layers: {part!r} is not an integer") from None
        if n_layers is None:
            if index < 0:
                raise UserError(f"--layers: {index} counts from the end, but the model's layer count is unknown here")
            layers.add(index)
            continue
        resolved = index + n_layers if index < 0 else index
        if not 0 <= resolved < n_layers:
            raise UserError(f"--layers: {index} is out of range for a model with {n_layers} layers")
        layers.add(resolved)
    return sorted(layers)


def is_index_list(value: object) -> bool:
    """A list or tuple of integers (layers from Python)."""
    return isinstance(value, (list, tuple)) and all(isinstance(i, Integral) and not isinstance(i, bool) for i in value)


def default_layers(n_layers: int) -> list[int]:
    """Every block: the forward pass runs to the deepest one anyway, and a pooled residual per block costs little."""
    return list(range(n_layers))


def mid_depth_layers(n_layers: int, depths: tuple[float, ...] = (0.4, 0.5, 0.6, 0.7, 0.8)) -> list[int]:
    """The five 40-80% depth layers (the default before every block was searched; benchmarks compare against it)."""
    return sorted({round(depth * (n_layers - 1)) for depth in depths})


def relative_depth(layer: int, n_layers: int) -> float:
    return layer / max(n_layers - 1, 1)


def describe_layer(layer: int, n_layers: int) -> str:
    """`layer 15 (52%)`: the index with its relative depth, as printed everywhere."""
    return f"layer {layer} ({relative_depth(layer, n_layers):.0%})"
