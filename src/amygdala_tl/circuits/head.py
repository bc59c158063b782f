"""A head is a value: `Head(layer, head)`, written `L3H5` wherever a person reads or types it."""

from __future__ import annotations

from numbers import Integral
from typing import NamedTuple

from ..errors import UserError


class _Head(NamedTuple):
    layer: int
    head: int


class Head(_Head):
    """A block index and a head index within it, both non-negative integers (checked)."""

    __slots__ = ()

    def __new__(cls, layer: int, head: int) -> Head:
        for name, value in (("layer", layer), ("head", head)):
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
                raise UserError(f"Head {name} must be a non-negative integer, got {value!r}")
        return super().__new__(cls, int(layer), int(head))

    def __str__(self) -> str:
        return f"L{self.layer}H{self.head}"

    @classmethod
    def parse(cls, name: str) -> Head:
        text = name.strip().upper()
        try:
            layer, head = text[1:].split("H")
            if not text.startswith("L"):
                raise ValueError
            return cls(int(layer), int(head))
        except ValueError:
            raise UserError(f"head {name!r} is not written like L3H5") from None

    @classmethod
    def parse_list(cls, names: str) -> list[Head]:
        """'L3H5,L4H1' -> [Head(3, 5), Head(4, 1)]."""
        return [cls.parse(name) for name in names.split(",") if name.strip()]


def head_name(layer: int, head: int) -> str:
    return str(Head(layer, head))


def flat_heads(order, n_heads: int, layers: list[int] | None = None) -> list[Head]:
    """Flat [layer * n_heads + head] indices (e.g. an argsort of a [layers, heads] score) as Heads."""
    return [Head(layers[int(i) // n_heads] if layers else int(i) // n_heads, int(i) % n_heads) for i in order]
