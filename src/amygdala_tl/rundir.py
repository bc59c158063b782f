"""The output directory of one `extract` run: every file name, the run record, and what belongs to it;
and, for every command, whether an output directory can be written (check_output_dir).

A run writes all its files in one atomic commit, records their names (plain names from RUN_FILES,
never a path) and a fresh `run_id` in extract.json, stamps the same id into each file a later
command reads, and removes the files the previous run's extract.json recorded that this run did not
write: a file no recorded run wrote is never touched. Readers (`report`, `score`, `steer`, `export`,
`heads concept`) refuse a file whose run id differs from extract.json's: a stale or copied-in file
is never combined with another run's record.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from . import atomic
from .errors import UserError
from .formats.readout import MANIFEST_FILE, VECTORS_FILE, Readout
from .model_spec import BUNDLED_HUB_ID

SIDECAR_FILE = "extract.json"
DIRECTIONS_FILE = "directions.safetensors"  # every target layer, fp16, as served; the readout may keep fewer
PER_HEAD_FILE = "per_head.json"
SUBSPACE_FILE = "subspace.json"
QUALITY_FILE = "quality.json"
HTML_FILE = "report.html"
CALIBRATION_FILE = "calibration.json"  # the declared reading (how a client turns per-token served scores into a concept score) and its calibration
RUN_FILES = (VECTORS_FILE, MANIFEST_FILE, DIRECTIONS_FILE, PER_HEAD_FILE, SUBSPACE_FILE, QUALITY_FILE, HTML_FILE, CALIBRATION_FILE, SIDECAR_FILE)


def check_output_dir(path: Path, option: str = "--output-dir") -> None:
    """The directory can be created and written: its nearest existing part is a directory we may write in."""
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                raise UserError(f"{option} {path}: {part} exists and is not a directory")
            if not os.access(part, os.W_OK | os.X_OK):
                raise UserError(f"{option} {path}: {part} is not writable")
            return


def new_run_id() -> str:
    return uuid.uuid4().hex


@dataclass
class RunRecord:
    """extract.json: what produced a readout (provenance), what `report`, `score` and `steer` need to
    reuse it, and which files belong to the run. The JSON schema is the README's."""

    tool: str
    version: str
    created: str
    model: dict  # source, location, label, identity, dtype, model_type, n_layers, d_model, n_heads, d_head, d_mlp, n_kv_heads
    hook: str
    method: str
    params: dict  # the method's parameter values ({} when it has none): `report` rebuilds the method from these
    pooling: str
    max_length: int
    min_positives: int
    heads: bool
    layers: list[dict]  # [{"layer", "relative_depth"}]
    head_layers: list[int]
    concepts: dict[str, int]  # concept -> positives
    corpus: dict  # root, sha256, n_texts, corpus, stories_dir, paired_dir (absolute), n_baselines, skipped_empty
    truncated: list[str]
    cache: dict  # dir (absolute), enabled
    n_forward_passes: int
    timings: dict[str, float]
    run_id: str = field(default_factory=new_run_id)
    exported_layers: list[int] = field(default_factory=list)
    score_offsets: dict[str, dict[str, float]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    denoise_k: int = 0  # neutral principal components projected out before learning
    heldout_sha256: str | None = None  # fingerprint of its (label, text) pairs: `report` refuses an edited set
    heldout: str | None = None  # the development test set the quality report was scored on (absolute path)

    @property
    def target_layers(self) -> list[int]:
        return [entry["layer"] for entry in self.layers]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> RunRecord:
        known = {f.name for f in fields(cls)}
        params = data.get("params") or {}  # {} in a record written before methods had their own parameters
        if not isinstance(params, dict):
            raise TypeError(f"params must be an object, got {params!r}")
        return cls(**{key: value for key, value in data.items() if key in known} | {"params": params})

    @classmethod
    def read(cls, output_dir: Path) -> RunRecord:
        """extract.json of an output directory, or a one-line UserError."""
        path = Path(output_dir) / SIDECAR_FILE
        if not path.is_file():
            raise UserError(f"no {SIDECAR_FILE} in {output_dir}: run `amygdala-tl extract` first")
        try:
            record = cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, AttributeError) as error:
            raise UserError(f"unreadable {path} ({error}): re-run `amygdala-tl extract`") from None
        strangers = [name for name in record.files if name not in RUN_FILES] if isinstance(record.files, list) else [record.files]
        if strangers:  # a run's files are plain names in its directory: never a path, a link elsewhere or a user's file
            raise UserError(
                f"{path} lists {strangers[0]!r} as a file of the run, which is none of {', '.join(RUN_FILES)}: re-run `amygdala-tl extract`"
            )
        return record

    @property
    def reading(self) -> dict:
        """The declared reading of the exported vectors (the training pooling, as a client applies it)."""
        from .capture.pooling import reading

        return reading(self.pooling)

    def reading_payload(self) -> dict:
        """The declared reading as calibration.json states it: what a client needs besides the readout's four-key manifest."""
        return {"pooling": self.pooling, "reading": self.reading, "layers": self.exported_layers}

    def provenance(self) -> dict[str, str]:
        """The record's key facts as the string-valued safetensors header metadata of the readout."""
        return {
            "tool": f"amygdala-tl {self.version}",
            "created": self.created,
            "run_id": self.run_id,
            "model": self.model["location"],
            "model_identity": self.model["identity"],
            "hook": self.hook,
            "method": self.method,
            "pooling": self.pooling,
            "reading": json.dumps(self.reading, sort_keys=True),
            "corpus_sha256": self.corpus["sha256"],
        }

    def model_location(self) -> str | None:
        """The model the vectors came from, as --model takes it (None: the bundled one)."""
        return None if self.model["label"] == BUNDLED_HUB_ID and self.model["source"] == "gguf" else self.model["location"]

    def offsets(self, layers: list[int]) -> dict[int, dict[str, float]]:
        """Per-layer, per-concept offsets mu . v_c (for --centered)."""
        if any(str(layer) not in self.score_offsets for layer in layers):
            raise UserError(f"--centered needs the score offsets that `amygdala-tl extract` writes to {SIDECAR_FILE}")
        return {layer: self.score_offsets[str(layer)] for layer in layers}


def recorded_run(vectors_dir: Path, readout: Readout) -> RunRecord | None:
    """extract.json beside a readout (None if there is none), refused if the readout is from another run."""
    if not (Path(vectors_dir) / SIDECAR_FILE).is_file():
        return None
    record = RunRecord.read(vectors_dir)
    check_same_run(Path(vectors_dir) / VECTORS_FILE, readout.metadata.get("run_id"), record)
    if list(record.concepts) != readout.concepts or (record.exported_layers and record.exported_layers != readout.layers):
        raise UserError(
            f"{Path(vectors_dir) / MANIFEST_FILE} disagrees with {SIDECAR_FILE} beside it on the concepts or layers (an edited file?): "
            "re-run `amygdala-tl extract`"
        )
    return record


def check_same_run(path: Path, run_id: str | None, record: RunRecord) -> None:
    if run_id != record.run_id:
        raise UserError(
            f"{path} does not belong to the run recorded in {SIDECAR_FILE} beside it (a stale or copied-in file): re-run `amygdala-tl extract`"
        )


def read_run_json(output_dir: Path, name: str, record: RunRecord) -> dict | None:
    """A JSON file of the run (None if absent), refused if another run wrote it."""
    path = Path(output_dir) / name
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"unreadable {path} ({error}): re-run `amygdala-tl extract`") from None
    check_same_run(path, payload.pop("run_id", None) if isinstance(payload, dict) else None, record)
    return payload


def json_payload(obj: dict, run_id: str) -> bytes:
    return atomic.dumps_json({"run_id": run_id, **obj}).encode()


def recorded_files(output_dir: Path) -> set[str]:
    """The files the run recorded in output_dir's extract.json wrote; none without a valid run record."""
    try:
        return set(RunRecord.read(output_dir).files)
    except UserError:
        return set()


def commit_run(output_dir: Path, payloads: dict[str, bytes], record: RunRecord) -> list[Path]:
    """Write the run's files and extract.json (last) atomically, then remove the previous run's files it did not rewrite."""
    output_dir = Path(output_dir)
    if strangers := set(payloads) - set(RUN_FILES):
        raise ValueError(f"not run files: {sorted(strangers)} (add them to RUN_FILES)")
    previous = recorded_files(output_dir)
    record.files = sorted({*payloads, SIDECAR_FILE})
    files = [(output_dir / name, data) for name, data in payloads.items()]
    atomic.commit_all(files + [(output_dir / SIDECAR_FILE, atomic.dumps_json(record.to_json()).encode())])
    for stale in previous - set(record.files):
        (output_dir / stale).unlink(missing_ok=True)
    return [path for path, _ in files] + [output_dir / SIDECAR_FILE]
