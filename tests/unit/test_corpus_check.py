"""`corpus check` finds every problem, each named by file."""

from __future__ import annotations

from amygdala_tl.corpus import check_corpus, names_own_concept

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
    stats, problems = check_corpus(tmp_path, expect=["calm", "joyful"], min_positives=2)
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
    stats, problems = check_corpus(tmp_path)
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
    _, problems = check_corpus(tmp_path)
    messages = [str(p) for p in problems]
    assert len([m for m in messages if "near-duplicate" in m or "same text" in m]) == 2, messages
    assert any(str(edited) in m and "original.txt" in m and "Jaccard" in m for m in messages)
    assert any(str(heldout_copy) in m and "unrelated.txt" in m for m in messages)  # held-out checked against training
    assert any(str(neutral_named) in m and "names its own concept" in m for m in messages)  # held-out is linted too


def test_texts_take_40_to_400_words_in_any_number_of_paragraphs_and_record_their_writer(tmp_path):
    """Chats, letters and dialogue scenes are training texts too (the corpus-scale issue); a file's name prefix is its writer."""
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
    stats, problems = check_corpus(tmp_path)
    flagged = {problem.path for problem in problems}
    for name, (_, fine) in cases.items():
        assert (str(tmp_path / name) not in flagged) == fine, name
    assert dict(stats["calm"].writers) == {"t1": 1, "t2": 1, "t4": 1, "s0": 1}  # training texts only; no prefix: s0
