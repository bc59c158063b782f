"""`corpus check`: lint the corpus like code, reporting every problem (not just the first) by file."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

from ..errors import UserError
from .concepts import names_own_concept
from .load import BASELINE, NEUTRAL, heldout_files, paired_files, read_story, story_files, text_sha256

MIN_WORDS, MAX_WORDS = 40, 400  # a chat or a postcard is short, a dialogue scene long
WRITER_PREFIX = re.compile(r"^([a-z]+[0-9]+)_")  # t1_..., f3_..., h2_...: the writer id; no prefix: the first sessions'
UNRECORDED_WRITER = "s0"


def writer_of(path: Path) -> str:
    """The writer id a file's name records (`t3_market.txt` -> t3); the first sessions' files record none (s0)."""
    match = WRITER_PREFIX.match(Path(path).name)
    return match.group(1) if match else UNRECORDED_WRITER


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
    writers: Counter = field(default_factory=Counter)  # writer id -> positives

    @property
    def positives(self) -> int:
        return self.unpaired + self.paired

    @property
    def mean_words(self) -> float:
        return self.words / self.positives if self.positives else 0.0


def check_corpus(corpus_dir: Path, expect: list[str] | None = None, min_positives: int = 1) -> tuple[dict[str, ConceptStats], list[Problem]]:
    """Per-concept stats of the training stories, and every problem found under corpus_dir (heldout/ included)."""
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise UserError(f"corpus directory not found: {corpus_dir}")
    problems: list[Problem] = []

    def report(path, error) -> None:
        problems.append(Problem(str(path), str(error).split(":")[0]))

    def listed(sub: str, lister) -> list[tuple[Path, str, str | None]]:
        return list(lister(corpus_dir / sub, on_error=report)) if (corpus_dir / sub).is_dir() else []

    training = listed("stories", story_files) + listed("paired", paired_files)
    heldout = listed("heldout", heldout_files) + listed(FORMS_SET, heldout_files)
    stats: dict[str, ConceptStats] = defaultdict(ConceptStats)
    seen: dict[str, Path] = {}
    texts: list[tuple[Path, str, str | None]] = []  # (file, text, overlap group) for the near-duplicate check
    scenarios_with_baseline = {scenario for _, label, scenario in training if label == BASELINE}
    heldout_paths = {path for path, _, _ in heldout}
    for path, label, scenario in training + heldout:
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
        else:
            texts.append((path, text, f"paired/{scenario}" if scenario else None))
        n_words = len(text.split())
        if not MIN_WORDS <= n_words <= MAX_WORDS:
            problems.append(Problem(str(path), f"{n_words} words, outside {MIN_WORDS}-{MAX_WORDS}"))
        if label in (BASELINE, NEUTRAL):
            continue
        if scenario is not None and scenario not in scenarios_with_baseline:
            problems.append(Problem(str(path), f"paired framing but scenario {scenario!r} has no baseline.txt"))
        if form := names_own_concept(label, text):
            problems.append(Problem(str(path), f"names its own concept {label!r} ({form!r})"))
        if path in heldout_paths:
            continue
        concept = stats[label]
        concept.words += n_words
        concept.writers[writer_of(path)] += 1
        if scenario is None:
            concept.unpaired += 1
        else:
            concept.paired += 1
    problems += near_duplicates(texts)
    for name in expect or []:
        have = stats[name].positives if name in stats else 0
        if have < min_positives:
            problems.append(Problem(str(corpus_dir), f"concept {name!r} has {have} positive stories, expected at least {min_positives}"))
    return dict(sorted(stats.items())), problems


FORMS_SET = "heldout_forms"  # the second development set: texts in the forms a served model reads
NGRAM = 5
NEAR_DUPLICATE_JACCARD = 0.05  # shipped corpus: unrelated stories reach 0.013 at most, framings of one scenario 0.09 or more


def word_ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9']+", text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def overlapping_pairs(texts: list[str], n: int = NGRAM) -> dict[tuple[int, int], float]:
    """Word n-gram Jaccard overlap of every pair (a, b), a < b, that shares at least one n-gram."""
    grams = [word_ngrams(text, n) for text in texts]
    index: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, gram_set in enumerate(grams):
        for gram in gram_set:
            index[gram].append(i)
    shared: Counter[tuple[int, int]] = Counter()
    for holders in index.values():
        for a, b in combinations(holders, 2):
            shared[(a, b)] += 1
    return {(a, b): overlap / len(grams[a] | grams[b]) for (a, b), overlap in sorted(shared.items())}


def near_duplicates(texts: list[tuple[Path, str, str | None]], threshold: float = NEAR_DUPLICATE_JACCARD) -> list[Problem]:
    """Pairs whose word 5-gram Jaccard overlap exceeds `threshold`, except framings of the same paired scenario
    (they tell the same events by design). Training and held-out texts are checked against each other too."""
    problems = []
    for (a, b), jaccard in overlapping_pairs([text for _, text, _ in texts]).items():
        group = texts[a][2]
        if group is not None and group == texts[b][2]:
            continue
        if jaccard > threshold:
            problems.append(Problem(str(texts[b][0]), f"near-duplicate of {texts[a][0]} (word {NGRAM}-gram Jaccard {jaccard:.2f} > {threshold})"))
    return problems


def heldout_near_copies(
    training: list[tuple[Path, str]], heldout: list[tuple[Path, str]], threshold: float = NEAR_DUPLICATE_JACCARD
) -> list[tuple[Path, Path, float]]:
    """(held-out file, training file, Jaccard) for every held-out text above `threshold` against a training text:
    a near-copy (a word changed, a sentence added) in the test set reads as a held-out success it is not."""
    trained = [word_ngrams(text) for _, text in training]
    index: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, gram_set in enumerate(trained):
        for gram in gram_set:
            index[gram].append(i)
    copies = []
    for path, text in heldout:
        grams = word_ngrams(text)
        shared = Counter(i for gram in grams for i in index.get(gram, ()))
        for i, overlap in sorted(shared.items()):
            if (jaccard := overlap / len(grams | trained[i])) > threshold:
                copies.append((path, training[i][0], jaccard))
    return copies
