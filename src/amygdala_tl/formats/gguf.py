"""llama.cpp / repeng control vectors: one GGUF per concept.

Convention (llama.cpp, checked against its source): `common/common.cpp`
`common_control_vector_load_one` reads tensor `direction.<il>` into slot `il` and refuses il = 0;
`src/llama-adapter.cpp` `llama_adapter_cvec::apply_to(ctx, cur, il)` adds slot `il` to the output of
0-based block `il` (each model's graph calls `build_cvec(cur, il)` after block il), for
il = 1..n_layer-1. repeng 0.4 agrees: `ControlVector.directions[k]` is added to `model.layers[k]`'s
output, and its GGUF export writes key k as `direction.<k>`. So a vector read at HF block b (our
`blocks.<b>.hook_resid_post`) is written as `direction.<b>`, and block 0 cannot be steered.

Scale: the stored vectors are unit-norm times `scale`; llama.cpp's `--control-vector-scaled FILE S`
multiplies by S. Residual norms are in the hundreds on real models (130 to 390 at the bundled
model's middle layers), so S = 1 does nothing visible; `SCALE_HINT` gives the measured range.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import UserError
from .readout import Readout

ARCH = "controlvector"
SCALE_HINT = (
    "the vectors are unit-norm: on the bundled SmolLM2-135M, llama.cpp's --control-vector-scaled "
    "S changed the text visibly at S = 10 to 30 and broke it above 60 (residual norms there are 130 to 390)"
)


def gguf_layer_index(block: int) -> int:
    """`direction.<i>` for HF block `block`: llama.cpp adds slot i to block i's output."""
    if block < 1:
        raise UserError(f"layer {block} cannot be exported for llama.cpp: it never steers block 0 (no direction.0)")
    return block


def write_control_vector(
    readout: Readout, concept: str, path: Path, model_hint: str, layers: list[int] | None = None, scale: float = 1.0, n_layers: int | None = None
) -> Path:
    """Write one concept's vectors at `layers` (default: every exported layer) as a control-vector GGUF."""
    from gguf import GGUFWriter

    readout.check_concept(concept)
    if not abs(scale) <= float(np.finfo(np.float32).max) or scale == 0:  # the file stores fp32: 1e39 is finite only as a double
        raise UserError(f"--scale must be a non-zero number within fp32 range (|scale| < 3.4e38), got {scale}")
    layers = readout.layers if not layers else layers
    readout.check_layers(layers)
    if n_layers is not None and (beyond := [layer for layer in layers if layer >= n_layers]):
        raise UserError(f"layer {beyond[0]} is out of range for a model with {n_layers} layers")
    indices = {layer: gguf_layer_index(layer) for layer in layers}
    row = readout.concepts.index(concept)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # GGUFWriter writes to a path of its own; the rename makes the result atomic
        writer = GGUFWriter(str(tmp), ARCH)
        writer.add_string(f"{ARCH}.model_hint", model_hint)
        writer.add_uint32(f"{ARCH}.layer_count", len(layers))
        writer.add_string("amygdala_tl.units", "unit-norm vectors times amygdala_tl.scale")
        writer.add_float32("amygdala_tl.scale", float(scale))
        for layer in layers:
            vector = readout.vectors[layer][row].float().numpy().astype(np.float32)
            writer.add_tensor(f"direction.{indices[layer]}", vector / np.linalg.norm(vector) * scale)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_control_vector(path: Path) -> tuple[str, dict[int, np.ndarray]]:
    """(model hint, {HF block index: vector}) from a control-vector GGUF, read as llama.cpp reads it."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def field(name: str) -> str:
        found = reader.get_field(name)
        if found is None:
            raise UserError(f"{path} has no {name} field: not a control vector")
        return bytes(found.parts[-1]).decode()

    arch = field("general.architecture")
    if arch != ARCH:
        raise UserError(f"{path} is a {arch!r} GGUF, not a control vector")
    hint = field(f"{ARCH}.model_hint")
    vectors = {
        int(t.name.split(".")[1]): np.asarray(t.data, dtype=np.float32).reshape(-1).copy() for t in reader.tensors if t.name.startswith("direction.")
    }
    return hint, vectors
