"""Atomic file writes: temp file in the same directory, fsync, rename. A crash never leaves half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_bytes(path: Path, data: bytes) -> None:
    commit_all([(Path(path), data)])


def write_json(path: Path, obj: Any) -> None:
    write_bytes(path, dumps_json(obj).encode())


def dumps_json(obj: Any) -> str:
    """Strict JSON (NaN/inf refused: callers write undefined metrics as null)."""
    return json.dumps(obj, indent=2, allow_nan=False) + "\n"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def commit_all(files: list[tuple[Path, bytes]]) -> None:
    """Write every file to a temp sibling first, then rename each into place.

    If anything fails before the renames, no target is touched; the temp files are removed.
    """
    staged: list[tuple[str, Path]] = []
    try:
        for path, data in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            staged.append((tmp, path))
            os.fchmod(fd, 0o666 & ~_umask())
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
