"""A small GGUF, dequantized once and kept as an HF checkpoint.

transformers reads a GGUF's metadata three times (tokenizer, config, weights) and maps every tensor
name anew: 40 s for the bundled 100 MB file on 2 cores, most of any command's time. The same weights
saved as safetensors load in about a second. Only GGUFs up to `MAX_GGUF_BYTES` are converted (fp32
checkpoints are ~8x a 4-bit file); `AMYGDALA_TL_GGUF_CACHE=0` turns it off, `AMYGDALA_TL_CACHE`
moves it (default ~/.cache/amygdala-tl). Keyed by the file's sha256, so an edited GGUF converts anew.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import torch

from . import atomic

MAX_GGUF_BYTES = 512 * 2**20
DONE_FILE = "converted.json"  # written last: its presence means the checkpoint is complete


def cache_home() -> Path:
    return Path(os.environ.get("AMYGDALA_TL_CACHE") or Path.home() / ".cache" / "amygdala-tl")


def enabled(path: Path) -> bool:
    return os.environ.get("AMYGDALA_TL_GGUF_CACHE", "1") != "0" and path.stat().st_size <= MAX_GGUF_BYTES


def converted_checkpoint(path: Path, sha256: str) -> Path | None:
    """The HF checkpoint of the GGUF at `path` (content hash `sha256`), converting it now if it is not
    there yet; None when conversion is off, the file is too large, or the cache cannot be written."""
    if not enabled(path):
        return None
    target = cache_home() / "gguf" / sha256[:32]
    if (target / DONE_FILE).is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    staging = target.parent / f".{target.name}-{uuid.uuid4().hex[:8]}"
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        model.hf_quantizer = None  # type: ignore[assignment]  # dequantized already: plain fp32 weights that save like any model's
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        atomic.write_json(staging / DONE_FILE, {"gguf": str(path), "sha256": sha256})
        if target.exists():
            shutil.rmtree(target)
        staging.replace(target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        return None  # a read-only or full disk: load the GGUF directly, as before
    return target
