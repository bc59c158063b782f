"""Corpus loading and validation: positives/negatives, and every user error named before the model loads."""

from __future__ import annotations

import pytest

from amygdala_tl.corpus import BASELINE, CorpusWarning, load_corpus, select_concepts
from amygdala_tl.errors import UserError

from ..conftest import write

STORY = "word " * 90


def test_both_story_layouts_and_paired_labels(tmp_path):
    write(tmp_path / "stories" / "calm.txt", "calm one")
    write(tmp_path / "stories" / "calm" / "b.txt", "calm two")
    write(tmp_path / "stories" / "afraid" / "a.txt", "afraid one")
    write(tmp_path / "paired" / "commute" / "baseline.txt", "the commute")
    write(tmp_path / "paired" / "commute" / "afraid.txt", "the commute, afraid")
    corpus = load_corpus(tmp_path)
    labels = [s.label for s in corpus.stories]
    assert sorted(labels) == sorted(["calm", "calm", "afraid", BASELINE, "afraid"])
    assert corpus.concepts == ["afraid", "calm"]
    pos = corpus.positive_mask("afraid")
    assert pos.sum() == 2 and (~corpus.positive_mask("afraid")).sum() == 3  # calm x2 + baseline
    baseline_index = labels.index(BASELINE)
    assert all((~corpus.positive_mask(c))[baseline_index] for c in corpus.concepts)
    assert corpus.membership(corpus.concepts).sum(0).tolist() == [0 if l == BASELINE else 1 for l in labels]


@pytest.mark.parametrize(
    "setup, fragment",
    [
        (lambda root: None, "corpus directory not found"),
        (lambda root: (root / "x").mkdir(parents=True), "neither stories/ nor paired/"),
        (
            lambda root: (write(root / "stories" / "calm" / "a.txt", "same words"), write(root / "stories" / "afraid" / "b.txt", "same words")),
            "afraid/b.txt",
        ),
        (lambda root: write(root / "stories" / "Bad-Name" / "a.txt", "x"), "Bad-Name"),
        (lambda root: write(root / "stories" / "baseline.txt", "x"), "reserved"),
    ],
)
def test_validation_errors_name_the_path(tmp_path, setup, fragment):
    root = tmp_path / "corpus"
    setup(root)
    with pytest.raises(UserError, match=fragment.replace("/", ".")):
        load_corpus(root)


def test_shared_text_error_names_both_files(tmp_path):
    a = write(tmp_path / "stories" / "calm" / "a.txt", "identical")
    b = write(tmp_path / "paired" / "s" / "baseline.txt", "identical")
    with pytest.raises(UserError) as info:
        load_corpus(tmp_path)
    assert str(a) in str(info.value) and str(b) in str(info.value)


def test_non_utf8_is_an_error_naming_the_file(tmp_path):
    bad = tmp_path / "stories" / "calm" / "latin1.txt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(UserError, match="latin1.txt"):
        load_corpus(tmp_path)


def test_empty_file_is_skipped_with_a_warning(tmp_path):
    write(tmp_path / "stories" / "calm" / "a.txt", "calm one")
    empty = write(tmp_path / "stories" / "calm" / "empty.txt", "  \n")
    with pytest.warns(CorpusWarning, match="empty.txt"):
        corpus = load_corpus(tmp_path)
    assert len(corpus.stories) == 1 and corpus.skipped == [empty]


def test_min_positives_selection(tmp_path):
    write(tmp_path / "stories" / "calm" / "a.txt", "calm one")
    write(tmp_path / "stories" / "calm" / "b.txt", "calm two")
    write(tmp_path / "stories" / "afraid" / "a.txt", "afraid one")
    corpus = load_corpus(tmp_path)
    with pytest.warns(CorpusWarning, match="'afraid' left out: 1 of the 2 positive stories") as caught:
        assert select_concepts(corpus, 2) == ["calm"]
    assert len(caught) == 1
    with pytest.raises(UserError, match="at least 3 positive"):
        select_concepts(corpus, 3)


def unblock_later(fifo, delay: float = 2.0) -> None:
    """Old code blocks opening a FIFO for reading: a writer that comes and goes ends that with EOF instead of a hang."""
    import os
    import threading
    import time

    def writer() -> None:
        time.sleep(delay)
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # nobody is reading it: nothing to unblock
            pass

    threading.Thread(target=writer, daemon=True).start()


def test_only_regular_files_of_bounded_size_are_read(tmp_path, monkeypatch):
    """A FIFO named *.txt hung `extract`; a symlink to a device reads it (/dev/zero: until memory runs out)."""
    import os

    from amygdala_tl.corpus import check_corpus, load

    write(tmp_path / "stories" / "calm" / "a.txt", "calm one")
    write(tmp_path / "stories" / "afraid" / "a.txt", "afraid one")
    fifo = tmp_path / "stories" / "calm" / "pipe.txt"
    os.mkfifo(fifo)
    for _ in range(2):  # load_corpus, then corpus check
        unblock_later(fifo)
    with pytest.raises(UserError, match="not a regular file.*pipe.txt"):
        load_corpus(tmp_path)
    problems = check_corpus(tmp_path).problems
    assert [p.message.split(" (")[0] for p in problems if p.path == str(fifo)] == ["not a regular file"]
    fifo.unlink()
    device = tmp_path / "stories" / "afraid.txt"
    device.symlink_to("/dev/null")
    with pytest.raises(UserError, match="not a regular file.*afraid.txt"):
        load_corpus(tmp_path)
    device.unlink()
    monkeypatch.setattr(load, "MAX_TEXT_BYTES", 64)
    write(tmp_path / "stories" / "calm" / "long.txt", "calm " * 13)
    with pytest.raises(UserError, match="too large.*long.txt"):
        load_corpus(tmp_path)


def test_hidden_folders_are_skipped_with_a_warning(tmp_path):
    """Jupyter leaves .ipynb_checkpoints/ (holding calm-checkpoint.txt) wherever a notebook edited a story."""
    from amygdala_tl.corpus import check_corpus, load_heldout

    for sub in ("stories", "stories/calm", "paired", "heldout"):
        write(tmp_path / sub / ".ipynb_checkpoints" / "calm-checkpoint.txt", f"a stale copy in {sub}")
    write(tmp_path / "stories" / "calm" / "a.txt", "calm one")
    write(tmp_path / "stories" / "afraid" / "a.txt", "afraid one")
    write(tmp_path / "paired" / "commute" / "baseline.txt", "the commute")
    write(tmp_path / "heldout" / "calm" / "a.txt", "calm held out")
    with pytest.warns(CorpusWarning, match="hidden folder skipped") as caught:
        corpus = load_corpus(tmp_path)
    assert sorted(str(w.message).rsplit(" ", 1)[1] for w in caught) == sorted(
        str(tmp_path / sub / ".ipynb_checkpoints") for sub in ("stories", "paired")
    )
    assert sorted(s.label for s in corpus.stories) == ["afraid", BASELINE, "calm"]
    with pytest.warns(CorpusWarning, match="hidden folder skipped"):
        assert [s.label for s in load_heldout(tmp_path / "heldout")] == ["calm"]
    with pytest.warns(CorpusWarning, match="hidden folder skipped"):
        problems = check_corpus(tmp_path).problems
    assert not [p for p in problems if ".ipynb_checkpoints" in p.path]
