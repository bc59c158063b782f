"""Checks on a model spec that run before any weights load: device, config, GGUF header, remote code, hub.

Every mistake found here is a one-line UserError in well under a second, instead of a traceback
after a long load (or, for a hub id without a network, after a minute of retries).
"""

from __future__ import annotations

import json
import math
import os
import socket
import struct
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

import torch

from .errors import UserError
from .model_spec import ModelSpec

GGUF_MAGIC = b"GGUF"
HUB_TIMEOUT_S = 3.0


def check_device(device: str | None) -> None:
    """A device string torch understands and this machine has."""
    if device is None:
        return
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"unknown --device {device!r}: use cpu, cuda, cuda:1, mps...") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: CUDA is not available on this machine (torch {torch.__version__}); use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {device}: MPS is not available on this machine")


DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def check_device_map(device_map: object, device: str | None) -> None:
    """accelerate's dispatch strategies, or one device this machine has; never together with --device."""
    if device_map is None or isinstance(device_map, dict):
        return
    if device is not None:
        raise UserError(f"--device {device} and --device-map {device_map} exclude each other: pass one")
    if device_map in DEVICE_MAPS:
        return
    try:
        torch.device(str(device_map))
    except (RuntimeError, ValueError):
        raise UserError(f"unknown --device-map {device_map!r}: use {', '.join(DEVICE_MAPS)}, or one device such as cuda:0") from None
    check_device(str(device_map))


def model_config(spec: ModelSpec) -> dict[str, Any] | None:
    """The model's config as a dict (config.json, or the GGUF header's keys), None when unknown without a download."""
    if spec.kind == "local":
        return read_config_json(Path(spec.location) / "config.json")
    if spec.kind == "gguf":
        return gguf_header(Path(spec.location))
    cached = _cached_hub_config(spec.location)
    return read_config_json(cached) if cached else None


def read_config_json(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"broken model config {path} ({error})") from None
    except OSError as error:
        raise UserError(f"cannot read model config {path} ({error.strerror})") from None
    if not isinstance(config, dict):
        raise UserError(f"broken model config {path}: expected a JSON object")
    return config


def n_layers_of(config: dict[str, Any] | None) -> int | None:
    """Decoder blocks, from HF config keys (nested text_config for multimodal models) or a GGUF header."""
    if not config:
        return None
    for key in ("num_hidden_layers", "n_layer", "num_layers", "block_count"):
        if isinstance(config.get(key), int):
            return config[key]
    text = config.get("text_config")
    return n_layers_of(text) if isinstance(text, dict) else None


def n_heads_of(config: dict[str, Any] | None) -> int | None:
    """Attention heads per block, from HF config keys or a GGUF header (`<arch>.attention.head_count`)."""
    if not config:
        return None
    for key in ("num_attention_heads", "n_head", "num_heads", f"{config.get('general.architecture')}.attention.head_count"):
        if isinstance(config.get(key), int):
            return config[key]
    text = config.get("text_config")
    return n_heads_of(text) if isinstance(text, dict) else None


def check_remote_code(spec: ModelSpec, config: dict[str, Any] | None, trust_remote_code: bool) -> None:
    """A model that ships its own Python runs it only with the explicit opt-in."""
    if config and config.get("auto_map") and not trust_remote_code:
        raise UserError(
            f"{spec.display} ships custom model code (auto_map in its config.json); "
            "pass --trust-remote-code to run it, or use a model transformers supports natively"
        )


def check_hub_reachable(spec: ModelSpec) -> None:
    """A hub id that is not in the local cache needs the hub: fail in seconds, not after a minute of retries."""
    if spec.kind != "hub" or _cached_hub_config(spec.location):
        return
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise UserError(
            f"model {spec.location!r} is not in the local HF cache and HF_HUB_OFFLINE is set: "
            "download it first, or pass a local directory or .gguf file"
        )
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=HUB_TIMEOUT_S).close()
    except OSError:
        raise UserError(
            f"cannot reach {host} to download {spec.location!r} (offline?): pass a local directory or "
            ".gguf file, or set HF_HUB_OFFLINE=1 to use the local cache"
        ) from None


def preflight(spec: ModelSpec, device: str | None = None, trust_remote_code: bool = False) -> int | None:
    """Run every check that needs no weights; returns the model's layer count when it can be known."""
    return n_layers_of(checked_config(spec, device, trust_remote_code))


def checked_config(spec: ModelSpec, device: str | None = None, trust_remote_code: bool = False) -> dict[str, Any] | None:
    """preflight's checks; returns the model's config (None when unknown without a download)."""
    check_device(device)
    config = model_config(spec)
    check_remote_code(spec, config, trust_remote_code)
    check_hub_reachable(spec)
    return config


def _cached_hub_config(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - an unusual id or cache layout just means "not cached"
        return None
    return Path(found) if isinstance(found, str) else None


# GGUF header: magic, version u32, tensor count u64, kv count u64, then (key, value type u32, value) pairs.
# gguf.GGUFReader parses every tensor and the whole vocabulary (5 s on the bundled model); we read the keys, skip the arrays,
# then the tensor table, whose offsets and sizes say how long a complete file is.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def gguf_header(path: Path) -> dict[str, Any]:
    """The GGUF header's scalar and string keys (arrays skipped), with `block_count` added; a one-line
    UserError if the file is not a GGUF, or is shorter than its tensor table says (a truncated download)."""
    try:
        with open(path, "rb") as handle:
            if handle.read(4) != GGUF_MAGIC:
                raise UserError(f"{path} is not a GGUF file (no GGUF magic bytes)")
            _version, n_tensors, n_kv = struct.unpack("<IQQ", _read(handle, 20))
            header: dict[str, Any] = {}
            for _ in range(n_kv):
                key = _read_string(handle)
                header[key] = _read_value(handle, struct.unpack("<I", _read(handle, 4))[0])
            arch = header.get("general.architecture")
            if f"{arch}.block_count" in header:
                header["block_count"] = header[f"{arch}.block_count"]
            _check_tensor_data(path, handle, n_tensors, header.get("general.alignment", 32))
            return header
    except (struct.error, UnicodeDecodeError, ValueError) as error:
        raise UserError(f"{path} is not a readable GGUF file ({error})") from None


def _check_tensor_data(path: Path, handle: BinaryIO, n_tensors: int, alignment: int) -> None:
    """The tensor table (name, dims, type, offset) says where each tensor ends: the file must reach the last end."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    end = 0
    for _ in range(n_tensors):
        name = _read_string(handle)
        (n_dims,) = struct.unpack("<I", _read(handle, 4))
        dims = struct.unpack(f"<{n_dims}Q", _read(handle, 8 * n_dims))
        kind, offset = struct.unpack("<IQ", _read(handle, 12))
        try:
            block, size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            raise ValueError(f"tensor {name} has unknown type {kind}") from None
        end = max(end, offset + math.prod(dims) // block * size)
    data_start = -(-handle.tell() // alignment) * alignment
    if (size_on_disk := os.fstat(handle.fileno()).st_size) < data_start + end:
        raise UserError(f"{path} is truncated: {size_on_disk} bytes, its header describes {data_start + end} (an interrupted download?)")


def _read(handle: BinaryIO, n: int) -> bytes:
    data = handle.read(n)
    if len(data) != n:
        raise ValueError("truncated header")
    return data


def _read_string(handle: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", _read(handle, 8))
    if length > 1 << 20:
        raise ValueError(f"implausible string length {length}")
    return _read(handle, length).decode("utf-8")


def _read_value(handle: BinaryIO, kind: int) -> Any:
    if kind in _SCALARS:
        fmt = _SCALARS[kind]
        return struct.unpack(fmt, _read(handle, struct.calcsize(fmt)))[0]
    if kind == _STRING:
        return _read_string(handle)
    if kind == _ARRAY:  # skipped (the vocabulary, merges): no check reads one
        item_kind, count = struct.unpack("<IQ", _read(handle, 12))
        if item_kind in _SCALARS:
            handle.seek(count * struct.calcsize(_SCALARS[item_kind]), os.SEEK_CUR)
        else:
            for _ in range(count):
                _read_value(handle, item_kind)
        return None
    raise ValueError(f"unknown GGUF value type {kind}")
