"""The story corpus: load, validate, and say which texts are each concept's positives and negatives.

Layout (see corpus/README.md): stories/<concept>.txt or stories/<concept>/*.txt,
paired/<scenario>/{baseline,<concept>}.txt and neutral/*.txt. Every text carries exactly one label: a concept
or BASELINE (a scenario baseline or a neutral text). A concept's negatives are all texts not labelled with it
(other concepts' positives and every baseline), as docs/methods.md defines them. The manifest
(corpus/manifest.tsv, manifest.py) adds each text's writer and form.
"""

from __future__ import annotations

import hashlib
import stat
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from ..errors import UserError
from .concepts import SAFE_NAME
from .manifest import MANIFEST, TRAINING_SET, load_manifest

DEFAULT_CORPUS = Path("corpus")  # the shipped corpus, from the working directory: every command's default
DEFAULT_HELDOUT = DEFAULT_CORPUS / "heldout"  # its development test set, never trained on
BASELINE = "baseline"
NEUTRAL = "_neutral"  # heldout/_neutral/: evaluation texts that frame no concept
NEUTRAL_DIR = "neutral"  # corpus/neutral/: training texts that frame no concept
MAX_TEXT_BYTES = 4 * 2**20  # a story is ~1 KB; `score --file` lines a few MB at most


class CorpusWarning(UserWarning):
    """Something skipped while loading (an empty file); the CLI prints it as one line."""


@dataclass(frozen=True)
class Story:
    text: str
    path: Path
    label: str  # a concept name, or BASELINE
    scenario: str | None = None  # set for paired/ files
    writer: str | None = None  # from the corpus manifest; None where none is recorded
    form: str | None = None

    @property
    def is_baseline(self) -> bool:
        return self.label == BASELINE

    @property
    def sha256(self) -> str:
        return text_sha256(self.text)


@dataclass
class Corpus:
    stories: list[Story]
    root: str = ""
    skipped: list[Path] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        return [story.text for story in self.stories]

    @property
    def concepts(self) -> list[str]:
        """Concept names, sorted (the order of rows in the export)."""
        return sorted({s.label for s in self.stories if not s.is_baseline})

    def n_positives(self, concept: str) -> int:
        return sum(s.label == concept for s in self.stories)

    def positive_mask(self, concept: str) -> Bool[Tensor, " n_texts"]:
        self.require(concept)
        return torch.tensor([s.label == concept for s in self.stories])

    def membership(self, concepts: list[str]) -> Bool[Tensor, "n_concepts n_texts"]:
        """Row c marks concept c's positives; its negatives are the complement."""
        return torch.stack([self.positive_mask(c) for c in concepts]) if concepts else torch.zeros(0, len(self.stories), dtype=torch.bool)

    def baseline_partner(self) -> Int[Tensor, " n_texts"]:
        """Index of each paired framing's scenario baseline, -1 for every other text."""
        baselines = {s.scenario: i for i, s in enumerate(self.stories) if s.is_baseline}
        return torch.tensor([baselines.get(s.scenario, -1) if s.scenario and not s.is_baseline else -1 for s in self.stories])

    def neutral_mask(self) -> Bool[Tensor, " n_texts"]:
        """The scenario baselines and neutral texts: texts that frame no concept."""
        return torch.tensor([s.is_baseline for s in self.stories], dtype=torch.bool)

    @property
    def writers_recorded(self) -> bool:
        return bool(self.stories) and all(s.writer is not None for s in self.stories)

    def groups(self, by_writer: bool = True) -> list[int]:
        """Cross-validation group of each text: texts by one writer share one (unless `by_writer` is False), and so
        do a paired scenario's baseline and framings (same events), joined when a scenario spans writers; a text
        with no recorded writer and no scenario is a group of its own."""
        parent = list(range(len(self.stories)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        first: dict[tuple[str, str], int] = {}
        for i, story in enumerate(self.stories):
            for key in (("scenario", story.scenario), ("writer", story.writer if by_writer else None)):
                if key[1] is not None:
                    parent[root(i)] = root(first.setdefault(key, i))  # type: ignore[arg-type]
        roots = [root(i) for i in range(len(self.stories))]
        numbering: dict[int, int] = {}
        return [numbering.setdefault(r, len(numbering)) for r in roots]

    def require(self, concept: str) -> None:
        if concept not in self.concepts:
            raise UserError(f"unknown concept {concept!r}; the corpus has: {', '.join(self.concepts)}")

    def fingerprint(self) -> str:
        """Hash of (label, text) pairs: provenance for the export and a cache key."""
        return stories_fingerprint(self.stories)


def stories_fingerprint(stories: list[Story]) -> str:
    """Hash of the stories' (label, text) pairs, whatever their order: a corpus's or a development test set's."""
    digest = hashlib.sha256()
    for story in sorted(stories, key=lambda s: (s.label, s.sha256)):
        digest.update(f"{story.label}\0{story.sha256}\n".encode())
    return digest.hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_corpus(
    corpus_dir: str | Path | None = None,
    stories_dir: str | Path | None = None,
    paired_dir: str | Path | None = None,
) -> Corpus:
    """Read and validate a corpus; every problem a user can fix raises UserError naming the file."""
    neutral_dir: Path | None = None
    if corpus_dir is not None:
        corpus_dir = Path(corpus_dir)
        if not corpus_dir.is_dir():
            raise UserError(f"corpus directory not found: {corpus_dir}")
        stories_dir = Path(stories_dir or corpus_dir / "stories")
        paired_dir = Path(paired_dir or corpus_dir / "paired")
        if not stories_dir.is_dir() and not paired_dir.is_dir():
            raise UserError(f"corpus directory has neither stories/ nor paired/: {corpus_dir}")
        if (corpus_dir / NEUTRAL_DIR).is_dir():
            neutral_dir = corpus_dir / NEUTRAL_DIR
    if stories_dir is None and paired_dir is None:
        raise UserError("no corpus given: pass --corpus, or --stories-dir and/or --paired-dir")
    for given, name in ((stories_dir, "stories"), (paired_dir, "paired")):
        if given is not None and corpus_dir is None and not Path(given).is_dir():
            raise UserError(f"{name} directory not found: {given}")

    entries: list[tuple[Path, str, str | None]] = []
    if stories_dir is not None and Path(stories_dir).is_dir():
        entries += story_files(Path(stories_dir))
    if paired_dir is not None and Path(paired_dir).is_dir():
        entries += paired_files(Path(paired_dir))
    if neutral_dir is not None:
        entries += neutral_files(neutral_dir)
    manifest = load_manifest(corpus_dir) if corpus_dir is not None else None

    stories, skipped, unlisted = [], [], []
    for path, label, scenario in entries:
        text = read_story(path)
        if not text:
            warnings.warn(f"skipping empty file: {path}", CorpusWarning, stacklevel=2)
            skipped.append(path)
            continue
        entry = manifest.of(corpus_dir, path) if manifest is not None and corpus_dir is not None else None
        if manifest is not None and entry is None:
            unlisted.append(path)
        elif manifest is not None and entry is not None and (wrote_for := manifest.writers[entry.writer]) != TRAINING_SET:
            raise UserError(f"{path}: its writer {entry.writer!r} writes for the {wrote_for} set (writers.tsv): it cannot be trained on")
        stories.append(Story(text, path, label, scenario, entry.writer if entry else None, entry.form if entry else None))
    if unlisted:
        warnings.warn(
            f"{len(unlisted)} text{'s are' if len(unlisted) > 1 else ' is'} not in {corpus_dir}/manifest.tsv (first: {unlisted[0]}): "
            "with a writer unknown, cross-validation cannot leave one writer out and groups by scenario for the whole run; "
            "`corpus check` lists them",
            CorpusWarning,
            stacklevel=2,
        )
    elif corpus_dir is None and (Path(stories_dir or paired_dir).parent / MANIFEST).is_file():  # type: ignore[arg-type]
        warnings.warn(
            f"--stories-dir/--paired-dir read no manifest nor neutral/: pass --corpus {Path(stories_dir or paired_dir).parent} "  # type: ignore[arg-type]
            "to record the writers (leave-one-writer-out cross-validation) and load its neutral texts",
            CorpusWarning,
            stacklevel=2,
        )
    _reject_shared_texts(stories)
    root = str(corpus_dir or stories_dir or paired_dir)
    return Corpus(_drop_same_label_duplicates(stories), root=root, skipped=skipped)


def read_story(path: Path) -> str:
    """A story's text: a regular file (a FIFO would block, /dev/zero never end) of at most MAX_TEXT_BYTES,
    UTF-8, no NUL or other control bytes (a binary file is a mistake, not a story)."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise UserError(f"not a regular file (a FIFO, device or socket?): {path}")
        with path.open("rb") as handle:
            data = handle.read(MAX_TEXT_BYTES + 1)
        if len(data) > MAX_TEXT_BYTES:
            raise UserError(f"larger than {MAX_TEXT_BYTES // 2**20} MiB, too large for a text: {path}")
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError as error:
        raise UserError(f"not valid UTF-8 (byte {error.start}): {path}") from None
    except OSError as error:
        raise UserError(f"cannot read {path} ({error.strerror})") from None
    if bad := next((c for c in text if ord(c) < 32 and c not in "\t\n\r"), None):
        raise UserError(f"control character {bad!r} in a text file (binary data?): {path}")
    return text


def read_lines(path: Path, option: str) -> list[str]:
    """Non-empty lines of a user's text file (`score --file`, `heads detect --text-file`)."""
    if not Path(path).exists():
        raise UserError(f"{option} not found: {path}")
    return [line.strip() for line in read_story(Path(path)).splitlines() if line.strip()]


def _check_name(name: str, path: Path) -> str:
    if not SAFE_NAME.match(name):
        raise UserError(f"unsafe concept name {name!r} (use lowercase letters, digits, underscores): {path}")
    if name == BASELINE:
        raise UserError(f"'baseline' is reserved for paired scenarios and cannot be a concept: {path}")
    return name


def story_files(stories_dir: Path, on_error=None) -> list[tuple[Path, str, None]]:
    """(file, concept, None) for stories/<concept>.txt and stories/<concept>/*.txt.

    A bad concept name raises, or with `on_error` is passed to it and that entry skipped (the lint
    reports every problem instead of stopping at the first)."""
    entries = []
    for child in _visible(stories_dir.iterdir()):
        try:
            if child.is_symlink() and not child.exists():
                warnings.warn(f"broken symlink ignored: {child}", CorpusWarning, stacklevel=2)
            elif child.suffix == ".txt" and not child.is_dir():  # a FIFO or device too: read_story refuses it by name
                entries.append((child, _check_name(child.stem, child), None))
            elif child.is_dir():
                concept = _check_name(child.name, child)
                entries += [(f, concept, None) for f in _existing(_visible(child.glob("*.txt")))]
        except UserError as error:
            if on_error is None:
                raise
            on_error(child, error)
    return entries


def paired_files(paired_dir: Path, on_error=None) -> list[tuple[Path, str, str]]:
    """(file, concept or BASELINE, scenario) for paired/<scenario>/*.txt; `on_error` as in story_files."""
    entries = []
    for scenario in _visible(p for p in paired_dir.iterdir() if p.is_dir()):
        files = _existing(_visible(scenario.glob("*.txt")))
        if files and not any(file.stem == BASELINE for file in files):
            warnings.warn(f"paired scenario without baseline.txt: {scenario} (its framings have no neutral partner)", CorpusWarning, stacklevel=2)
        for file in files:
            if (label := _label(file.stem, file, on_error, allowed=BASELINE)) is not None:
                entries.append((file, label, scenario.name))
    return entries


def neutral_files(neutral_dir: Path) -> list[tuple[Path, str, None]]:
    """(file, BASELINE, None) for neutral/*.txt: texts that frame no concept, negatives of every concept."""
    return [(file, BASELINE, None) for file in _existing(_visible(Path(neutral_dir).glob("*.txt")))]


def heldout_files(heldout_dir: Path, on_error=None) -> list[tuple[Path, str, None]]:
    """(file, concept or NEUTRAL, None) for heldout/<concept>/*.txt and heldout/_neutral/*.txt."""
    entries = []
    for child in _visible(p for p in Path(heldout_dir).iterdir() if p.is_dir()):
        if (label := _label(child.name, child, on_error, allowed=NEUTRAL)) is not None:
            entries += [(f, label, None) for f in _existing(_visible(child.glob("*.txt")))]
    return entries


def load_heldout(heldout_dir: str | Path) -> list[Story]:
    """The development test set: evaluation only, never trained on (labels: concepts or NEUTRAL)."""
    heldout_dir = Path(heldout_dir)
    if not heldout_dir.is_dir():
        raise UserError(f"held-out directory not found: {heldout_dir}")
    stories = [Story(text, path, label) for path, label, _ in heldout_files(heldout_dir) if (text := read_story(path))]
    if not stories:
        raise UserError(f"no held-out texts in {heldout_dir} (expected <concept>/*.txt and _neutral/*.txt)")
    _reject_shared_texts(stories)
    return stories


def _label(name: str, path: Path, on_error, allowed: str) -> str | None:
    """`allowed` (baseline, _neutral) or a checked concept name; a bad name raises, or goes to `on_error` (None)."""
    try:
        return allowed if name == allowed else _check_name(name, path)
    except UserError as error:
        if on_error is None:
            raise
        on_error(path, error)
        return None


def _visible(entries: Iterable[Path]) -> list[Path]:
    """Entries sorted, less hidden ones (.ipynb_checkpoints/, .git/, .notes.txt): a folder or text skipped is a warning naming it."""
    kept = []
    for entry in sorted(entries):
        if not entry.name.startswith("."):
            kept.append(entry)
        elif entry.is_dir() or entry.suffix == ".txt":
            warnings.warn(f"hidden {'folder' if entry.is_dir() else 'file'} skipped: {entry}", CorpusWarning, stacklevel=3)
    return kept


def _existing(files: list[Path]) -> list[Path]:
    """Files that exist; a broken symlink is a warning naming it, not a traceback."""
    for file in files:
        if not file.exists():
            warnings.warn(f"broken symlink ignored: {file}", CorpusWarning, stacklevel=3)
    return [file for file in files if file.exists()]


def _reject_shared_texts(stories: list[Story]) -> None:
    """The same text under two labels would be both a positive and a negative: name both files."""
    first_seen: dict[str, Story] = {}
    for story in stories:
        other = first_seen.setdefault(story.sha256, story)
        if other.label != story.label:
            raise UserError(f"the same text is labelled {other.label!r} in {other.path} and {story.label!r} in {story.path}")


def _drop_same_label_duplicates(stories: list[Story]) -> list[Story]:
    seen: set[str] = set()
    kept = []
    for story in stories:
        if story.sha256 in seen:
            warnings.warn(f"duplicate text ignored: {story.path}", CorpusWarning, stacklevel=3)
            continue
        seen.add(story.sha256)
        kept.append(story)
    return kept


def select_concepts(corpus: Corpus, min_positives: int) -> list[str]:
    """Concepts with enough positives to learn from (the export's rows); errors if none qualify."""
    counts = Counter(s.label for s in corpus.stories)
    selected = [c for c in corpus.concepts if counts[c] >= min_positives]
    if any(counts[c] == len(corpus.stories) for c in selected):
        raise UserError(f"{corpus.root}: every text belongs to one concept, so it has no negatives; add other concepts or baselines")
    if not selected:
        raise UserError(
            f"no concept has at least {min_positives} positive stories in {corpus.root} "
            f"(most has {max((counts[c] for c in corpus.concepts), default=0)}); add stories or lower --min-positives"
        )
    for concept in sorted(set(corpus.concepts) - set(selected)):
        warnings.warn(
            f"concept {concept!r} left out: {counts[concept]} of the {min_positives} positive stories --min-positives asks for",
            CorpusWarning,
            stacklevel=2,
        )
    return selected
