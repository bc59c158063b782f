"""Load a causal LM through TransformerLens's TransformerBridge, with the model's raw numerics.

The bridge keeps HF's own modules and residual basis (no LayerNorm folding, no weight centring),
so a direction read at `blocks.<l>.hook_resid_post` is valid at serving time on `model.layers[l]`.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from . import preflight as checks
from .errors import UserError
from .model_spec import CheckedSpec, ModelSpec, model_identity, resolve_model_spec

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class ModelFacts:
    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int | None
    n_kv_heads: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadedModel:
    bridge: Any  # transformer_lens.model_bridge.TransformerBridge
    tokenizer: Any
    facts: ModelFacts
    spec: ModelSpec
    identity: str  # content hash (gguf), config+weights manifest hash (local dir), or hub id@revision
    dtype: torch.dtype

    @property
    def device(self) -> torch.device:
        """Where inputs go: the input embedding's device (under a device_map, offloaded weights sit on `meta`)."""
        return torch.device(self.bridge.cfg.device)

    @property
    def dtype_name(self) -> str:
        """The --dtype spelling ('fp32', 'bf16', 'fp16') of the dtype the model runs in."""
        return next(name for name, value in DTYPES.items() if value == self.dtype)

    def attention_layers(self) -> list[int]:
        """Blocks with standard attention (an `attn.hook_z`): the per-head analysis runs on these only."""
        from .hooks import attn_z

        return [layer for layer in range(self.facts.n_layers) if attn_z(layer) in self.bridge.hook_dict]

    def model_type(self) -> str:
        """HF config.model_type ('llama', 'gemma2', ...): llama.cpp's control-vector model hint."""
        config = getattr(getattr(self.bridge, "original_model", None), "config", None)
        return str(getattr(config, "model_type", "unknown"))

    def record(self) -> dict[str, Any]:
        """What a re-run needs to know of the model without loading its weights (the activation store keeps it)."""
        return {
            "identity": self.identity,
            "facts": self.facts.to_dict(),
            "attention_layers": self.attention_layers(),
            "model_type": self.model_type(),
        }


class DeferredModel(LoadedModel):
    """A model known from its record (facts, tokenizer) whose weights load on first use of `bridge`.

    A fully cached re-run reads every activation and weight from the store and never touches
    `bridge`, so it never loads the model; anything that does run the model loads it then."""

    def __init__(self, record: dict[str, Any], tokenizer: Any, spec: ModelSpec, dtype: torch.dtype, load: Callable[[], LoadedModel]):
        self._bridge: Any = None
        self._load, self._record = load, record
        super().__init__(None, tokenizer, ModelFacts(**record["facts"]), spec, record["identity"], dtype)

    @property  # type: ignore[override]
    def bridge(self) -> Any:
        if self._bridge is None:
            loaded = self._load()
            if loaded.identity != self.identity or loaded.facts != self.facts:
                raise UserError(f"model {self.spec.display} is not the model its cache record describes: delete the cache and re-run")
            self._bridge = loaded.bridge
        return self._bridge

    @bridge.setter
    def bridge(self, value: Any) -> None:
        self._bridge = value

    def attention_layers(self) -> list[int]:
        return list(self._record["attention_layers"])

    def model_type(self) -> str:
        return str(self._record["model_type"])


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise UserError(f"unknown --dtype {name!r}: choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def load_model(
    spec: ModelSpec | str | os.PathLike[str] | None,
    dtype: torch.dtype = torch.float32,
    device: str | None = None,
    device_map: str | dict[str, str | int] | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    max_memory: dict[str | int, str | int] | None = None,
    offload_folder: str | Path | None = None,
) -> LoadedModel:
    """Load HF weights (GGUF dequantized, local, or hub), then wrap them in a TransformerBridge.

    We load the HF model ourselves so all three sources take one path; the bridge then boots from
    it without a hub call. `device_map` ('auto', or a module -> device dict; excludes `device`) is
    accelerate's dispatch for models larger than one device, with `max_memory` per device (e.g.
    {"cpu": "2GiB", "disk": "100GiB"}) and `offload_folder` for weights offloaded to 'disk': the
    bridge keeps accelerate's placement and reads inputs onto the embedding's device.
    Model code shipped with the weights runs only with `trust_remote_code`; nothing reads stdin.
    `spec` is a ModelSpec or what --model takes (None: the bundled model). The checks that need no weights
    (preflight) run here unless `spec` is a CheckedSpec that passed them for this device and trust_remote_code:
    a command that ran them before its load (to fail before it) passes `spec.passed_preflight(...)`.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = spec if isinstance(spec, ModelSpec) else resolve_model_spec(spec)  # a plain path or hub id from Python
    checks.check_device_map(device_map, device)
    if not (isinstance(spec, CheckedSpec) and spec.checked_for(device, trust_remote_code)):
        checks.preflight(spec, device, trust_remote_code)
    if device_map is None and (max_memory is not None or offload_folder is not None):
        raise UserError("max_memory and offload_folder apply only with a device_map")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if device is None and device_map is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    identity = model_identity(spec, revision)
    source, extra = _from_pretrained_args(spec, revision, identity)
    extra["trust_remote_code"] = trust_remote_code
    dispatch: dict[str, Any] = {"device_map": device_map, "max_memory": max_memory, "offload_folder": str(offload_folder) if offload_folder else None}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **extra)
        hf_model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, attn_implementation="eager", **dispatch, **extra)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, ImportError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"could not load model {spec.display}: {reason}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device_map is None:
        hf_model = hf_model.to(device)  # type: ignore[arg-type]
    hf_model.eval()
    try:  # under a device_map, device is None: the bridge takes accelerate's placement (hf_device_map) as it is
        bridge = boot_bridge(spec.label, hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype)
    except ValueError as error:  # a placement TransformerLens refuses, e.g. CPU/disk offload mixed with a GPU
        if device_map is None:
            raise
        raise UserError(f"--device-map {device_map} for {spec.display}: {str(error).strip().splitlines()[0]}") from None
    if str(bridge.cfg.device) == "meta":  # TransformerLens read the input device off an offloaded embedding
        bridge.cfg.device = str(_offloaded_input_device(hf_model, f"--device-map {device_map} for {spec.display}"))
    bridge.eval()
    return LoadedModel(bridge, tokenizer, facts_of(bridge), spec, identity, dtype)


def boot_bridge(label: str, **kwargs: Any) -> Any:
    """`TransformerBridge.boot_transformers`, except that it never installs a package.

    Booting a multimodal model (Gemma 3 from 4B up, LLaVA, ...) makes TransformerLens load its image
    processor and, when that needs torchvision, run `pip install torchvision` on the spot: on a CPU
    machine that replaced torch with a CUDA build. Extraction never uses the processor, so during the
    boot torchvision is only looked for."""
    from transformer_lens.model_bridge import TransformerBridge

    try:
        from transformer_lens.model_bridge.sources.transformers import helpers
    except ImportError:  # another TransformerLens layout; tests/unit/test_architectures.py checks that no boot runs pip
        return TransformerBridge.boot_transformers(label, **kwargs)
    installer = getattr(helpers, "_ensure_torchvision", None)
    helpers._ensure_torchvision = lambda: importlib.util.find_spec("torchvision") is not None
    try:
        return TransformerBridge.boot_transformers(label, **kwargs)
    finally:
        if installer is not None:
            helpers._ensure_torchvision = installer


def _offloaded_input_device(hf_model: Any, context: str) -> torch.device:
    """Where accelerate runs an offloaded input embedding (its weights stay on `meta` between calls)."""
    device = getattr(getattr(hf_model.get_input_embeddings(), "_hf_hook", None), "execution_device", None)
    if device is None:
        raise UserError(f"{context}: the input embedding's weights are on `meta` (no data): map it to a device, 'cpu' or 'disk'")
    return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)


def _from_pretrained_args(spec: ModelSpec, revision: str | None, identity: str) -> tuple[str, dict[str, Any]]:
    """A GGUF loads from its converted HF checkpoint when it has (or now gets) one: same weights, 40x faster."""
    if spec.kind == "gguf":
        from .gguf_cache import converted_checkpoint

        path = Path(spec.location)
        converted = converted_checkpoint(path, identity.removeprefix("sha256:"))
        return (str(converted), {}) if converted is not None else (str(path.parent), {"gguf_file": path.name})
    return spec.location, ({"revision": revision} if revision else {})


def facts_of(bridge: Any) -> ModelFacts:
    cfg = bridge.cfg
    return ModelFacts(
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        n_heads=cfg.n_heads,
        d_head=cfg.d_head,
        d_mlp=getattr(cfg, "d_mlp", None),
        n_kv_heads=getattr(cfg, "n_key_value_heads", None),
    )
