"""Evaluation checked against independent computations: cross-validation groups and folds, cv_evaluation and
evaluate's random baseline recomputed by hand, the near-duplicate check (corpus and held-out set), the fp16
rows the server reads, and the layer count preflight reads from a config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from amygdala_tl.corpus import Corpus, Story
from amygdala_tl.errors import UserError
from amygdala_tl.quality.heldout import cv_evaluation, cv_folds, writer_folds

from ..conftest import CORPUS, copy_starter_corpus, write

# ---- cross-validation: a paired scenario is one group, and no fold splits a group ----------------


def scenario_corpus(n_scenarios: int = 6, n_unpaired: int = 4, concepts: tuple[str, ...] = ("afraid", "calm", "joyful")) -> Corpus:
    """Unpaired stories of every concept, then scenarios of a baseline and one framing per concept."""
    stories = [Story(f"{c} story {i}", Path(f"stories/{c}/{i}.txt"), c) for c in concepts for i in range(n_unpaired)]
    for s in range(n_scenarios):
        stories.append(Story(f"scenario {s} baseline", Path(f"paired/s{s}/baseline.txt"), "baseline", f"s{s}"))
        stories += [Story(f"scenario {s} as {c}", Path(f"paired/s{s}/{c}.txt"), c, f"s{s}") for c in concepts]
    return Corpus(stories)


def test_groups_put_a_paired_scenario_together_and_every_unpaired_story_alone():
    corpus = scenario_corpus(n_scenarios=2, n_unpaired=2)
    groups = corpus.groups()
    assert len(groups) == len(corpus.stories)
    by_scenario: dict[str | None, set[int]] = {}
    for story, group in zip(corpus.stories, groups):
        by_scenario.setdefault(story.scenario, set()).add(group)
    assert len(by_scenario["s0"]) == 1 and len(by_scenario["s1"]) == 1  # baseline and framings: one group
    assert by_scenario["s0"] != by_scenario["s1"]
    unpaired = [g for story, g in zip(corpus.stories, groups) if story.scenario is None]
    assert len(set(unpaired)) == len(unpaired) == 6  # every unpaired story its own group
    assert not set(unpaired) & (by_scenario["s0"] | by_scenario["s1"])


@pytest.mark.parametrize("seed", range(4))
def test_cv_folds_partition_the_texts_and_never_split_a_scenario(seed):
    corpus = scenario_corpus()
    membership = corpus.membership(corpus.concepts)
    folds = cv_folds(membership, corpus.groups(), seed=seed)
    assert len(folds) > 1
    fold_of = {}
    for f, held in enumerate(folds):
        for t in held.tolist():
            assert t not in fold_of  # each text held out once
            fold_of[t] = f
    assert sorted(fold_of) == list(range(len(corpus.stories)))
    for scenario in {s.scenario for s in corpus.stories if s.scenario}:
        members = [t for t, s in enumerate(corpus.stories) if s.scenario == scenario]
        assert len({fold_of[t] for t in members}) == 1, f"scenario {scenario} split across folds"
    for held in folds:  # every concept keeps a training story
        assert (np.delete(membership.numpy(), held, axis=1).sum(-1) > 0).all()


def test_groups_follow_the_recorded_writers_and_join_a_scenario_that_spans_two():
    """A writer's texts share one group (leave-one-writer-out), and a scenario written by two writers joins them."""
    stories = [
        Story("a1", Path("stories/calm/a1.txt"), "calm", writer="w1"),
        Story("a2", Path("stories/afraid/a2.txt"), "afraid", writer="w1"),
        Story("b1", Path("stories/calm/b1.txt"), "calm", writer="w2"),
        Story("c1", Path("stories/calm/c1.txt"), "calm", writer="w3"),
        Story("base", Path("paired/s/baseline.txt"), "baseline", "s", writer="w3"),
        Story("framed", Path("paired/s/afraid.txt"), "afraid", "s", writer="w4"),
        Story("d1", Path("stories/afraid/d1.txt"), "afraid", writer="w4"),
    ]
    corpus = Corpus(stories)
    assert corpus.writers_recorded
    assert corpus.groups() == [0, 0, 1, 2, 2, 2, 2]  # w3 and w4 share the scenario s
    assert not Corpus(stories + [Story("e", Path("stories/calm/e.txt"), "calm")]).writers_recorded


def test_cv_groups_by_writer_unless_one_writer_holds_all_of_a_concept():
    """Leave-one-writer-out needs every concept written by two writers' groups at least; else extract falls
    back to scenario groups and says which concept stopped it."""
    from amygdala_tl.pipelines.setup import cv_grouping

    stories = [Story(f"{c} {w}", Path(f"stories/{c}/{w}.txt"), c, writer=w) for c in ("calm", "afraid") for w in ("w1", "w2", "w3")]
    stories += [Story(f"neutral {w}", Path(f"neutral/{w}.txt"), "baseline", writer=w) for w in ("w1", "w2", "w3")]
    said: list[str] = []
    groups, why_not = cv_grouping(Corpus(stories), ["afraid", "calm"], said.append)
    assert why_not is None and len(set(groups)) == 3 and said == []
    lonely = [Story(s.text, s.path, s.label, writer="w1" if s.label == "calm" else s.writer) for s in stories]
    groups, why_not = cv_grouping(Corpus(lonely), ["afraid", "calm"], said.append)
    assert why_not == "every positive of 'calm' comes from one writer" and len(set(groups)) == len(lonely)  # every text alone again
    assert len(said) == 1 and "'calm' comes from one writer" in said[0] and "add texts of it by another writer" in said[0]
    unrecorded = [Story(s.text, s.path, s.label) for s in stories]
    assert cv_grouping(Corpus(unrecorded), ["afraid", "calm"], said.append)[1] == "the corpus manifest does not record every text's writer"
    assert len(said) == 1  # no writers recorded: nothing to warn about


def hand_scores_over_folds(x, folds, directions_of, n_concepts):
    """Concatenated per-fold z-scores: each fold's raw scores (fp32 hidden states . fp16 rows, the exported
    values) standardized over that fold alone; `directions_of(kept)` gives the unit rows learned on `kept`."""
    z = np.empty((x.shape[0], n_concepts))
    for held in folds:
        kept = np.setdiff1d(np.arange(x.shape[0]), held)
        served = torch.from_numpy(directions_of(kept)).float().half().float()
        raw = (torch.from_numpy(x[held]).float() @ served.T).double().numpy()
        z[held] = (raw - raw.mean(0)) / raw.std(0, ddof=1)
    return z


def hand_metrics(z, labels, n_concepts):
    aurocs = {c: roc_auc_score(labels == c, z[:, c]) for c in range(n_concepts)}
    predicted = z.argmax(1)
    labelled = labels >= 0
    top1 = {c: float((predicted[labels == c] == c).mean()) for c in range(n_concepts)}
    return float(np.mean(list(aurocs.values()))), float((predicted[labelled] == labels[labelled]).mean()), aurocs, top1


def cv_data(seed=0, d=16, n_per_concept=12, n_baselines=12, n_concepts=4):
    """Concepts with means of different sizes (so each concept's raw scores carry its own offset) and noise."""
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(n_concepts, d, generator=generator) * torch.linspace(0.5, 2.0, n_concepts)[:, None]
    shared = 3.0 * torch.randn(d, generator=generator)
    rows, labels = [], []
    for c in range(n_concepts):
        rows.append(torch.randn(n_per_concept, d, generator=generator) * 1.5 + means[c] + shared)
        labels += [c] * n_per_concept
    rows.append(torch.randn(n_baselines, d, generator=generator) * 1.5 + shared)
    labels += [-1] * n_baselines
    labels_t = torch.tensor(labels)
    return torch.cat(rows), torch.stack([labels_t == c for c in range(n_concepts)]), labels_t


@pytest.mark.parametrize("seed", range(3))
def test_cv_evaluation_equals_a_hand_computation(seed):
    """Diff-of-means refit without each fold, fp16 rows, raw dot products of the held-out texts, each concept's
    column z-scored over the held-out fold itself (never with training statistics), AUROC / top-1 over every
    text; the random floor the same way from unit Gaussian rows (seeds 0-4)."""
    acts, membership, labels = cv_data(seed)
    concepts = [f"c{c}" for c in range(membership.shape[0])]
    groups = list(range(acts.shape[0]))
    report = cv_evaluation(acts[None], [7], membership, concepts, groups, n_layers=10).to_json()
    folds = cv_folds(membership, groups)
    x, y, n_concepts = acts.double().numpy(), labels.numpy(), len(concepts)

    def diff_of_means_rows(kept):
        out = []
        for c in range(n_concepts):
            pos = kept[y[kept] == c]
            neg = kept[y[kept] != c]
            diff = x[pos].mean(0) - x[neg].mean(0)
            out.append(diff / np.linalg.norm(diff))
        return np.stack(out)

    z = hand_scores_over_folds(x, folds, diff_of_means_rows, n_concepts)
    mean_auroc, top1, aurocs, top1s = hand_metrics(z, y, n_concepts)
    block = report["layers"]["7"]
    assert report["n_splits"] == len(folds)
    assert block["mean_auroc"] == pytest.approx(mean_auroc, abs=1e-6)
    assert block["top1"] == pytest.approx(top1, abs=1e-6)
    for c in range(n_concepts):
        assert block["per_concept"][concepts[c]]["auroc"] == pytest.approx(aurocs[c], abs=1e-6)
        assert block["per_concept"][concepts[c]]["top1"] == pytest.approx(top1s[c], abs=1e-6)
    random_aurocs, random_top1s = [], []
    for random_seed in range(5):
        rows = torch.randn(n_concepts, x.shape[1], generator=torch.Generator().manual_seed(random_seed), dtype=torch.float64).numpy()
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        random_auroc, random_top1, _, _ = hand_metrics(hand_scores_over_folds(x, folds, lambda kept, rows=rows: rows, n_concepts), y, n_concepts)
        random_aurocs.append(random_auroc)
        random_top1s.append(random_top1)
    assert block["random_auroc"] == pytest.approx(np.mean(random_aurocs), abs=1e-6)
    assert block["random_top1"] == pytest.approx(np.mean(random_top1s), abs=1e-6)
    assert block["mean_auroc"] > block["random_auroc"] + 0.2


# ---- evaluate's random baseline: unit Gaussian rows, seeds 0-4, read like the learned rows ----------


def separable(seed=0, d=24, n_per_concept=10, n_neutral=10, n_concepts=5):
    generator = torch.Generator().manual_seed(seed)
    means = 6.0 * torch.nn.functional.normalize(torch.randn(n_concepts, d, generator=generator), dim=-1)
    rows = [torch.randn(n_per_concept, d, generator=generator) * 0.5 + means[c] for c in range(n_concepts)]
    rows.append(torch.randn(n_neutral, d, generator=generator) * 0.5)
    labels = torch.tensor([c for c in range(n_concepts) for _ in range(n_per_concept)] + [-1] * n_neutral)
    return torch.cat(rows), labels, torch.nn.functional.normalize(means, dim=-1)


def test_evaluate_random_baseline_equals_an_independent_computation_on_separable_data():
    from amygdala_tl.quality.evaluation import evaluate_served

    hidden, labels, vectors = separable()
    concepts = [f"c{c}" for c in range(vectors.shape[0])]
    result = evaluate_served(hidden, vectors, labels, concepts)
    assert result.mean_auroc == pytest.approx(1.0) and result.top1 == pytest.approx(1.0)  # the learned rows separate perfectly
    x, y = hidden.double().numpy(), labels.numpy()
    aurocs, top1s = [], []
    for seed in range(5):
        rows = torch.randn(len(concepts), hidden.shape[1], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        rows = (rows / rows.norm(dim=-1, keepdim=True)).float().half().float()  # unit rows, as fp16 as the server holds them
        raw = (torch.from_numpy(x).float() @ rows.T).double().numpy()
        z = (raw - raw.mean(0)) / raw.std(0, ddof=1)  # each concept's column over the evaluation texts
        mean_auroc, top1, _, _ = hand_metrics(z, y, len(concepts))
        aurocs.append(mean_auroc)
        top1s.append(top1)
    assert result.random_auroc == pytest.approx(np.mean(aurocs), abs=1e-6)
    assert result.random_top1 == pytest.approx(np.mean(top1s), abs=1e-6)
    assert 0.2 < result.random_auroc < 0.8  # chance, far from the learned 1.0


# ---- near-duplicates: word 5-gram Jaccard, by hand --------------------------------------------------


def words(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def pair_with_overlap(shared_run: int, first: str, second: str, n_words: int = 100) -> tuple[str, str, float]:
    """Two texts of n_words distinct words sharing one run of `shared_run` words: each has n_words - 4 5-grams,
    they share shared_run - 4, so Jaccard = (shared_run - 4) / (2 (n_words - 4) - (shared_run - 4))."""
    a = words(first, n_words)
    b = a[:shared_run] + words(second, n_words - shared_run)
    shared = shared_run - 4
    return " ".join(a), " ".join(b), shared / (2 * (n_words - 4) - shared)


def test_near_duplicate_threshold_against_a_hand_computed_jaccard(tmp_path):
    from amygdala_tl.corpus.check import check_corpus, heldout_near_copies, near_duplicates, overlapping_pairs

    near_a, near_b, near_jaccard = pair_with_overlap(18, "a", "b")  # 14 / 178
    far_a, far_b, far_jaccard = pair_with_overlap(10, "c", "d")  # 6 / 186
    assert near_jaccard == pytest.approx(14 / 178) and round(near_jaccard, 2) == 0.08
    assert far_jaccard == pytest.approx(6 / 186) and round(far_jaccard, 2) == 0.03
    grams = lambda text: {tuple(text.split()[i : i + 5]) for i in range(len(text.split()) - 4)}
    assert len(grams(near_a) & grams(near_b)) / len(grams(near_a) | grams(near_b)) == pytest.approx(near_jaccard)  # the set, by hand
    assert overlapping_pairs([near_a, near_b])[(0, 1)] == pytest.approx(near_jaccard, abs=1e-12)
    assert overlapping_pairs([far_a, far_b])[(0, 1)] == pytest.approx(far_jaccard, abs=1e-12)

    texts = [(Path("near_a.txt"), near_a, None), (Path("near_b.txt"), near_b, None)]
    texts += [(Path("far_a.txt"), far_a, None), (Path("far_b.txt"), far_b, None)]
    problems = near_duplicates(texts)
    assert [(p.path, p.message) for p in problems] == [("near_b.txt", "near-duplicate of near_a.txt (word 5-gram Jaccard 0.08 > 0.05)")]
    assert near_duplicates([(Path("a"), near_a, "paired/s"), (Path("b"), near_b, "paired/s")]) == []  # one scenario's framings

    # the held-out leak check: the same threshold, training against held-out only
    copies = heldout_near_copies(
        [(Path("train_near.txt"), near_a), (Path("train_far.txt"), far_a)], [(Path("h1.txt"), near_b), (Path("h2.txt"), far_b)]
    )
    assert copies == [(Path("h1.txt"), Path("train_near.txt"), pytest.approx(near_jaccard))]

    # and through `corpus check` (the texts' lengths are their own problems; only overlap is looked at here)
    write(tmp_path / "c" / "stories" / "calm" / "a.txt", near_a)
    write(tmp_path / "c" / "stories" / "afraid" / "b.txt", near_b)
    write(tmp_path / "c" / "stories" / "bored" / "c.txt", far_b)
    write(tmp_path / "c" / "stories" / "joyful" / "d.txt", far_a)
    problems = check_corpus(tmp_path / "c").problems
    assert [p.path for p in problems if "near-duplicate" in p.message] == [str(tmp_path / "c" / "stories" / "calm" / "a.txt")]


def test_the_indexed_overlap_equals_an_exact_all_pairs_computation_on_the_shipped_corpus():
    """The postings index scores only pairs sharing a 5-gram; a sparse text x 5-gram matrix product scores every
    pair of the shipped corpus (training and both development sets): the same pairs, the same Jaccards."""
    from scipy import sparse

    from amygdala_tl.corpus.check import overlapping_pairs, word_ngrams

    texts = [path.read_text(encoding="utf-8").strip() for path in sorted(CORPUS.rglob("*.txt"))]
    grams = [word_ngrams(text) for text in texts]
    vocabulary: dict[tuple[str, ...], int] = {}
    rows = [[vocabulary.setdefault(gram, len(vocabulary)) for gram in text_grams] for text_grams in grams]
    matrix = sparse.csr_matrix(
        (np.ones(sum(map(len, rows))), np.concatenate(rows), np.cumsum([0] + [len(r) for r in rows])), shape=(len(texts), len(vocabulary))
    )
    shared = sparse.triu(matrix @ matrix.T, k=1).tocoo()
    sizes = np.array([len(g) for g in grams])
    exact = {(int(a), int(b)): n / (sizes[a] + sizes[b] - n) for a, b, n in zip(shared.row, shared.col, shared.data)}
    indexed = overlapping_pairs(texts)
    assert len(texts) > 1000 and len(exact) > 1000
    assert indexed.keys() == exact.keys()
    assert max(abs(indexed[pair] - exact[pair]) for pair in exact) < 1e-12


def heldout_with_a_near_copy(root: Path, corpus_dir: Path) -> tuple[Path, Path]:
    """heldout/ with a genuinely separate story and one training story with a single word changed."""
    heldout = root / "heldout"
    original = next(iter(sorted((corpus_dir / "stories" / "calm").glob("*.txt"))))
    text = original.read_text(encoding="utf-8").split()
    text[len(text) // 2] = "zebra"
    copy = write(heldout / "calm" / "edited.txt", " ".join(text))
    separate = next(iter(sorted((CORPUS / "heldout" / "afraid").glob("*.txt"))))
    write(heldout / "afraid" / separate.name, separate.read_text(encoding="utf-8"))
    return copy, original


def test_a_heldout_near_copy_of_a_training_story_is_an_error_naming_both_before_the_model_loads(tmp_path):
    from amygdala_tl.corpus import load_corpus, select_concepts
    from amygdala_tl.pipelines.devset import load_dev_stories
    from amygdala_tl.pipelines.extract import ExtractConfig, run_extract

    corpus_dir = copy_starter_corpus(tmp_path / "corpus")
    copy, original = heldout_with_a_near_copy(tmp_path, corpus_dir)
    corpus = load_corpus(corpus_dir)
    concepts = select_concepts(corpus, 2)
    with pytest.raises(UserError, match="near-copy") as raised:
        load_dev_stories(tmp_path / "heldout", corpus, concepts, lambda _: None)
    assert str(copy) in str(raised.value) and str(original.name) in str(raised.value)

    def never_load(*args, **kwargs):
        raise AssertionError("the model must not load")

    config = ExtractConfig(output_dir=tmp_path / "out", corpus=corpus_dir, heldout=tmp_path / "heldout", quality_report=True, use_cache=False)
    with pytest.raises(UserError, match="near-copy"):
        run_extract(config, loader=never_load)
    copy.unlink()  # without the copy the same set loads
    assert [s.path.name for s in load_dev_stories(tmp_path / "heldout", corpus, concepts, lambda _: None)]


# ---- served_scores: the fp16 rows the server holds, not the fp32 ones --------------------------------


def test_served_scores_use_the_fp16_rows_exactly():
    from amygdala_tl.formats.readout import served_scores

    generator = torch.Generator().manual_seed(0)
    hidden = 40.0 * torch.randn(6, 64, generator=generator)
    vectors = torch.nn.functional.normalize(torch.randn(3, 64, generator=generator), dim=-1)
    expected = hidden @ vectors.half().float().T
    assert (hidden @ vectors.T - expected).abs().max() > 1e-3  # fp32 rows would differ measurably
    assert torch.equal(served_scores(hidden, vectors), expected)
    assert torch.equal(served_scores(hidden.half(), vectors), hidden.half().float() @ vectors.half().float().T)


# ---- preflight: the layer count from the config, before the load -------------------------------------


class Loaded(Exception):
    """Raised by the test loader: the run got past every pre-load check."""


def reach_the_load(*args, **kwargs):
    raise Loaded


@pytest.mark.parametrize("key", ["num_hidden_layers", "n_layer", "num_layers", "text_config"])
def test_preflight_reads_the_layer_count_and_extract_refuses_layer_n_before_the_load(key, tmp_path, starter_corpus):
    from amygdala_tl.model_spec import resolve_model_spec
    from amygdala_tl.pipelines.extract import ExtractConfig, run_extract
    from amygdala_tl.preflight import preflight

    n = 5
    config = {"model_type": "llama", **({"text_config": {"num_hidden_layers": n}} if key == "text_config" else {key: n})}
    model = write(tmp_path / "model" / "config.json", json.dumps(config)).parent
    assert preflight(resolve_model_spec(str(model))) == n
    for layers, accepted in ((f"{n - 1}", True), ("0", True), (f"-{n}", True), (f"{n}", False), (f"-{n + 1}", False), (f"0,{n}", False)):
        run = ExtractConfig(output_dir=tmp_path / "out", model=str(model), corpus=starter_corpus, layers=layers, use_cache=False)
        with pytest.raises(Loaded if accepted else UserError):
            run_extract(run, loader=reach_the_load)


def test_leave_one_writer_out_holds_out_each_writer_once_and_equals_a_hand_computation():
    """With writers recorded, cross-validation holds out one writer's texts at a time (folds computed here
    independently from the writer ids), scored as every protocol is; a writer of a single text or of neutral
    texts only shares a fold with the smallest writers, and a writer of all of a concept's positives cannot be
    held out at all."""
    acts, membership, labels = cv_data(1, n_per_concept=12, n_baselines=12)
    concepts = [f"c{c}" for c in range(membership.shape[0])]
    writers = np.arange(acts.shape[0]) % 4  # four writers, each with 3 texts of every concept and 3 baselines
    report = cv_evaluation(acts[None], [7], membership, concepts, writers.tolist(), n_layers=10, by_writer=True).to_json()
    assert report["protocol"] == "leave-one-writer-out cross-validation" and report["by_writer"] and report["n_splits"] == 4
    x, y, n_concepts = acts.double().numpy(), labels.numpy(), len(concepts)
    folds = [np.flatnonzero(writers == w) for w in range(4)]

    def diff_of_means_rows(kept):
        rows = np.stack([x[kept[y[kept] == c]].mean(0) - x[kept[y[kept] != c]].mean(0) for c in range(n_concepts)])
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    mean_auroc, top1, _, _ = hand_metrics(hand_scores_over_folds(x, folds, diff_of_means_rows, n_concepts), y, n_concepts)
    assert report["layers"]["7"]["mean_auroc"] == pytest.approx(mean_auroc, abs=1e-6)
    assert report["layers"]["7"]["top1"] == pytest.approx(top1, abs=1e-6)
    one_text_writer = np.append(writers[:-1], 4)  # writer 4 wrote one text: too small to be a fold of its own
    joined = cv_evaluation(acts[None], [7], membership, concepts, one_text_writer.tolist(), n_layers=10, by_writer=True).to_json()
    assert joined["by_writer"] and joined["n_splits"] == 4  # it joins the smallest writer's fold
    folds = writer_folds(membership, one_text_writer.tolist())
    assert folds is not None and sorted(np.concatenate(folds).tolist()) == list(range(len(writers)))
    last = next(fold for fold in folds if len(writers) - 1 in fold)
    assert len(last) > 1 and len(set(one_text_writer[last].tolist())) == 2  # the one-text writer beside a whole other writer
    neutral_writer = np.where(y == -1, 5, writers)  # writer 5 wrote only neutral texts: pooled, not a fold of its own
    assert len(writer_folds(membership, neutral_writer.tolist()) or []) == 4
    only_writer_of_c0 = np.where(y == 0, 0, writers)  # writer 0 wrote every positive of c0
    with pytest.raises(UserError, match="too small for grouped cross-validation"):
        cv_evaluation(acts[None], [7], membership, concepts, only_writer_of_c0.tolist(), n_layers=10, by_writer=True)


def test_cross_validation_through_lda_fold_refits_equals_refitting_every_fold():
    """The lda method's shared-statistics refits give cross-validation the same figures, concept by concept,
    as a plain refit of lda on every fold's kept texts."""
    from amygdala_tl.directions.lda import lda_directions
    from amygdala_tl.directions.registry import METHODS, MethodContext, heldout_fit

    acts, membership, _ = cv_data(2, d=24, n_per_concept=10, n_baselines=8)
    concepts = [f"c{c}" for c in range(membership.shape[0])]
    writers = (np.arange(acts.shape[0]) % 3).tolist()
    fast_fit = heldout_fit(MethodContext(METHODS["lda"], torch.full((acts.shape[0],), -1)), [7])
    assert fast_fit.fold_refits(acts, membership) is not None
    fast = cv_evaluation(acts[None], [7], membership, concepts, writers, 10, fast_fit, by_writer=True).to_json()["layers"]["7"]
    slow = cv_evaluation(acts[None], [7], membership, concepts, writers, 10, lambda slot, a, m, kept: lda_directions(a, m), by_writer=True)
    slow_block = slow.to_json()["layers"]["7"]
    for concept in concepts:
        assert fast["per_concept"][concept]["auroc"] == pytest.approx(slow_block["per_concept"][concept]["auroc"], abs=1e-9)
    assert fast["top1"] == pytest.approx(slow_block["top1"], abs=1e-9) and fast["mean_auroc"] > 0.8


def test_rank_aurocs_equal_sklearn_per_concept_with_ties_and_missing_concepts():
    """The vectorized AUROC every evaluation uses, against sklearn's roc_auc_score column by column: integer
    scores (many ties), a concept with no positive (NaN) and neutral texts (label -1)."""
    from amygdala_tl.quality.evaluation import rank_aurocs

    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 4, 200)
    labels[labels == 2] = 3  # concept 2 has no positive
    scores = rng.integers(0, 6, (200, 5)).astype(float) + (labels[:, None] == np.arange(5)) * 1.0  # ties across the classes
    aurocs = rank_aurocs(scores, labels)
    for c in range(5):
        if c in labels:
            assert aurocs[c] == pytest.approx(roc_auc_score(labels == c, scores[:, c]), abs=1e-12)
        else:
            assert np.isnan(aurocs[c])


@pytest.mark.parametrize("n_positives", [5, 30])
def test_variance_ratios_equal_the_squared_singular_values_of_the_centred_positives(n_positives):
    from amygdala_tl.quality.metrics import variance_ratios

    positives = torch.randn(n_positives, 16, generator=torch.Generator().manual_seed(n_positives)) * torch.linspace(0.2, 3, 16)
    singular = torch.linalg.svdvals(positives.double() - positives.double().mean(0))
    expected = (singular**2 / (singular**2).sum()).tolist()
    ratios = variance_ratios(positives)
    assert ratios[: len(expected)] == pytest.approx(expected, abs=1e-12) and sum(ratios) == pytest.approx(1.0)
