"""`corpus check`: lint the corpus like code, reporting every problem (not just the first) by file."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .concepts import names_own_concept
from .corpus import BASELINE, paired_files, story_files, read_story, text_sha256
from .errors import UserError

MIN_WORDS, MAX_WORDS = 80, 220


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class ConceptStats:
    unpaired: int = 0
    paired: int = 0
    words: int = 0

    @property
    def positives(self) -> int:
        return self.unpaired + self.paired

    @property
    def mean_words(self) -> float:
        return self.words / self.positives if self.positives else 0.0


def check_corpus(corpus_dir: Path, expect: list[str] | None = None, min_positives: int = 1) -> tuple[dict[str, ConceptStats], list[Problem]]:
    """Per-concept stats and every problem found under corpus_dir."""
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise UserError(f"corpus directory not found: {corpus_dir}")
    entries = []
    problems: list[Problem] = []
    for sub, lister in (("stories", story_files), ("paired", paired_files)):
        if (corpus_dir / sub).is_dir():
            entries += lister(corpus_dir / sub, on_error=lambda path, error: problems.append(Problem(str(path), str(error).split(":")[0])))
    stats: dict[str, ConceptStats] = defaultdict(ConceptStats)
    seen: dict[str, Path] = {}
    scenarios_with_baseline = {scenario for _, label, scenario in entries if label == BASELINE}
    for path, label, scenario in entries:
        try:
            text = read_story(path)
        except UserError as error:
            problems.append(Problem(str(path), str(error).rsplit(":", 1)[0]))
            continue
        if not text:
            problems.append(Problem(str(path), "empty file"))
            continue
        if (first := seen.setdefault(text_sha256(text), path)) != path:
            problems.append(Problem(str(path), f"same text as {first}"))
        n_words = len(text.split())
        if not MIN_WORDS <= n_words <= MAX_WORDS:
            problems.append(Problem(str(path), f"{n_words} words, outside {MIN_WORDS}-{MAX_WORDS}"))
        if "\n\n" in text:
            problems.append(Problem(str(path), "more than one paragraph"))
        if label == BASELINE:
            continue
        if scenario is not None and scenario not in scenarios_with_baseline:
            problems.append(Problem(str(path), f"paired framing but scenario {scenario!r} has no baseline.txt"))
        if form := names_own_concept(label, text):
            problems.append(Problem(str(path), f"names its own concept {label!r} ({form!r})"))
        concept = stats[label]
        concept.words += n_words
        if scenario is None:
            concept.unpaired += 1
        else:
            concept.paired += 1
    for name in expect or []:
        have = stats[name].positives if name in stats else 0
        if have < min_positives:
            problems.append(Problem(str(corpus_dir), f"concept {name!r} has {have} positive stories, expected at least {min_positives}"))
    return dict(sorted(stats.items())), problems
