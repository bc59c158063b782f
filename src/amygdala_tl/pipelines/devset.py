"""The development test set (corpus/heldout, never trained on): where it is, its checks before any model loads,
its fingerprint (so `report` refuses an edited set), and its pooled activations and labels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from ..corpus import NEUTRAL, Corpus, Story, load_heldout
from ..corpus.check import NEAR_DUPLICATE_JACCARD, NGRAM, heldout_near_copies
from ..errors import UserError
from ..quality.report import DevSet


def heldout_dir_of(corpus_dir: Path | None, given: Path | None) -> Path | None:
    """The development test set: --heldout, else <corpus>/heldout when it exists."""
    if given is not None:
        return Path(given)
    default = Path(corpus_dir) / "heldout" if corpus_dir is not None else None
    return default if default is not None and default.is_dir() else None


def load_dev_stories(directory: Path, corpus: Corpus, concepts: list[str], log: Callable[[str], None]) -> list[Story] | None:
    """The development test set, checked before any model loads: never a training text nor a near-copy of one
    (word 5-gram Jaccard above the corpus check's threshold), at least one exported concept to score (else None: the report falls back to cross-validation, and says why)."""
    stories = load_heldout(directory)
    training = {story.sha256: story.path for story in corpus.stories}
    if leaked := next((story for story in stories if story.sha256 in training), None):
        raise UserError(
            f"held-out text {leaked.path} is the same text as training story {training[leaked.sha256]}: the test set must never be trained on"
        )
    if copies := heldout_near_copies([(s.path, s.text) for s in corpus.stories], [(s.path, s.text) for s in stories]):
        held, trained, jaccard = copies[0]
        more = f" (and {len(copies) - 1} more such pairs)" if len(copies) > 1 else ""
        raise UserError(
            f"held-out text {held} is a near-copy of training story {trained} (word {NGRAM}-gram Jaccard {jaccard:.2f} > "
            f"{NEAR_DUPLICATE_JACCARD}){more}: the test set must never be trained on; rewrite or remove one of them"
        )
    covered = sorted({s.label for s in stories if s.label != NEUTRAL})
    if skipped := [c for c in covered if c not in concepts]:
        log(f"development test set: {', '.join(skipped)} not exported; their texts are read as neutral")
    if not any(s.label in concepts for s in stories):
        log(f"development test set {directory} has no text of an exported concept: the report leads with cross-validation")
        return None
    return stories


def dev_labels(stories: list[Story], concepts: list[str]) -> Tensor:
    """Each evaluation text's row in `concepts`, -1 for neutral texts and concepts not exported."""
    return torch.tensor([concepts.index(s.label) if s.label in concepts else -1 for s in stories])


def dev_set(stories: list[Story], directory: Path, concepts: list[str], read: Callable[[list[str]], Tensor]) -> DevSet:
    """The development test set's pooled activations ([n_target_layers, n_dev, d_model], from `read`) and labels."""
    return DevSet(read([s.text for s in stories]), dev_labels(stories, concepts), str(Path(directory).resolve()))
