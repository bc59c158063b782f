"""Subprocess for the interruption test: captures into a store, printing a line after every batch and
waiting for the parent's go-ahead (a line on stdin), so the parent's SIGKILL lands at a known batch."""

import sys

from amygdala_tl.capture import capture
from amygdala_tl.capture.store import ActivationStore
from tests.conftest import make_tiny_model
from tests.unit.test_store import TEXTS

root = sys.argv[1]
model = make_tiny_model()
store = ActivationStore(root, model.identity, "last", 64)
capture(
    model,
    TEXTS,
    [1, 2],
    head_layers=[2],
    batch_size=2,
    max_length=64,
    store=store,
    on_progress=lambda done, total: (print(f"done {done}", flush=True), sys.stdin.readline()),
)
print("finished", flush=True)
