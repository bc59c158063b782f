"""The story corpus: the concept vocabulary, loading and validation, and the lint (`corpus check`)."""

from .check import check_corpus
from .concepts import CONCEPTS, SAFE_NAME, names_own_concept
from .load import (
    BASELINE,
    DEFAULT_CORPUS,
    DEFAULT_HELDOUT,
    NEUTRAL,
    Corpus,
    CorpusWarning,
    Story,
    load_corpus,
    load_heldout,
    read_lines,
    read_story,
    select_concepts,
    stories_fingerprint,
    text_sha256,
)

__all__ = [
    "BASELINE",
    "CONCEPTS",
    "DEFAULT_CORPUS",
    "DEFAULT_HELDOUT",
    "NEUTRAL",
    "SAFE_NAME",
    "Corpus",
    "CorpusWarning",
    "Story",
    "check_corpus",
    "load_corpus",
    "load_heldout",
    "names_own_concept",
    "read_lines",
    "read_story",
    "select_concepts",
    "stories_fingerprint",
    "text_sha256",
]
