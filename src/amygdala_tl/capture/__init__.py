"""Capture activations by hook name (collect.py composes the store, the forward pass and pooling)."""

from .activations import Activations
from .collect import ProgressCallback, TokenSink, activations_from_store, capture
from .forward import Batch, encode, forward, last_token_resid, make_batches, read_batch
from .pooling import DEFAULT_POOLING, check_pooling, pool, reading, running_reading, token_weights
from .store import ActivationStore

__all__ = [
    "Activations",
    "ActivationStore",
    "Batch",
    "DEFAULT_POOLING",
    "ProgressCallback",
    "TokenSink",
    "activations_from_store",
    "capture",
    "check_pooling",
    "encode",
    "forward",
    "last_token_resid",
    "make_batches",
    "pool",
    "read_batch",
    "reading",
    "running_reading",
    "token_weights",
]
