"""Head detectors, ablations and concept circuits on tiny models with hand-set heads."""

from __future__ import annotations

import pytest
import torch

from amygdala_tl import hooks
from amygdala_tl.capture import encode, make_batches
from amygdala_tl.circuits.ablation import Condition, run_ablations, tokens_of
from amygdala_tl.circuits.concept import concept_circuit, readout_scores
from amygdala_tl.circuits.detectors import duplicate_token, induction, natural_batch, positional, previous_token
from amygdala_tl.circuits.head import Head
from amygdala_tl.corpus import load_corpus
from amygdala_tl.errors import UserError

from ..conftest import WORDS, make_tiny_model

PREV_HEAD, INDUCTION_HEAD = (0, 1), (2, 3)


def planted_model():
    """A tiny Llama whose L0H1 is a previous-token head and L2H3 an induction head, set by hand
    through permanent hook_pattern hooks (the planted patterns feed the forward pass)."""
    model = make_tiny_model(seed=3)
    tokens_seen = {}

    def previous(pattern, hook):
        pattern = pattern.clone()
        n = pattern.shape[-1]
        planted = torch.diag_embed(torch.ones(n - 1), offset=-1)
        planted[0, 0] = 1
        pattern[:, PREV_HEAD[1]] = planted.to(pattern.dtype)
        return pattern

    def induct(pattern, hook):
        pattern = pattern.clone()
        tokens = tokens_seen["ids"]
        batch, n = tokens.shape
        planted = torch.zeros(batch, n, n)
        for b in range(batch):
            for q in range(n):
                earlier = [j for j in range(q) if tokens[b, j] == tokens[b, q]]
                planted[b, q, earlier[-1] + 1 if earlier else 0] = 1
        pattern[:, INDUCTION_HEAD[1]] = planted.to(pattern.dtype)
        return pattern

    original = model.bridge.run_with_hooks

    def run_with_hooks(tokens, *args, **kwargs):
        tokens_seen["ids"] = tokens.cpu()
        return original(tokens, *args, **kwargs)

    model.bridge.run_with_hooks = run_with_hooks
    model.bridge.add_hook(hooks.attn_pattern(PREV_HEAD[0]), previous, is_permanent=True)
    model.bridge.add_hook(hooks.attn_pattern(INDUCTION_HEAD[0]), induct, is_permanent=True)
    return model


@pytest.fixture(scope="module")
def planted():
    return planted_model()


def natural(model, length=16):
    generator = torch.Generator().manual_seed(0)
    texts = [" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (length + 4,), generator=generator)) for _ in range(6)]
    return natural_batch(model.tokenizer, texts, length)


def test_planted_previous_token_head_ranks_first_and_alone(planted):
    result = previous_token(planted, natural(planted))
    assert result.top(1)[0][0] == "L0H1" and result.top(1)[0][1] == pytest.approx(1.0)
    assert result.flagged == ["L0H1"]
    control = torch.tensor(result.extra["random_token_control"])
    assert control[PREV_HEAD] == pytest.approx(1.0)  # high on random tokens too: a positional head


def test_planted_induction_head_ranks_first_and_alone(planted):
    result = induction(planted, batch=4, half=12)
    assert result.top(1)[0][0] == "L2H3" and result.top(1)[0][1] == pytest.approx(1.0)
    assert result.flagged == ["L2H3"]
    assert duplicate_token(planted, batch=4, half=12).flagged == []


def test_positional_detector_sees_the_offset_one_head(planted):
    result = positional(planted, natural(planted))
    assert result.extra["peak_offset"][0][1] == 1 and result.scores[PREV_HEAD] == pytest.approx(1.0)


def test_run_detectors_runs_each_record_with_its_data_and_threshold(planted):
    """One Detector record per name: the natural-text ones score the texts, the others data they make; each flags at its threshold."""
    from amygdala_tl.circuits.detectors import DETECTORS, run_detectors

    generator = torch.Generator().manual_seed(0)
    texts = [" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (20,), generator=generator)) for _ in range(6)]
    names = ["previous_token", "induction", "positional", "delimiter"]
    results = run_detectors(planted, names, texts, length=16, n_texts=6)
    assert list(results) == names and [DETECTORS[name].needs_text for name in names] == [True, False, True, True]
    assert all(results[name].name == name and results[name].threshold == DETECTORS[name].threshold for name in names)
    assert results["previous_token"].flagged == ["L0H1"] and results["induction"].flagged == ["L2H3"]
    with pytest.raises(UserError, match="unknown detector 'copying'"):
        run_detectors(planted, ["copying"], texts)


def test_zero_ablating_a_head_removes_exactly_its_w_o_contribution(tiny_model):
    tokens = tokens_of(tiny_model, "the cat sat on the mat and the dog was quiet")
    layer, head = 1, 2
    store = {}
    grab = lambda key: lambda act, hook: store.__setitem__(key, act.detach().clone())  # noqa: E731
    with torch.inference_mode():
        tiny_model.bridge.run_with_hooks(
            tokens, return_type=None, fwd_hooks=[(hooks.attn_z(layer), grab("z")), (f"blocks.{layer}.hook_attn_out", grab("clean"))]
        )

        def zero(z, hook):
            z = z.clone()
            z[:, :, head] = 0
            return z

        tiny_model.bridge.run_with_hooks(
            tokens, return_type=None, fwd_hooks=[(hooks.attn_z(layer), zero), (f"blocks.{layer}.hook_attn_out", grab("ablated"))]
        )
    contribution = store["z"][0, :, head] @ tiny_model.bridge.blocks[layer].attn.W_O[head].detach()
    torch.testing.assert_close(store["clean"][0] - store["ablated"][0], contribution, atol=1e-5, rtol=1e-4)


def test_ablation_report_is_consistent(tiny_model):
    prompts = ["the cat sat on the", "she had a cup of"]
    results = [
        r.to_json()
        for r in run_ablations(
            tiny_model, prompts, [Condition(((1, 0), (1, 2)), "zero"), Condition(((2, 1),), "mean", -1), Condition(((0, 3),), "value", 1)], k=3
        )
    ]
    assert [r["heads"] for r in results] == [["L1H0", "L1H2"], ["L2H1"], ["L0H3"]]
    for result in results:
        changed = [row["top1_changed"] for row in result["prompts"]]
        assert result["top1_changed_fraction"] == sum(changed) / len(changed)
        for row in result["prompts"]:
            assert row["kl_clean_ablated"] >= -1e-6
            increases = [v for _, v in row["increases"]]
            assert increases == sorted(increases, reverse=True) and row["decreases"][0][1] <= increases[-1]
            assert row["top1_changed"] == (row["clean_top1"] != row["ablated_top1"]) or row["clean_top1"] == row["ablated_top1"]
    assert results[1]["prompts"][0]["ablated_position"] == len(results[1]["prompts"][0]["tokens"]) - 1
    with pytest.raises(UserError, match="L9H0"):
        run_ablations(tiny_model, prompts, [Condition(((9, 0),))])
    with pytest.raises(UserError, match="L3H5"):
        Head.parse("3.5")


def test_concept_circuit_effect_matches_a_manual_ablation(tiny_model, starter_corpus):
    corpus = load_corpus(starter_corpus)
    vector = torch.nn.functional.normalize(torch.randn(32, generator=torch.Generator().manual_seed(0)), dim=0)
    report = concept_circuit(tiny_model, corpus, "calm", 1, vector, n_negatives=5, batch_size=4).to_json()
    assert report["ablated_layers"] == [0, 1] and len(report["ablation_effects"]) == 2
    effects = [v for _, v in report["ablation_ranking"]]
    assert effects == sorted(effects, reverse=True)
    assert len(report["diff_of_means_at_layer"]["top_heads"]) == 4
    # recompute one head's effect by hand: mean-ablate L0H2 and compare score drops
    positive = corpus.positive_mask("calm")
    pos = positive.nonzero().flatten().tolist()
    neg_all = (~positive).nonzero().flatten()
    neg = neg_all[torch.randperm(len(neg_all), generator=torch.Generator().manual_seed(0))[:5]].tolist()
    ids, _ = encode(tiny_model.tokenizer, [corpus.stories[i].text for i in pos + neg], 512)
    batches = make_batches(ids, 4, tiny_model.tokenizer.pad_token_id)
    z_sum, count = 0, 0
    for batch in batches:
        grabbed = {}
        with torch.inference_mode():
            tiny_model.bridge.run_with_hooks(
                batch.input_ids,
                attention_mask=batch.attention_mask,
                return_type=None,
                fwd_hooks=[(hooks.attn_z(0), lambda z, hook, grabbed=grabbed: grabbed.__setitem__("z", z.detach()))],
            )
        z_sum = z_sum + (grabbed["z"] * batch.attention_mask[:, :, None, None]).sum((0, 1))
        count += batch.attention_mask.sum()
    mean = z_sum / count

    def ablate(z, hook):
        z = z.clone()
        z[:, :, 2] = mean[2]
        return z

    clean = readout_scores(tiny_model, batches, 1, vector)
    ablated = readout_scores(tiny_model, batches, 1, vector, (hooks.attn_z(0), ablate))
    drop = clean - ablated
    expected = drop[: len(pos)].mean() - drop[len(pos) :].mean()
    assert report["ablation_effects"][0][2] == pytest.approx(float(expected), abs=1e-4)


def test_detector_and_ablation_outputs_are_written(planted, tmp_path):
    import json

    from amygdala_tl.circuits.render import ablation_html, write_detector_outputs

    results = {"induction": induction(planted, batch=2, half=8), "previous_token": previous_token(planted, natural(planted))}
    paths = write_detector_outputs(results, tmp_path)
    assert sorted(p.name for p in paths) == ["heads.html", "heads.json", "heads_induction.png", "heads_previous_token.png"]
    saved = json.loads((tmp_path / "heads.json").read_text())
    assert saved["induction"]["flagged"] == ["L2H3"] and len(saved["induction"]["scores"]) == 3
    assert (tmp_path / "heads_induction.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "heads.html").read_text()
    assert page.count("<section") == 2 and "data:image/png;base64," in page
    ablations = run_ablations(planted, ["the cat sat on the"], [Condition(((0, 1),), "zero", 2)])
    html_page = ablation_html([a.to_json() for a in ablations])
    assert html_page.count("class=ablated") == 1 and "KL(clean||ablated)" in html_page
