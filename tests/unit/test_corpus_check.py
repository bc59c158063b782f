"""`corpus check` finds every problem, each named by file."""

from __future__ import annotations

import pytest

from amygdala_tl.corpus import check_corpus, load_corpus, names_own_concept
from amygdala_tl.errors import UserError

from ..conftest import write

GOOD = "She walked along the quiet road as the light changed over the fields and the hills. " * 6  # 96 words
VOCAB = (
    "road light field hill river stone bread window door table chair lamp garden morning evening winter "
    "summer kettle letter coat boot ladder harbour market bridge station orchard meadow cloud"
).split()


def distinct(seed: int, n_words: int = 96) -> str:
    """A story-length text sharing (almost) no word 5-grams with any other seed's text."""
    import random

    rng = random.Random(seed)
    return " ".join(rng.choice(VOCAB) for _ in range(n_words)) + "."


def test_every_problem_is_reported_with_its_file(tmp_path):
    ok = write(tmp_path / "stories" / "calm" / "ok.txt", GOOD)
    named = write(tmp_path / "stories" / "anxious" / "named.txt", distinct(3) + " Her anxiety rose.")
    short = write(tmp_path / "stories" / "calm" / "short.txt", "Too short to count.")
    empty = write(tmp_path / "stories" / "calm" / "empty.txt", "")
    copy = write(tmp_path / "stories" / "afraid" / "copy.txt", GOOD)
    orphan = write(tmp_path / "paired" / "no_baseline" / "calm.txt", distinct(1))
    bad = tmp_path / "stories" / "calm" / "latin1.txt"
    bad.write_bytes(("caf\xe9 " * 90).encode("latin-1"))
    checked = check_corpus(tmp_path, expect=["calm", "joyful"], min_positives=2)
    stats, problems = checked.stats, checked.problems
    by_path = {}
    for problem in problems:
        by_path.setdefault(problem.path, []).append(problem.message)
    assert any("anxiety" in m for m in by_path[str(named)])
    assert any("4 words" in m for m in by_path[str(short)])
    assert by_path[str(empty)] == ["empty file"]
    duplicate = by_path.get(str(ok), []) + by_path.get(str(copy), [])  # reported on the later file, naming the earlier
    assert any("same text as" in m and (str(copy) in m or str(ok) in m) for m in duplicate)
    assert any("no baseline" in m for m in by_path[str(orphan)])
    assert any("UTF-8" in m for m in by_path[str(bad)])
    assert any("'joyful' has 0" in m for m in by_path[str(tmp_path)])
    assert stats["calm"].unpaired == 2 and stats["calm"].paired == 1  # ok.txt, short.txt; the orphan framing


def test_forbidden_forms_are_whole_words():
    assert names_own_concept("numb", "a number of stones") is None
    assert names_own_concept("numb", "the numbness spread") == "numbness"
    assert names_own_concept("in_flow", "she was in flow") == "in flow"
    assert names_own_concept("proud", "his pride showed") == "pride"
    assert names_own_concept("calm", "Calmly, he waited") == "Calmly"
    assert names_own_concept("staying_with", "staying-with the pain") is not None


def test_a_bad_concept_name_does_not_hide_the_other_stories(tmp_path):
    write(tmp_path / "stories" / "Bad-Name" / "a.txt", GOOD)
    write(tmp_path / "stories" / "calm" / "a.txt", distinct(2))
    checked = check_corpus(tmp_path)
    stats, problems = checked.stats, checked.problems
    assert stats["calm"].unpaired == 1
    assert [p.path for p in problems] == [str(tmp_path / "stories" / "Bad-Name")]


def test_near_duplicates_are_errors_naming_both_files_except_within_a_scenario(tmp_path):
    original = distinct(10, 120)
    write(tmp_path / "stories" / "calm" / "original.txt", original)
    words = original.split()
    words[40:43] = ["something", "else", "entirely"]  # a light edit keeps most 5-grams
    edited = write(tmp_path / "stories" / "serene" / "edited.txt", " ".join(words))
    write(tmp_path / "stories" / "joyful" / "unrelated.txt", distinct(11))
    baseline = write(tmp_path / "paired" / "walk" / "baseline.txt", distinct(12, 120))
    write(tmp_path / "paired" / "walk" / "calm.txt", baseline.read_text() + " and the light held")  # same events: allowed
    heldout_copy = write(tmp_path / "heldout" / "joyful" / "h.txt", distinct(11))
    neutral_named = write(tmp_path / "heldout" / "anxious" / "named.txt", distinct(13) + " Anxiety.")
    problems = check_corpus(tmp_path).problems
    messages = [str(p) for p in problems]
    assert len([m for m in messages if "near-duplicate" in m or "same text" in m]) == 2, messages
    assert any(str(edited) in m and "original.txt" in m and "Jaccard" in m for m in messages)
    assert any(str(heldout_copy) in m and "unrelated.txt" in m for m in messages)  # held-out checked against training
    assert any(str(neutral_named) in m and "names its own concept" in m for m in messages)  # held-out is linted too


def test_texts_take_40_to_400_words_in_any_number_of_paragraphs(tmp_path):
    """Chats, letters and dialogue scenes are training texts too (the corpus-scale issue)."""
    cases = {
        "stories/calm/t1_short.txt": (distinct(2, 45), True),
        "stories/calm/t2_too_short.txt": (distinct(3, 39), False),
        "stories/calm/t4_dialogue.txt": (distinct(4, 170) + "\n\n" + distinct(5, 170), True),
        "stories/calm/too_long.txt": (distinct(6, 405), False),
        "heldout_forms/calm/f1_chat.txt": (distinct(7, 45) + "\n" + distinct(8, 20), True),
        "heldout/calm/h1_two.txt": (distinct(9, 60) + "\n\n" + distinct(10, 60), True),
    }
    for name, (text, _) in cases.items():
        write(tmp_path / name, text)
    checked = check_corpus(tmp_path)
    flagged = {problem.path for problem in checked.problems}
    for name, (_, fine) in cases.items():
        assert (str(tmp_path / name) not in flagged) == fine, name
    assert dict(checked.stats["calm"].writers) == {"unrecorded": 4}  # no manifest: training texts only


WRITERS_TSV = "writer\tset\tbrief\nw1\ttraining\tchats\nw2\ttraining\tletters\nd1\theldout\tprose dev\n"


def manifest_corpus(tmp_path, rows: list[str]):
    write(tmp_path / "stories" / "calm" / "w1_a.txt", distinct(1))
    write(tmp_path / "stories" / "calm" / "w2_b.txt", distinct(2))
    write(tmp_path / "paired" / "walk" / "baseline.txt", distinct(3))
    write(tmp_path / "paired" / "walk" / "calm.txt", distinct(4))
    write(tmp_path / "neutral" / "w2_timetable.txt", distinct(5))
    write(tmp_path / "heldout" / "calm" / "d1_c.txt", distinct(6))
    (tmp_path / "writers.tsv").write_text(WRITERS_TSV)
    (tmp_path / "manifest.tsv").write_text("path\twriter\tform\n" + "".join(row + "\n" for row in rows))
    return tmp_path


FULL = [
    "stories/calm/w1_a.txt\tw1\tchat",
    "stories/calm/w2_b.txt\tw2\temail_letter",
    "paired/walk/baseline.txt\tw1\tprose",
    "paired/walk/calm.txt\tw1\tprose",
    "neutral/w2_timetable.txt\tw2\tnotes",
    "heldout/calm/d1_c.txt\td1\tprose",
]


def test_the_manifest_gives_each_text_its_writer_and_form_and_check_counts_them(tmp_path):
    checked = check_corpus(manifest_corpus(tmp_path, FULL))
    assert checked.problems == []
    assert dict(checked.stats["calm"].writers) == {"w1": 2, "w2": 1}  # the held-out text is not a training positive
    assert dict(checked.stats["calm"].forms) == {"chat": 1, "email_letter": 1, "prose": 1}
    assert checked.neutral == 2 and checked.scenarios == {"walk": 1} and dict(checked.writers) == {"w1": 3, "w2": 2}
    corpus = load_corpus(tmp_path)
    assert corpus.writers_recorded and {s.path.name: s.writer for s in corpus.stories}["w2_timetable.txt"] == "w2"
    assert sum(corpus.neutral_mask().tolist()) == 2  # the neutral text is a negative of every concept, like a baseline


@pytest.mark.parametrize(
    ("rows", "path", "message"),
    [
        (FULL[1:], "stories/calm/w1_a.txt", "not in manifest.tsv"),
        (FULL + ["stories/calm/gone.txt\tw1\tchat"], "stories/calm/gone.txt", "not a text of the corpus"),
        ([r.replace("d1\tprose", "w1\tprose") for r in FULL], "heldout/calm/d1_c.txt", "writes for the training set"),
        ([r.replace("w1_a.txt\tw1", "w1_a.txt\tw2") for r in FULL], "stories/calm/w1_a.txt", "prefix says writer 'w1'"),
    ],
)
def test_check_names_each_manifest_problem_by_file(tmp_path, rows, path, message):
    problems = check_corpus(manifest_corpus(tmp_path, rows)).problems
    assert {p.path for p in problems} == {str(tmp_path / path)} and any(message in p.message for p in problems), problems


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (FULL + ["stories/calm/w1_a.txt\tw1\tchat"], "listed twice"),
        ([FULL[0].replace("chat", "haiku")] + FULL[1:], "form 'haiku' is not one of"),
        ([FULL[0].replace("w1\tchat", "w9\tchat")] + FULL[1:], "writer 'w9' is not in writers.tsv"),
        (["stories/calm/w1_a.txt\tw1"], "expected 3 tab-separated values"),
    ],
)
def test_a_malformed_manifest_is_one_error_naming_it(tmp_path, rows, message):
    corpus = manifest_corpus(tmp_path, rows)
    with pytest.raises(UserError, match=message):
        load_corpus(corpus)
    checked = check_corpus(corpus)  # corpus check lists it among the problems and checks the rest
    assert [p.path for p in checked.problems] == [str(corpus / "manifest.tsv")] and message.split("'")[0] in checked.problems[0].message
    assert checked.stats["calm"].positives == 3


def test_a_manifest_as_editors_leave_it_reads_the_same(tmp_path):
    """A BOM, CRLF line ends, spaces around values, './' and backslash paths and blank lines change nothing."""
    rows = [r.replace("stories/calm/w1_a.txt", ".\\stories\\calm\\w1_a.txt").replace("\tw2\t", " \t w2 \t ") for r in FULL]
    corpus = manifest_corpus(tmp_path, rows)
    text = (corpus / "manifest.tsv").read_text()
    (corpus / "manifest.tsv").write_bytes(b"\xef\xbb\xbf" + (text.replace("\n", "\r\n") + "\r\n\r\n").encode())
    checked = check_corpus(corpus)
    assert checked.problems == [] and dict(checked.stats["calm"].writers) == {"w1": 2, "w2": 1}


def test_extract_refuses_to_train_on_a_development_set_writers_text_and_writers_tsv_lists_a_writer_once(tmp_path):
    corpus = manifest_corpus(tmp_path, [r.replace("w1_a.txt\tw1", "w1_a.txt\td1") for r in FULL])
    with pytest.raises(UserError, match="its writer 'd1' writes for the heldout set"):
        load_corpus(corpus)
    (corpus / "writers.tsv").write_text(WRITERS_TSV + "w1\ttraining\tagain\n")
    assert "writer 'w1' is listed twice" in check_corpus(corpus).problems[0].message


def test_stories_dir_beside_a_manifest_says_what_it_does_not_read(tmp_path):
    corpus = manifest_corpus(tmp_path, FULL)
    with pytest.warns(UserWarning, match="read no manifest nor neutral/: pass --corpus"):
        loaded = load_corpus(stories_dir=corpus / "stories")
    assert not loaded.writers_recorded
