"""Exported vectors and the model they were learned on, opened the same way by score, steer, evaluate
and heads concept: the readout, its run record (refused if from another run), then the model,
checked against the vectors before and after it loads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..capture.pooling import check_pooling
from ..errors import UserError
from ..formats.readout import Readout, load_readout, readout_dir
from ..model import LoadedModel, load_model
from ..model_spec import resolve_model_spec
from ..preflight import preflight
from ..rundir import RunRecord, recorded_run

DEFAULT_MAX_LENGTH = 512  # extract's default, for vectors without an extract.json
LEGACY_POOLING = "last"  # what an export that declares no reading was read with


@dataclass
class Vectors:
    directory: Path
    readout: Readout
    record: RunRecord | None  # extract.json beside the vectors, when there is one

    @property
    def max_length(self) -> int:
        """Texts are read as extract read the corpus: longer ones keep their last max_length tokens."""
        return self.record.max_length if self.record else DEFAULT_MAX_LENGTH

    @property
    def pooling(self) -> str:
        """How the vectors are read: the pooling they were learned with (readout metadata, else extract.json);
        an export that declares none is read at the last token, as exports before the declared reading were."""
        declared = self.readout.metadata.get("pooling") or (self.record.pooling if self.record else LEGACY_POOLING)
        return check_pooling(declared, f"pooling declared in {self.directory}")


def open_vectors(path: Path) -> Vectors:
    """--vectors: an export directory (or either readout file in it), with the run that wrote it."""
    directory = readout_dir(path)
    readout = load_readout(directory)
    return Vectors(directory, readout, recorded_run(directory, readout))


def load_model_for(
    vectors: Vectors,
    model: str | None,
    device: str | None,
    trust_remote_code: bool = False,
    loader: Callable[..., LoadedModel] = load_model,
    log: Callable[[str], None] = lambda _: None,
) -> LoadedModel:
    """The model the vectors were learned on (or `model`), its depth checked before the load, its width after."""
    spec = resolve_model_spec(model or (vectors.record.model_location() if vectors.record else None))
    n_layers = preflight(spec, device, trust_remote_code)
    if n_layers is not None and max(vectors.readout.layers) >= n_layers:
        raise UserError(f"the vectors use layer {max(vectors.readout.layers)}, the model {spec.display} has {n_layers} layers")
    log(f"loading {spec.display}")
    loaded = loader(spec.passed_preflight(device, trust_remote_code), device=device, trust_remote_code=trust_remote_code)
    if loaded.facts.d_model != vectors.readout.hidden_size:
        raise UserError(
            f"the vectors in {vectors.directory} have hidden size {vectors.readout.hidden_size}, the model {spec.display} has {loaded.facts.d_model}"
        )
    if max(vectors.readout.layers) >= loaded.facts.n_layers:
        raise UserError(f"the vectors use layer {max(vectors.readout.layers)}, the model has {loaded.facts.n_layers} layers")
    return loaded
