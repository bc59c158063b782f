"""On-disk activation store: forward passes are the whole cost on a large model, so keep them.

Layout: <root>/<key>/shard-*.safetensors, where <key> hashes (model identity, pooling, max length).
Each shard holds one capture batch: a tensor per hook name, [n_texts, ...] fp32, and in its metadata
the texts' sha256, the cache key it was written for and a checksum of its tensors. One shard per
batch means a crash or Ctrl-C loses at most one batch. A shard that does not verify (unreadable,
another key, checksum mismatch, NaN/inf, wrong dtype or shape) is named in one warning, moved aside
(`.corrupt`) and its texts recomputed: it is never used. Model weights that reports need without the model (W_out,
W_O of the target layers) and the model's record (facts, tokenizer) are kept beside the shards, verified the same way.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors_bytes
from torch import Tensor

from .. import atomic
from ..model import LoadedModel, ModelFacts

if TYPE_CHECKING:
    from ..rundir import RunRecord


class StoreWarning(UserWarning):
    """A cache entry was unusable and will be recomputed."""


def store_key(model_identity: str, pooling: str, max_length: int, dtype: str = "fp32") -> str:
    """Activations depend on the weights, the pooling, the truncation and the dtype the model ran in."""
    blob = json.dumps({"model": model_identity, "pooling": pooling, "max_length": max_length, "dtype": dtype}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def tensor_digest(tensors: dict[str, Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes: a flipped byte anywhere changes it."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


class ActivationStore:
    def __init__(self, root: Path, model_identity: str, pooling: str, max_length: int, dtype: str = "fp32"):
        self.key = store_key(model_identity, pooling, max_length, dtype)
        self.dir = Path(root) / self.key
        self.description = {"model_identity": model_identity, "pooling": pooling, "max_length": max_length, "dtype": dtype}

    @classmethod
    def of_run(cls, record: RunRecord, cache_dir: Path | None = None, model: LoadedModel | None = None) -> ActivationStore:
        """The store a run read its texts through: its cache (or `cache_dir`), pooling and max_length, and the
        run's model and dtype, or those of `model` when the texts are read with a model loaded now (`evaluate`)."""
        identity, dtype = (model.identity, model.dtype_name) if model is not None else (record.model["identity"], record.model["dtype"])
        return cls(Path(cache_dir or record.cache["dir"]), identity, record.pooling, record.max_length, dtype)

    def shards(self) -> list[Path]:
        return sorted(self.dir.glob("shard-*.safetensors"))

    def lookup(self, text_hashes: Sequence[str], shapes: dict[str, tuple[int, ...]]) -> dict[str, dict[str, Tensor]]:
        """{hook name: {text hash: pooled vector}} for every stored, verified entry (later shards win).

        A shard is used only whole and only if it verifies (its key, checksum, finite values, dtypes
        and shapes); otherwise one warning names it, it is moved aside, and its texts are recomputed."""
        wanted = set(text_hashes)
        found: dict[str, dict[str, Tensor]] = {name: {} for name in shapes}
        for shard in self.shards():
            try:
                shard_texts, tensors = self._read_verified(shard, shapes)
            except (SafetensorError, OSError, KeyError, ValueError, TypeError, json.JSONDecodeError) as error:
                aside = shard.with_suffix(".corrupt")
                shard.replace(aside)
                warnings.warn(
                    f"unusable cache shard {shard.name} ({error}): moved to {aside.name}, its texts are recomputed", StoreWarning, stacklevel=2
                )
                continue
            for name, tensor in tensors.items():
                found[name].update({digest: tensor[row] for row, digest in enumerate(shard_texts) if digest in wanted})
        return found

    def _read_verified(self, shard: Path, shapes: dict[str, tuple[int, ...]]) -> tuple[list[str], dict[str, Tensor]]:
        with safe_open(str(shard), framework="pt") as handle:
            metadata = handle.metadata() or {}
            for field in ("texts", "key", "sha256"):
                if field not in metadata:
                    raise ValueError(f"no {field!r} in its metadata")
            if metadata["key"] != self.key:
                raise ValueError(f"written for cache key {metadata['key']}, not {self.key}")
            shard_texts = json.loads(metadata["texts"])
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        if tensor_digest(tensors) != metadata["sha256"]:
            raise ValueError("checksum mismatch")
        for name, tensor in tensors.items():
            if tensor.dtype != torch.float32 or tensor.shape[0] != len(shard_texts):
                raise ValueError(f"{name} is {tensor.dtype} {tuple(tensor.shape)} for {len(shard_texts)} texts")
            if name in shapes and tuple(tensor.shape[1:]) != shapes[name]:
                raise ValueError(f"{name} has shape {tuple(tensor.shape[1:])} per text, expected {shapes[name]}")
            if not torch.isfinite(tensor).all():
                raise ValueError(f"{name} holds NaN or infinite values")
        return shard_texts, {name: tensor for name, tensor in tensors.items() if name in shapes}

    def write_batch(self, text_hashes: Sequence[str], pooled: dict[str, Tensor]) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        description = self.dir / "store.json"
        if not description.exists():
            atomic.write_json(description, self.description)
        path = self.dir / f"shard-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.safetensors"
        tensors = {name: value.float().contiguous() for name, value in pooled.items()}
        metadata = {"texts": json.dumps(list(text_hashes)), "key": self.key, "sha256": tensor_digest(tensors)}
        atomic.write_bytes(path, save_safetensors_bytes(tensors, metadata=metadata))
        return path

    def _set_aside(self, path: Path, error: Exception, consequence: str) -> None:
        """A damaged file is never used: one warning names it, and it is moved aside for a look."""
        aside = path.with_suffix(".corrupt")
        path.replace(aside)
        warnings.warn(f"unusable cache file {path.name} in {self.dir} ({error}): moved to {aside.name}, {consequence}", StoreWarning, stacklevel=3)

    # what a re-run needs of the model without its weights: its record (facts) and its tokenizer
    def model_path(self) -> Path:
        return self.dir / "model.json"

    def tokenizer_dir(self) -> Path:
        return self.dir / "tokenizer"

    def _model_digest(self, record: dict) -> str:
        """sha256 over the record and every tokenizer file: an edited n_layers or vocabulary changes it."""
        digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode())
        for file in sorted(p for p in self.tokenizer_dir().rglob("*") if p.is_file()):
            digest.update(f"\0{file.relative_to(self.tokenizer_dir())}\0".encode() + file.read_bytes())
        return digest.hexdigest()

    def save_model(self, record: dict, tokenizer) -> None:
        """Written once, model.json last (with this key and a checksum): its presence means its tokenizer is complete."""
        if self.model_path().is_file():
            return
        staging = self.dir / f".tokenizer-{uuid.uuid4().hex[:8]}"
        tokenizer.save_pretrained(staging)
        if self.tokenizer_dir().exists():
            shutil.rmtree(self.tokenizer_dir())
        staging.replace(self.tokenizer_dir())
        atomic.write_json(self.model_path(), {"key": self.key, "sha256": self._model_digest(record), "record": record})

    def load_model_record(self, identity: str) -> tuple[dict, object] | None:
        """(record, tokenizer) when this store knows the model `identity`; None otherwise. A record that does not
        verify (its key, its checksum over the record and the tokenizer files) is moved aside with a warning."""
        if not self.model_path().is_file():
            return None
        from transformers import AutoTokenizer

        try:
            stored = json.loads(self.model_path().read_text(encoding="utf-8"))
            if stored["key"] != self.key:
                raise ValueError(f"written for cache key {stored['key']}, not {self.key}")
            record = stored["record"]
            if self._model_digest(record) != stored["sha256"]:
                raise ValueError("checksum mismatch: the record or its tokenizer was changed")
            ModelFacts(**record["facts"])
            tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_dir())
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as error:
            self._set_aside(self.model_path(), error, "the model is loaded instead")
            return None
        if record["identity"] != identity or not isinstance(record["attention_layers"], list):
            warnings.warn(f"the model record in {self.dir} describes another model: the model is loaded instead", StoreWarning, stacklevel=2)
            return None
        return record, tokenizer

    # weights a report needs without the model
    def weights_path(self, layer: int) -> Path:
        return self.dir / f"weights-layer{layer}.safetensors"

    def save_weights(self, layer: int, weights: dict[str, Tensor]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.float().contiguous().cpu() for k, v in weights.items()}
        metadata = {"key": self.key, "layer": str(layer), "sha256": tensor_digest(tensors)}
        atomic.write_bytes(self.weights_path(layer), save_safetensors_bytes(tensors, metadata=metadata))

    def load_weights(self, layer: int) -> dict[str, Tensor] | None:
        """The layer's stored weights if they verify (this key, this layer, their checksum, fp32); None when absent,
        or (moved aside with a warning) when they do not."""
        path = self.weights_path(layer)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
            if (metadata.get("key"), metadata.get("layer")) != (self.key, str(layer)):
                raise ValueError(f"written for cache key {metadata.get('key')} layer {metadata.get('layer')}")
            if tensor_digest(tensors) != metadata.get("sha256") or any(t.dtype != torch.float32 for t in tensors.values()):
                raise ValueError("checksum mismatch")
        except (SafetensorError, OSError, ValueError, TypeError) as error:
            self._set_aside(path, error, "the weights are read off the model again")
            return None
        return tensors
