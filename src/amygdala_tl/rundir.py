"""The output directory of one `extract` run: every file name, the run record, and what belongs to it.

A run writes all its files in one atomic commit, records their names and a fresh `run_id` in
extract.json, stamps the same id into each file a later command reads, and removes files an
earlier run left that this run did not write. Readers (`report`, `score`, `steer`, `export`,
`heads concept`) refuse a file whose run id differs from extract.json's: a stale or copied-in file
is never combined with another run's record.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from . import atomic
from .errors import UserError
from .readout import MANIFEST_FILE, VECTORS_FILE, Readout

SIDECAR_FILE = "extract.json"
DIRECTIONS_FILE = "directions.safetensors"  # every target layer, fp16, as served; the readout may keep fewer
PER_HEAD_FILE = "per_head.json"
SUBSPACE_FILE = "subspace.json"
QUALITY_FILE = "quality.json"
HTML_FILE = "report.html"
RUN_FILES = (VECTORS_FILE, MANIFEST_FILE, DIRECTIONS_FILE, PER_HEAD_FILE, SUBSPACE_FILE, QUALITY_FILE, HTML_FILE, SIDECAR_FILE)


def new_run_id() -> str:
    return uuid.uuid4().hex


def read_sidecar(output_dir: Path) -> dict:
    """extract.json of an output directory, or a one-line UserError."""
    path = Path(output_dir) / SIDECAR_FILE
    if not path.is_file():
        raise UserError(f"no {SIDECAR_FILE} in {output_dir}: run `amygdala-tl extract` first")
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
        sidecar["model"], sidecar["corpus"], sidecar["run_id"]  # noqa: B018 - the keys every reader needs
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise UserError(f"unreadable {path} (missing or broken {error}): re-run `amygdala-tl extract`") from None
    return sidecar


def recorded_run(vectors_dir: Path, readout: Readout) -> dict | None:
    """extract.json beside a readout (None if there is none), refused if the readout is from another run."""
    if not (Path(vectors_dir) / SIDECAR_FILE).is_file():
        return None
    sidecar = read_sidecar(vectors_dir)
    check_same_run(Path(vectors_dir) / VECTORS_FILE, readout.metadata.get("run_id"), sidecar)
    return sidecar


def check_same_run(path: Path, run_id: str | None, sidecar: dict) -> None:
    if run_id != sidecar["run_id"]:
        raise UserError(f"{path} does not belong to the run recorded in {SIDECAR_FILE} beside it "
                        "(a stale or copied-in file): re-run `amygdala-tl extract`")


def read_run_json(output_dir: Path, name: str, sidecar: dict) -> dict | None:
    """A JSON file of the run (None if absent), refused if another run wrote it."""
    path = Path(output_dir) / name
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"unreadable {path} ({error}): re-run `amygdala-tl extract`") from None
    check_same_run(path, payload.get("run_id") if isinstance(payload, dict) else None, sidecar)
    return payload


def json_payload(obj: dict, run_id: str) -> bytes:
    return atomic.dumps_json({"run_id": run_id, **obj}).encode()


def commit_run(output_dir: Path, payloads: dict[str, bytes], sidecar: dict) -> list[Path]:
    """Write the run's files and extract.json (last) atomically, then remove files of earlier runs."""
    output_dir = Path(output_dir)
    sidecar["files"] = sorted({*payloads, SIDECAR_FILE})
    files = [(output_dir / name, data) for name, data in payloads.items()]
    atomic.commit_all(files + [(output_dir / SIDECAR_FILE, atomic.dumps_json(sidecar).encode())])
    for stale in set(RUN_FILES) - set(sidecar["files"]):
        (output_dir / stale).unlink(missing_ok=True)
    return [path for path, _ in files] + [output_dir / SIDECAR_FILE]
