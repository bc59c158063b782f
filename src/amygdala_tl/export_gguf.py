"""llama.cpp / repeng control vectors: one GGUF per concept.

Convention: tensor `direction.<i>` with i = HF block index + 1 = the HF `hidden_states` index the
vector was read from (block idx's output is hidden_states[idx + 1]); repeng names its exports this
way and llama.cpp adds `direction.<i>` to the output of its layer i (it never steers layer 0).
Vectors are unit-norm fp32 times `scale` (llama.cpp's --control-vector-scaled multiplies further).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import UserError
from .readout import Readout

ARCH = "controlvector"


def gguf_layer_index(block: int) -> int:
    return block + 1


def write_control_vector(readout: Readout, concept: str, path: Path, model_hint: str, layers: list[int] | None = None, scale: float = 1.0) -> Path:
    from gguf import GGUFWriter

    if concept not in readout.concepts:
        raise UserError(f"unknown concept {concept!r}; the vectors have: {', '.join(readout.concepts)}")
    layers = readout.layers if not layers else layers
    if missing := [layer for layer in layers if layer not in readout.layers]:
        raise UserError(f"layer {missing[0]} is not in the vectors (layers: {', '.join(map(str, readout.layers))})")
    row = readout.concepts.index(concept)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # GGUFWriter writes to a path of its own; the rename makes the result atomic
        writer = GGUFWriter(str(tmp), ARCH)
        writer.add_string(f"{ARCH}.model_hint", model_hint)
        writer.add_uint32(f"{ARCH}.layer_count", len(layers))
        for layer in layers:
            vector = readout.vectors[layer][row].float().numpy().astype(np.float32)
            writer.add_tensor(f"direction.{gguf_layer_index(layer)}", vector / np.linalg.norm(vector) * scale)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_control_vector(path: Path) -> tuple[str, dict[int, np.ndarray]]:
    """(model hint, {HF block index: vector}) from a control-vector GGUF."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    arch = bytes(reader.get_field("general.architecture").parts[-1]).decode()
    if arch != ARCH:
        raise UserError(f"{path} is a {arch!r} GGUF, not a control vector")
    hint = bytes(reader.get_field(f"{ARCH}.model_hint").parts[-1]).decode()
    vectors = {int(t.name.split(".")[1]) - 1: np.asarray(t.data, dtype=np.float32).reshape(-1).copy()
               for t in reader.tensors if t.name.startswith("direction.")}
    return hint, vectors
