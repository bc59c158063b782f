"""Who wrote each text, and in what form: the corpus manifest.

`corpus/writers.tsv` names every writer (a person, or a helper with its own brief) and the one set it wrote
for; `corpus/manifest.tsv` gives every text's writer and form. Cross-validation leaves one writer out at a time
(a new writer is what a deployed readout meets), and `corpus check` counts positives by writer and by form and
keeps the development sets' writers apart from the training writers. A corpus without a manifest still loads:
its texts then have no recorded writer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import UserError

MANIFEST = "manifest.tsv"
WRITERS = "writers.tsv"
PROSE = "prose"  # the literary paragraph every training text was before the corpus-scale issue
FORMS = (
    PROSE,
    "chat",
    "email_letter",
    "diary",
    "dialogue",
    "monologue",
    "second_person",
    "spoken",
    "interview",
    "post",
    "notes",
    "essay",
    "assistant_request",
)
TRAINING_SET = "training"
SETS = {"stories": TRAINING_SET, "paired": TRAINING_SET, "neutral": TRAINING_SET, "heldout": "heldout", "heldout_forms": "heldout_forms"}


@dataclass(frozen=True)
class Entry:
    writer: str
    form: str


@dataclass(frozen=True)
class Manifest:
    entries: dict[str, Entry]  # path relative to the corpus directory, '/'-separated -> entry
    writers: dict[str, str]  # writer id -> the set it wrote for

    def of(self, corpus_dir: Path, path: Path) -> Entry | None:
        try:
            return self.entries.get(relative(corpus_dir, path))
        except ValueError:  # a stories or paired folder given outside the corpus directory
            return None


def relative(corpus_dir: Path, path: Path) -> str:
    return Path(path).relative_to(corpus_dir).as_posix()


def set_of(relative_path: str) -> str | None:
    """The set a corpus file belongs to, from its top folder (None: not a text folder of the corpus)."""
    return SETS.get(relative_path.split("/", 1)[0])


def _rows(path: Path, columns: list[str]) -> list[dict[str, str]]:
    """Rows of a tab-separated file with exactly `columns`, values stripped (a BOM, CRLF, blank lines and spaces
    around values are what editors leave; anything else is a one-line error naming the line)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            lines = [line for line in handle.read().splitlines() if line.strip()]
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not valid UTF-8 (byte {error.start})") from None
    header = [name.strip() for name in lines[0].split("\t")] if lines else []
    if header != columns:
        raise UserError(f"{path}: the header must be {' / '.join(columns)} (tab-separated), not {' / '.join(header) or 'empty'}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        values = [value.strip() for value in line.split("\t")]
        if len(values) != len(columns) or not all(values):
            raise UserError(f"{path}:{number}: expected {len(columns)} tab-separated values ({', '.join(columns)})")
        rows.append(dict(zip(columns, values)))
    return rows


def normal_path(path: str) -> str:
    """A manifest path as the corpus lists it: '/'-separated, relative, no './'."""
    return PurePosixPath(path.replace("\\", "/")).as_posix()


def load_manifest(corpus_dir: Path) -> Manifest | None:
    """The manifest of `corpus_dir`, checked in itself (known writers and forms, each path once); None without one."""
    corpus_dir = Path(corpus_dir)
    if not (corpus_dir / MANIFEST).exists():
        return None
    if not (corpus_dir / MANIFEST).is_file():
        raise UserError(f"{corpus_dir / MANIFEST} is not a file")
    if not (corpus_dir / WRITERS).is_file():
        raise UserError(f"{corpus_dir / MANIFEST} needs {corpus_dir / WRITERS} (writer, set, brief) beside it")
    writers: dict[str, str] = {}
    for row in _rows(corpus_dir / WRITERS, ["writer", "set", "brief"]):
        if row["set"] not in set(SETS.values()):
            raise UserError(f"{corpus_dir / WRITERS}: writer {row['writer']!r} has set {row['set']!r}; sets are {sorted(set(SETS.values()))}")
        if row["writer"] in writers:
            raise UserError(
                f"{corpus_dir / WRITERS}: writer {row['writer']!r} is listed twice ({writers[row['writer']]}, {row['set']}): one writer, one set"
            )
        writers[row["writer"]] = row["set"]
    entries: dict[str, Entry] = {}
    for row in _rows(corpus_dir / MANIFEST, ["path", "writer", "form"]):
        where = f"{corpus_dir / MANIFEST}: {row['path']}"
        if row["writer"] not in writers:
            raise UserError(f"{where}: writer {row['writer']!r} is not in {WRITERS}")
        if row["form"] not in FORMS:
            raise UserError(f"{where}: form {row['form']!r} is not one of {', '.join(FORMS)}")
        if (path := normal_path(row["path"])) in entries:
            raise UserError(f"{where}: listed twice")
        entries[path] = Entry(row["writer"], row["form"])
    return Manifest(entries, writers)


def manifest_problems(corpus_dir: Path, manifest: Manifest, files: list[Path]) -> list[tuple[str, str]]:
    """(path, problem) for every text the manifest misses, every row naming no text, and every writer who wrote
    for another set than the one writers.tsv gives (a development-set writer never writes training texts)."""
    problems = []
    listed = {relative(corpus_dir, file) for file in files}
    for path in sorted(listed - manifest.entries.keys()):
        problems.append((path, f"not in {MANIFEST}: add a row (path, writer, form)"))
    for path in sorted(manifest.entries.keys() - listed):
        problems.append((path, f"listed in {MANIFEST} but not a text of the corpus"))
    for path in sorted(listed & manifest.entries.keys()):
        writer = manifest.entries[path].writer
        if (wrote_for := manifest.writers[writer]) != set_of(path):
            problems.append((path, f"writer {writer!r} writes for the {wrote_for} set ({WRITERS}), not the {set_of(path)} set"))
        if "_" in (name := Path(path).name) and name.split("_", 1)[0] in manifest.writers and name.split("_", 1)[0] != writer:
            problems.append((path, f"its name's prefix says writer {name.split('_', 1)[0]!r}, {MANIFEST} says {writer!r}"))
    return problems
