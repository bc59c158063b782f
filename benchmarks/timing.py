"""What several benchmarks time the same way: one bare HF forward pass over padded batches (the baseline)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from amygdala_tl.capture import Batch


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so a wall-clock reading covers it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bare_forward_s(model: torch.nn.Module, batches: Sequence[Batch], device: str) -> float:
    """Seconds for the plain HF model (no hooks, no TransformerLens) to run every batch once, after one warm-up batch."""
    with torch.inference_mode():
        model(batches[-1].input_ids.to(device), attention_mask=batches[-1].attention_mask.to(device))
        synchronize(device)
        started = time.perf_counter()
        for batch in batches:
            model(batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device))
        synchronize(device)
    return time.perf_counter() - started
