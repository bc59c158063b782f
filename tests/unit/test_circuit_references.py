"""Circuits checked against independent computations: ablation hooks (zero, mean, value under
grouped-query attention), run_ablations' reported logit change, the delimiter / successor /
s_inhibition detectors on planted heads, OV copy scores from the raw HF weights, and the concept
circuit's resumed ablations against full forward runs."""

from __future__ import annotations

import contextlib
import importlib

import pytest
import torch

from amygdala_tl import hooks
from amygdala_tl.capture import encode
from amygdala_tl.circuits.ablation import Condition, ablation_hooks, mean_z, prompt_batches, run_ablations, tokens_of, value_slots
from amygdala_tl.circuits.concept import concept_circuit
from amygdala_tl.circuits.detectors import NAMES, ORDINAL_RUNS, delimiter, natural_batch, ov_copy_scores, s_inhibition, successor
from amygdala_tl.corpus import load_corpus
from amygdala_tl.model import LoadedModel, facts_of
from amygdala_tl.model_spec import ModelSpec

from ..conftest import WORDS, make_tiny_hf, write

PROMPTS = ["the cat sat on the mat and the dog", "she had a cup of tea at the table", "rain on the road"]


def run_capturing(model, tokens, fwd_hooks, names):
    """Run the bridge with `fwd_hooks` first, then a capturing hook on each of `names` (sees what the
    earlier hooks returned); returns {name: activation} and the logits."""
    store = {}

    def grab(name):
        return lambda act, hook: store.__setitem__(name, act.detach().clone())

    with torch.inference_mode():
        logits = model.bridge.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks) + [(name, grab(name)) for name in names])
    return store, logits


# ---- ablation hooks ----------------------------------------------------------------------------


def test_zero_ablation_zeroes_only_the_chosen_head_at_the_chosen_position(tiny_model):
    tokens = tokens_of(tiny_model, PROMPTS[0])
    names = [hooks.attn_z(1), "blocks.1.hook_resid_mid"]
    clean, _ = run_capturing(tiny_model, tokens, [], names)
    w_o = tiny_model.bridge.blocks[1].attn.W_O.detach()

    # one head, one position: z of L1H2 at position 3 is zero, every other z entry of layer 1 unchanged,
    # and the residual after block 1's attention moves by exactly -z @ W_O at that position only (the edit feeds the forward)
    ablated, _ = run_capturing(tiny_model, tokens, ablation_hooks(tiny_model, Condition(((1, 2),), "zero", 3), None), names)
    z_clean, z_ablated = clean[hooks.attn_z(1)][0], ablated[hooks.attn_z(1)][0]
    assert float(z_clean[3, 2].abs().max()) > 1e-3  # zeroing it is a real change
    assert torch.equal(z_ablated[3, 2], torch.zeros(8))
    keep = torch.ones(z_clean.shape[:2], dtype=torch.bool)
    keep[3, 2] = False
    torch.testing.assert_close(z_ablated[keep], z_clean[keep], atol=1e-6, rtol=0)
    mid = "blocks.1.hook_resid_mid"
    expected_shift = torch.zeros_like(clean[mid][0])
    expected_shift[3] = -z_clean[3, 2] @ w_o[2]
    torch.testing.assert_close(ablated[mid][0] - clean[mid][0], expected_shift, atol=1e-5, rtol=1e-4)

    # a negative position counts from the end
    last, _ = run_capturing(tiny_model, tokens, ablation_hooks(tiny_model, Condition(((1, 2),), "zero", -1), None), names)
    keep = torch.ones(z_clean.shape[:2], dtype=torch.bool)
    keep[-1, 2] = False
    assert torch.equal(last[hooks.attn_z(1)][0][-1, 2], torch.zeros(8))
    torch.testing.assert_close(last[hooks.attn_z(1)][0][keep], z_clean[keep], atol=1e-6, rtol=0)


def test_zero_ablation_at_all_positions_across_layers_hits_exactly_the_named_heads(tiny_model):
    tokens = tokens_of(tiny_model, PROMPTS[1])
    names = [hooks.attn_z(0), hooks.attn_z(2)]
    chosen = ((0, 1), (2, 3), (2, 0))
    ablated, _ = run_capturing(tiny_model, tokens, ablation_hooks(tiny_model, Condition(chosen, "zero"), None), names)
    # layer 0 is upstream of everything else ablated: compare with a clean run
    clean, _ = run_capturing(tiny_model, tokens, [], names)
    z0 = ablated[hooks.attn_z(0)][0]
    assert torch.equal(z0[:, 1], torch.zeros_like(z0[:, 1]))
    torch.testing.assert_close(z0[:, [0, 2, 3]], clean[hooks.attn_z(0)][0][:, [0, 2, 3]], atol=1e-6, rtol=0)
    # layer 2: heads 0 and 3 zero everywhere, heads 1 and 2 not (their input changed with L0H1, so no equality)
    z2 = ablated[hooks.attn_z(2)][0]
    assert torch.equal(z2[:, [0, 3]], torch.zeros_like(z2[:, [0, 3]]))
    assert bool((z2[:, [1, 2]].abs().amax(-1) > 1e-4).all())


def test_mean_z_is_the_mean_over_every_token_of_every_prompt(tiny_model):
    per_token = []
    for prompt in PROMPTS:
        store, _ = run_capturing(tiny_model, tokens_of(tiny_model, prompt), [], [hooks.attn_z(1)])
        per_token.append(store[hooks.attn_z(1)][0])
    expected = torch.cat(per_token).mean(0)  # [n_heads, d_head], BOS positions included
    means = mean_z(tiny_model, prompt_batches(tiny_model, PROMPTS), [1])
    assert set(means) == {1}
    torch.testing.assert_close(means[1], expected, atol=1e-6, rtol=1e-5)


def test_mean_ablation_writes_the_heads_mean_at_every_position_and_nothing_else(tiny_model):
    means = mean_z(tiny_model, prompt_batches(tiny_model, PROMPTS), [1])
    tokens = tokens_of(tiny_model, PROMPTS[2])
    clean, _ = run_capturing(tiny_model, tokens, [], [hooks.attn_z(1)])
    ablated, _ = run_capturing(tiny_model, tokens, ablation_hooks(tiny_model, Condition(((1, 3),), "mean"), means), [hooks.attn_z(1)])
    z_ablated, z_clean = ablated[hooks.attn_z(1)][0], clean[hooks.attn_z(1)][0]
    torch.testing.assert_close(z_ablated[:, 3], means[1][3].expand_as(z_ablated[:, 3]), atol=1e-6, rtol=0)
    torch.testing.assert_close(z_ablated[:, :3], z_clean[:, :3], atol=1e-6, rtol=0)
    assert float((z_clean[:, 3] - means[1][3]).abs().max()) > 1e-3


@pytest.mark.parametrize(("head", "slot"), [(1, 0), (2, 1)])
def test_value_ablation_zeroes_the_heads_kv_group_at_the_position(tiny_model, head, slot):
    """4 query heads over 2 KV heads: query head h reads value slot h // 2."""
    tokens = tokens_of(tiny_model, PROMPTS[0])
    position = 2
    names = ["blocks.1.attn.hook_v", hooks.attn_z(1)]
    clean, _ = run_capturing(tiny_model, tokens, [], names)
    hooks_ = ablation_hooks(tiny_model, Condition(((1, head),), "value", position), None)
    ablated, _ = run_capturing(tiny_model, tokens, hooks_, names)
    v_clean, v_ablated = clean["blocks.1.attn.hook_v"][0], ablated["blocks.1.attn.hook_v"][0]
    assert v_clean.shape[1] == 2  # the bridge exposes one value vector per KV head
    assert torch.equal(v_ablated[position, slot], torch.zeros(8))
    keep = torch.ones(v_clean.shape[:2], dtype=torch.bool)
    keep[position, slot] = False
    torch.testing.assert_close(v_ablated[keep], v_clean[keep], atol=1e-6, rtol=0)
    # through attention: the group's query heads change from `position` on, the other group never
    z_clean, z_ablated = clean[hooks.attn_z(1)][0], ablated[hooks.attn_z(1)][0]
    group = [h for h in range(4) if h // 2 == slot]
    others = [h for h in range(4) if h // 2 != slot]
    torch.testing.assert_close(z_ablated[:, others], z_clean[:, others], atol=1e-6, rtol=0)
    torch.testing.assert_close(z_ablated[:position, group], z_clean[:position, group], atol=1e-6, rtol=0)
    assert bool(((z_ablated[position:, group] - z_clean[position:, group]).abs().amax(-1) > 1e-5).all())


def test_value_slots_maps_query_heads_to_their_kv_groups(tiny_model):
    assert value_slots(tiny_model, [1], 2) == [0]
    assert value_slots(tiny_model, [2], 2) == [1]
    assert value_slots(tiny_model, [0, 3], 2) == [0, 1]
    assert value_slots(tiny_model, [1], 4) == [0, 1]  # values already expanded per query head
    assert value_slots(tiny_model, [2, 3], 4) == [2, 3]


def test_run_ablations_reports_the_logit_change_of_an_independent_ablation(tiny_model):
    prompts = PROMPTS[:2]
    layer, head = 2, 1

    def zero_head(z, hook):
        z = z.clone()
        z[:, :, head] = 0
        return z

    def zero_values_at(position, slot):
        def edit(v, hook):
            v = v.clone()
            v[:, position, slot] = 0
            return v

        return edit

    results = [r.to_json() for r in run_ablations(tiny_model, prompts, [Condition(((layer, head),), "zero"), Condition(((1, 3),), "value", 1)], k=3)]
    for prompt, row_zero, row_value in zip(prompts, results[0]["prompts"], results[1]["prompts"]):
        tokens = tokens_of(tiny_model, prompt)
        with torch.inference_mode():
            clean = tiny_model.bridge(tokens)[0, -1]
            by_zero = tiny_model.bridge.run_with_hooks(tokens, fwd_hooks=[(hooks.attn_z(layer), zero_head)])[0, -1]
            by_value = tiny_model.bridge.run_with_hooks(tokens, fwd_hooks=[("blocks.1.attn.hook_v", zero_values_at(1, 1))])[0, -1]
        top = int(clean.argmax())
        for row, ablated in ((row_zero, by_zero), (row_value, by_value)):
            change = float(ablated[top] - clean[top])
            assert abs(change) > 1e-4  # the ablation matters
            assert row["clean_top1_logit_change"] == pytest.approx(change, abs=1e-5)
            log_p, log_q = clean.log_softmax(-1), ablated.log_softmax(-1)
            assert row["kl_clean_ablated"] == pytest.approx(float((log_p.exp() * (log_p - log_q)).sum()), abs=1e-6)
            delta = ablated - clean
            assert row["increases"][0][1] == pytest.approx(float(delta.max()), abs=1e-5)


# ---- detectors on planted heads ----------------------------------------------------------------

ORDINALS = [item for run in ORDINAL_RUNS for item in run.split(", ")]
EXTRA = [",", ".", "When", "went", "store", "gave", "drink", *NAMES]
VOCAB = ["[PAD]", "[UNK]", *dict.fromkeys([*WORDS, *EXTRA, *ORDINALS])]
POSITIONAL_HEAD, DELIM_HEAD, SUCCESSOR_HEAD, S2_HEAD = (0, 2), (1, 0), (1, 3), (2, 2)


def make_wordy_model(seed: int = 5) -> LoadedModel:
    """A random GQA Llama (like conftest's) whose word-level tokenizer also knows punctuation, the
    ordinal-run items and the IOI names, splitting punctuation off words."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]")
    hf_model = make_tiny_hf(seed=seed, vocab_size=len(VOCAB))
    bridge = TransformerBridge.boot_transformers("tiny-llama", hf_model=hf_model, tokenizer=tokenizer, device="cpu")
    return LoadedModel(bridge, tokenizer, facts_of(bridge), ModelSpec("hub", "tiny-llama", "tiny-llama"), "wordy", torch.float32)


def planted_rows(tokens: torch.Tensor, rule) -> torch.Tensor:
    """A one-hot pattern [batch, q, k]: query q attends to key rule(row, q) (causal, 0 = BOS)."""
    batch, n = tokens.shape
    planted = torch.zeros(batch, n, n)
    for b in range(batch):
        row = tokens[b].tolist()
        for q in range(n):
            planted[b, q, rule(row, q)] = 1
    return planted


def plant(model: LoadedModel) -> LoadedModel:
    vocab = model.tokenizer.get_vocab()
    delimiters = {vocab[","], vocab["."]}
    ordinal_ids = {vocab[item] for item in ORDINALS}
    name_ids = {vocab[name] for name in NAMES}
    seen = {}

    def last_delimiter(row, q):  # the most recent delimiter key (BOS if none yet)
        return max((k for k in range(1, q + 1) if row[k] in delimiters), default=0)

    def predecessor_item(row, q):  # an ordinal item attends to the item before it ("x , y": two back)
        return q - 2 if q >= 2 and row[q] in ordinal_ids else 0

    def two_back(row, q):  # positional: always two back, whatever the content
        return max(q - 2, 0)

    def repeated_name(row, q):  # the final query attends to the repeated name (S2)
        if q != len(row) - 1:
            return 0
        repeats = [k for k in range(q) if row[k] in name_ids and row[k] in row[:k]]
        return repeats[-1] if repeats else 0

    rules = {POSITIONAL_HEAD: two_back, DELIM_HEAD: last_delimiter, SUCCESSOR_HEAD: predecessor_item, S2_HEAD: repeated_name}

    def layer_hook(layer):
        def hook(pattern, hook):
            pattern = pattern.clone()
            for (l, h), rule in rules.items():
                if l == layer:
                    pattern[:, h] = planted_rows(seen["ids"], rule).to(pattern.dtype)
            return pattern

        return hook

    original = model.bridge.run_with_hooks

    def run_with_hooks(tokens, *args, **kwargs):
        seen["ids"] = tokens.cpu()
        return original(tokens, *args, **kwargs)

    model.bridge.run_with_hooks = run_with_hooks
    for layer in sorted({l for l, _ in rules}):
        model.bridge.add_hook(hooks.attn_pattern(layer), layer_hook(layer), is_permanent=True)
    return model


@pytest.fixture(scope="module")
def wordy():
    return plant(make_wordy_model())


def delimited_texts(n_texts=6, n_words=30, seed=0):
    generator = torch.Generator().manual_seed(seed)
    texts = []
    for _ in range(n_texts):
        words = [WORDS[int(i)] for i in torch.randint(0, len(WORDS), (n_words,), generator=generator)]
        for position in range(4, n_words, 5):
            words[position] = "," if int(torch.randint(0, 2, (1,), generator=generator)) else "."
        texts.append(" ".join(words))
    return texts


def test_delimiter_detector_scores_the_planted_head_by_its_hand_computed_ratio(wordy):
    natural = natural_batch(wordy.tokenizer, delimited_texts(), 20)
    vocab = wordy.tokenizer.get_vocab()
    # the planted head puts all its mass on a delimiter whenever one is visible: its ratio at query q is
    # 1 / share = (keys 1..q) / (delimiters among keys 1..q); the score is the mean over such queries
    ratios = []
    for row in natural.tolist():
        for q in range(1, len(row)):
            n_delims = sum(row[k] in (vocab[","], vocab["."]) for k in range(1, q + 1))
            if n_delims:
                ratios.append(q / n_delims)
    expected = sum(ratios) / len(ratios)
    assert expected > 3.0
    result = delimiter(wordy, natural)
    assert result.scores[DELIM_HEAD] == pytest.approx(expected, rel=1e-5)
    assert result.top(1)[0][0] == "L1H0"
    assert result.flagged == ["L1H0"]
    assert float(result.scores[POSITIONAL_HEAD]) < 3.0


def test_successor_detector_flags_the_content_driven_head_not_the_positional_one(wordy):
    result = successor(wordy)
    # on ordinal runs the planted head attends item -> previous item; on random words it attends BOS
    assert result.scores[SUCCESSOR_HEAD] == pytest.approx(1.0, abs=1e-6)
    # a head that always looks two back does so on both runs: the random-word control cancels it
    assert result.scores[POSITIONAL_HEAD] == pytest.approx(0.0, abs=1e-6)
    assert result.top(1)[0][0] == "L1H3"
    assert result.flagged == ["L1H3"]


def test_s_inhibition_detector_flags_the_head_attending_end_to_s2(wordy):
    result = s_inhibition(wordy)
    assert result.scores[S2_HEAD] == pytest.approx(1.0, abs=1e-6)
    assert result.top(1)[0][0] == "L2H2"
    assert result.flagged == ["L2H2"]
    assert result.data.startswith(f"{len(NAMES)} IOI prompts")  # every name is one token here
    torch.testing.assert_close(torch.tensor(result.extra["ov_copy_score"]), ov_copy_scores(wordy, NAMES), atol=1e-4, rtol=0)


def test_ov_copy_scores_match_a_computation_from_the_raw_hf_weights(wordy):
    """From the HF modules (q/k/v/o projections, embedding, lm_head), not the bridge's W_V/W_O views:
    with 2 KV heads, query head h reads v_proj rows of KV head h // 2, and o_proj columns of head h."""
    names = NAMES[:6]
    hf = wordy.bridge.original_model
    vocab = wordy.tokenizer.get_vocab()
    ids = [vocab[name] for name in names]
    d_head = wordy.facts.d_head
    embed = hf.model.embed_tokens.weight.detach().double()[ids]
    embed = embed / embed.norm(dim=-1, keepdim=True)
    unembed = hf.lm_head.weight.detach().double()[ids].T  # [d_model, names]
    expected = torch.zeros(3, 4)
    for layer in range(3):
        attention = hf.model.layers[layer].self_attn
        v_proj, o_proj = attention.v_proj.weight.detach().double(), attention.o_proj.weight.detach().double()
        for head in range(4):
            kv = head // 2
            w_v = v_proj[kv * d_head : (kv + 1) * d_head].T  # [d_model, d_head]
            w_o = o_proj[:, head * d_head : (head + 1) * d_head].T  # [d_head, d_model]
            logits = embed @ w_v @ w_o @ unembed
            n = len(ids)
            per_name = [float(logits[i, i] - (logits[i].sum() - logits[i, i]) / (n - 1)) for i in range(n)]
            expected[layer, head] = sum(per_name) / n / float(logits.std())
    scores = ov_copy_scores(wordy, names)
    assert float(expected.abs().max()) > 0.05
    torch.testing.assert_close(scores, expected.float(), atol=1e-4, rtol=1e-4)


# ---- concept circuit ---------------------------------------------------------------------------


def word_corpus(root, seed=0):
    """Three concepts x 2 stories of random vocabulary words, 10 to 30 words long (padding in every batch)."""
    generator = torch.Generator().manual_seed(seed)
    for concept in ("afraid", "calm", "bored"):
        for index in range(2):
            length = int(torch.randint(10, 31, (1,), generator=generator))
            words = [WORDS[int(i)] for i in torch.randint(0, len(WORDS), (length,), generator=generator)]
            write(root / "stories" / concept / f"story_{index}.txt", " ".join(words) + "\n")
    return load_corpus(root)


def test_concept_circuit_resumed_ablations_equal_full_forward_runs(tiny_model, tmp_path):
    """Heads at layers 1 and 2 are ablated by resuming from the cached residual entering their layer:
    each effect must equal the one from a full forward pass under the same mean-ablation hook."""
    corpus = word_corpus(tmp_path / "corpus")
    layer, n_negatives, max_length = 2, 4, 24
    # a long readout vector: effects on the random model are ~1e-4 per unit length, the report rounds to 1e-5
    vector = (
        (100 * torch.nn.functional.normalize(torch.randn(32, generator=torch.Generator().manual_seed(1)), dim=0)).half().float()
    )  # as served: fp16
    report = concept_circuit(
        tiny_model, corpus, "afraid", layer, vector, n_negatives=n_negatives, layers=[1, 2], batch_size=4, max_length=max_length
    ).to_json()  # 6 texts: two right-padded batches
    assert report["ablated_layers"] == [1, 2]

    positive = corpus.positive_mask("afraid")
    pos = positive.nonzero().flatten().tolist()
    neg_all = (~positive).nonzero().flatten()
    neg = neg_all[torch.randperm(len(neg_all), generator=torch.Generator().manual_seed(0))[:n_negatives]].tolist()
    ids, truncated = encode(tiny_model.tokenizer, [corpus.stories[i].text for i in pos + neg], max_length)
    assert 0 < len(truncated) < len(ids) and len({len(row) for row in ids}) > 2  # some cut, lengths differ
    is_pos = torch.tensor([True] * len(pos) + [False] * len(neg))

    width = max(len(row) for row in ids)
    input_ids = torch.tensor([row + [0] * (width - len(row)) for row in ids])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])
    last = torch.tensor([len(row) - 1 for row in ids])

    def scores(fwd_hooks):
        """<resid_post[layer] at the last real token, v> per text: one full forward pass from the tokens."""
        store = {}
        grab = lambda name: (name, lambda act, hook: store.__setitem__(name, act.detach().clone()))  # noqa: E731
        with torch.inference_mode():
            tiny_model.bridge.run_with_hooks(
                input_ids,
                attention_mask=mask,
                return_type=None,
                fwd_hooks=list(fwd_hooks) + [grab(hooks.resid_post(layer)), grab(hooks.attn_z(1)), grab(hooks.attn_z(2))],
            )
        z = {l: store[hooks.attn_z(l)][mask.bool()] for l in (1, 2)}  # [real tokens, n_heads, d_head]
        return store[hooks.resid_post(layer)][torch.arange(len(ids)), last] @ vector, z

    clean, z = scores([])
    means = {l: z[l].mean(0) for l in (1, 2)}  # over every real token of every text
    for l in (1, 2):
        for head in range(4):

            def ablate(act, hook, head=head, l=l):
                act = act.clone()
                act[:, :, head] = means[l][head]
                return act

            ablated, _ = scores([(hooks.attn_z(l), ablate)])
            drop = clean - ablated
            expected = float(drop[is_pos].mean() - drop[~is_pos].mean())
            assert report["ablation_effects"][l - 1][head] == pytest.approx(expected, rel=1e-3, abs=1e-4), f"L{l}H{head}"
    assert min(abs(v) for row in report["ablation_effects"] for v in row) > 5e-3  # every compared effect is well above tolerance


def test_resuming_past_the_lower_blocks_is_used_only_where_it_is_exact(tiny_model, monkeypatch):
    """TransformerLens re-runs (and discards) the blocks below start_at; passing them through is taken only
    when one batch scores the same both ways, and the blocks get their own forward back afterwards."""
    forward_module = importlib.import_module("amygdala_tl.capture.forward")  # the package exports a function of that name
    from amygdala_tl.capture.forward import Batch
    from amygdala_tl.circuits.ablation import head_ablation
    from amygdala_tl.circuits.concept import readout_scores_from, resid_pre, resume_skips_exactly

    batch = Batch([2, 0], torch.tensor([[2, 3, 4, 5, 6], [7, 8, 9, 0, 0]]), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]))
    batches = [batch, Batch([1], torch.tensor([[5, 4, 3]]), torch.tensor([[1, 1, 1]]))]  # texts 0..2, out of order
    vector = torch.randn(32, generator=torch.Generator().manual_seed(3))
    starts = resid_pre(tiny_model, batches, [2])[2]
    ablate = head_ablation(2, [1], torch.zeros(4, 8))
    slow = readout_scores_from(tiny_model, batches, starts, 2, 2, vector, ablate)
    fast = readout_scores_from(tiny_model, batches, starts, 2, 2, vector, ablate, skip_below=True)
    assert torch.allclose(fast, slow, atol=1e-5) and resume_skips_exactly(tiny_model, batch, starts[0], 2, 2, vector, ablate)
    assert not any("forward" in vars(block) for block in tiny_model.bridge.blocks)

    layer1 = resid_pre(tiny_model, batches, [1])[1]
    ablate1 = head_ablation(1, [1], torch.zeros(4, 8))

    @contextlib.contextmanager
    def zeroing(model, below):  # model code between blocks that chokes on what the pass-through returns
        def choke(*args, **kwargs):
            raise RuntimeError("expected a tuple")

        for block in list(model.bridge.blocks)[:below]:
            object.__setattr__(block, "forward", choke)
        try:
            yield
        finally:
            for block in list(model.bridge.blocks)[:below]:
                object.__delattr__(block, "forward")

    monkeypatch.setattr(forward_module, "_blocks_pass_through", zeroing)
    assert not resume_skips_exactly(tiny_model, batch, layer1[0], 1, 2, vector, ablate1)
    assert not any("forward" in vars(block) for block in tiny_model.bridge.blocks)
