"""The serving export: readout.safetensors + readout.json, as a vLLM ReadoutManager loads them.

Layer index = HF decoder-block index = `blocks.<idx>.hook_resid_post`. Rows are unit-norm fp16
directions, one per concept in manifest order. Provenance goes in the safetensors metadata; the
manifest keeps exactly its four keys because the loader on the serving side is not ours.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import Tensor

from .. import atomic
from ..corpus.concepts import SAFE_NAME
from ..errors import UserError

VECTORS_FILE = "readout.safetensors"
MANIFEST_FILE = "readout.json"
MANIFEST_KEYS = ("concepts", "layers", "hidden_size", "dtype")
UNIT_NORM_TOLERANCE = 2e-3  # fp16 rounding of a unit vector moves its norm by ~1e-4 at d=5120


def tensor_key(layer: int) -> str:
    return f"layer_{layer}.vectors"


@dataclass
class Readout:
    concepts: list[str]
    layers: list[int]
    vectors: dict[int, Float[Tensor, "n_concepts hidden_size"]]  # fp16, unit rows
    hidden_size: int
    metadata: dict[str, str] = field(default_factory=dict)

    def manifest(self) -> dict:
        return {"concepts": self.concepts, "layers": self.layers, "hidden_size": self.hidden_size, "dtype": "float16"}

    def check_concept(self, concept: str) -> None:
        if concept not in self.concepts:
            raise UserError(f"unknown concept {concept!r}; the vectors have: {', '.join(self.concepts)}")

    def check_layers(self, layers: list[int]) -> None:
        if missing := [layer for layer in layers if layer not in self.layers]:
            raise UserError(f"layer {missing[0]} is not in the vectors (layers: {', '.join(map(str, self.layers))})")

    def stacked(self) -> Float[Tensor, "n_layers n_concepts hidden_size"]:
        """Every layer's rows as served (fp16 values) in one fp32 tensor: what the quality metrics are computed on."""
        return torch.stack([self.vectors[layer].float() for layer in self.layers])


def build_readout(
    concepts: list[str],
    layers: list[int],
    directions: Float[Tensor, "n_target_layers n_concepts hidden_size"],
    metadata: dict[str, str] | None = None,
) -> Readout:
    """Normalize in fp32, then cast to fp16, as the format requires."""
    if directions.shape[:2] != (len(layers), len(concepts)):
        raise ValueError(f"directions shape {tuple(directions.shape)} does not match {len(layers)} layers x {len(concepts)} concepts")
    unit = directions.float() / directions.float().norm(dim=-1, keepdim=True).clamp_min(1e-12)
    vectors = {layer: unit[i].to(torch.float16).contiguous() for i, layer in enumerate(layers)}
    return Readout(list(concepts), list(layers), vectors, directions.shape[-1], dict(metadata or {}))


def _tensors(readout: Readout) -> dict[str, Tensor]:
    return {tensor_key(layer): readout.vectors[layer] for layer in readout.layers}


def readout_payloads(readout: Readout) -> dict[str, bytes]:
    """{file name: bytes} of the two serving files; the safetensors metadata repeats the concept order,
    so a manifest edited afterwards (two names swapped) is refused on load."""
    metadata = {key: str(value) for key, value in readout.metadata.items()} | {"concepts": json.dumps(readout.concepts)}
    return {VECTORS_FILE: save_safetensors_bytes(_tensors(readout), metadata=metadata), MANIFEST_FILE: atomic.dumps_json(readout.manifest()).encode()}


def readout_dir(path: str | Path) -> Path:
    """The directory of an export named by itself or by either file's path; any other path is refused."""
    path = Path(path)
    if path.is_dir():
        return path
    if not path.exists():
        raise UserError(f"no such readout directory: {path}")
    if path.name not in (VECTORS_FILE, MANIFEST_FILE):
        raise UserError(f"{path} is neither a readout directory nor its {VECTORS_FILE} or {MANIFEST_FILE}")
    return path.parent


def load_readout(path: str | Path) -> Readout:
    """Load and validate an export (a directory holding both files, or either file's path)."""
    if not isinstance(path, (str, os.PathLike)):
        raise UserError(f"load_readout takes the path of a directory or file, got {path!r}")
    directory = readout_dir(path)
    vectors_path, manifest_path = directory / VECTORS_FILE, directory / MANIFEST_FILE
    for required in (manifest_path, vectors_path):
        if not required.is_file():
            raise UserError(f"readout file not found: {required}")
    manifest = _read_manifest(manifest_path)
    try:
        raw = vectors_path.read_bytes()
        tensors = load_safetensors_bytes(raw)
        metadata = _safetensors_metadata(raw)
    except (SafetensorError, ValueError) as error:
        raise UserError(f"not a readable safetensors file: {vectors_path} ({error})") from None

    if "concepts" in metadata and _json_or_none(metadata["concepts"]) != manifest["concepts"]:
        raise UserError(f"{manifest_path}: its concepts disagree with the ones {vectors_path} was written for (an edited manifest?)")
    expected = {tensor_key(layer) for layer in manifest["layers"]}
    if set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise UserError(f"{vectors_path}: tensor keys disagree with {manifest_path} (missing {missing}, unexpected {extra})")
    shape = (len(manifest["concepts"]), manifest["hidden_size"])
    for key, tensor in tensors.items():
        if tensor.dtype != torch.float16:
            raise UserError(f"{vectors_path}: {key} is {tensor.dtype}, expected float16")
        if tuple(tensor.shape) != shape:
            raise UserError(f"{vectors_path}: {key} has shape {tuple(tensor.shape)}, expected {shape} from {manifest_path}")
        if not torch.isfinite(tensor).all():
            raise UserError(f"{vectors_path}: {key} holds NaN or infinite values")
        norms = tensor.float().norm(dim=-1)
        if (norms - 1).abs().max() > UNIT_NORM_TOLERANCE:
            raise UserError(f"{vectors_path}: {key} rows are not unit norm (norms {norms.min():.4f}..{norms.max():.4f})")
    vectors = {layer: tensors[tensor_key(layer)] for layer in manifest["layers"]}
    return Readout(manifest["concepts"], manifest["layers"], vectors, manifest["hidden_size"], metadata)


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"not valid JSON: {path} ({error})") from None
    if not isinstance(manifest, dict) or set(manifest) != set(MANIFEST_KEYS):
        keys = sorted(manifest) if isinstance(manifest, dict) else type(manifest).__name__
        raise UserError(f"{path}: expected exactly the keys {list(MANIFEST_KEYS)}, found {keys}")
    concepts, layers = manifest["concepts"], manifest["layers"]
    if not (isinstance(concepts, list) and concepts and all(isinstance(c, str) for c in concepts)) or len(set(concepts)) != len(concepts):
        raise UserError(f"{path}: 'concepts' must be a non-empty list of distinct names")
    if bad := [c for c in concepts if not SAFE_NAME.match(c)]:
        raise UserError(f"{path}: concept name {bad[0]!r} is not a snake_case name (lowercase letters, digits, _)")
    if not (isinstance(layers, list) and layers and all(isinstance(l, int) and l >= 0 for l in layers)) or len(set(layers)) != len(layers):
        raise UserError(f"{path}: 'layers' must be a non-empty list of distinct non-negative integers")
    if not isinstance(manifest["hidden_size"], int) or manifest["hidden_size"] <= 0:
        raise UserError(f"{path}: 'hidden_size' must be a positive integer")
    if manifest["dtype"] != "float16":
        raise UserError(f"{path}: dtype {manifest['dtype']!r} is not supported, expected 'float16'")
    return manifest


def _json_or_none(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _safetensors_metadata(raw: bytes) -> dict[str, str]:
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    return dict(header.get("__metadata__", {}))


def score(
    readout: Readout, hidden: dict[int, Float[Tensor, "n_texts hidden_size"]], layers: list[int] | None = None
) -> dict[int, Float[Tensor, "n_texts n_concepts"]]:
    """Raw dot products <h, v> per layer, exactly as the serving side reads them (fp16 rows, fp32 math).

    The one definition of the served score: `score`, `evaluate`, `steer --measure` and the held-out
    evaluation all read through it (or `served_scores` for one layer)."""
    scores = {}
    for layer in readout.layers if layers is None else layers:
        h = hidden[layer]
        if h.shape[-1] != readout.hidden_size:
            raise UserError(f"hidden size {h.shape[-1]} does not match the readout's {readout.hidden_size}")
        scores[layer] = served_scores(h, readout.vectors[layer])
    return scores


def served_scores(hidden: Float[Tensor, "n_texts d_model"], vectors: Float[Tensor, "n_concepts d_model"]) -> Float[Tensor, "n_texts n_concepts"]:
    """<h, v> with the rows as served: fp16 values, computed in fp32 on the hidden states' device."""
    return hidden.float() @ vectors.to(torch.float16).to(hidden.device).float().T


def directions_payload(readout: Readout) -> bytes:
    """Every target layer's fp16 directions (the readout may export fewer), for `report`."""
    metadata = {"concepts": json.dumps(readout.concepts), "layers": json.dumps(readout.layers), **readout.metadata}
    return save_safetensors_bytes(_tensors(readout), metadata=metadata)


def load_directions(path: Path) -> Readout:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"directions file not found: {path} (written by `amygdala-tl extract`)")
    try:
        raw = path.read_bytes()
        metadata = _safetensors_metadata(raw)
        tensors = load_safetensors_bytes(raw)
        layers = json.loads(metadata["layers"])
        vectors = {layer: tensors[tensor_key(layer)] for layer in layers}
        return Readout(json.loads(metadata["concepts"]), layers, vectors, next(iter(vectors.values())).shape[-1], metadata)
    except (SafetensorError, ValueError, KeyError, StopIteration) as error:
        raise UserError(f"unreadable directions file {path} ({error!r}): re-run `amygdala-tl extract`") from None
