"""`corpus check`: lint the corpus like code, reporting every problem (not just the first) by file."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

from ..errors import UserError
from .concepts import names_own_concept
from .load import BASELINE, NEUTRAL, NEUTRAL_DIR, heldout_files, neutral_files, paired_files, read_story, story_files, text_sha256
from .manifest import MANIFEST, load_manifest, manifest_problems

MIN_WORDS, MAX_WORDS = 40, 400  # a chat or a postcard is short, a dialogue scene long
UNRECORDED = "unrecorded"  # the writer or form of a text the manifest does not list


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
    forms: Counter = field(default_factory=Counter)  # form -> positives

    @property
    def positives(self) -> int:
        return self.unpaired + self.paired

    @property
    def mean_words(self) -> float:
        return self.words / self.positives if self.positives else 0.0


@dataclass
class CorpusCheck:
    """What `corpus check` found: per-concept counts of the training texts, the neutral texts and the paired
    scenarios (name -> framings), and every problem."""

    stats: dict[str, ConceptStats]
    problems: list[Problem]
    neutral: int = 0
    scenarios: dict[str, int] = field(default_factory=dict)
    writers: Counter = field(default_factory=Counter)  # writer id -> training texts


def check_corpus(corpus_dir: Path, expect: list[str] | None = None, min_positives: int = 1) -> CorpusCheck:
    """Counts of the training texts, and every problem found under corpus_dir (the manifest and the development
    sets included)."""
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise UserError(f"corpus directory not found: {corpus_dir}")
    problems: list[Problem] = []

    def report(path, error) -> None:
        problems.append(Problem(str(path), str(error).split(":")[0]))

    def listed(sub: str, lister) -> list[tuple[Path, str, str | None]]:
        return list(lister(corpus_dir / sub, on_error=report)) if (corpus_dir / sub).is_dir() else []

    training = listed("stories", story_files) + listed("paired", paired_files) + listed(NEUTRAL_DIR, lambda d, on_error: neutral_files(d))
    heldout = listed("heldout", heldout_files) + listed(FORMS_SET, heldout_files)
    try:
        manifest = load_manifest(corpus_dir)
    except UserError as error:  # a malformed manifest is one more problem: the rest is still checked
        problems.append(Problem(str(corpus_dir / MANIFEST), str(error)))
        manifest = None
    if manifest is not None:
        problems += [
            Problem(str(corpus_dir / path), message)
            for path, message in manifest_problems(corpus_dir, manifest, [p for p, _, _ in training + heldout])
        ]
    result = CorpusCheck(defaultdict(ConceptStats), problems)
    seen: dict[str, Path] = {}
    texts: list[tuple[Path, str, str | None]] = []  # (file, text, overlap group) for the near-duplicate check
    scenarios_with_baseline = {scenario for _, label, scenario in training if label == BASELINE and scenario}
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
        entry = manifest.of(corpus_dir, path) if manifest is not None else None
        if path not in heldout_paths:
            result.writers[entry.writer if entry else UNRECORDED] += 1
        if label in (BASELINE, NEUTRAL):
            result.neutral += path not in heldout_paths
            continue
        if scenario is not None and scenario not in scenarios_with_baseline:
            problems.append(Problem(str(path), f"paired framing but scenario {scenario!r} has no baseline.txt"))
        if form := names_own_concept(label, text):
            problems.append(Problem(str(path), f"names its own concept {label!r} ({form!r})"))
        if path in heldout_paths:
            continue
        concept = result.stats[label]
        concept.words += n_words
        concept.writers[entry.writer if entry else UNRECORDED] += 1
        concept.forms[entry.form if entry else UNRECORDED] += 1
        if scenario is None:
            concept.unpaired += 1
        else:
            concept.paired += 1
            result.scenarios[scenario] = result.scenarios.get(scenario, 0) + 1
    problems += near_duplicates(texts)
    for name in expect or []:
        have = result.stats[name].positives if name in result.stats else 0
        if have < min_positives:
            problems.append(Problem(str(corpus_dir), f"concept {name!r} has {have} positive stories, expected at least {min_positives}"))
    result.stats = dict(sorted(result.stats.items()))
    return result


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
