"""Attribution patching for concept circuits, checked against plain PyTorch autograd on the HF model,
against real (small) ablations, and the rank agreement against hand-computed cases."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from amygdala_tl import hooks
from amygdala_tl.capture import encode, make_batches
from amygdala_tl.capture.forward import forward
from amygdala_tl.circuits.attribution import attribution_effects, contrast, estimated_drops, head_gradients, rank_agreement
from amygdala_tl.circuits.concept import concept_circuit, sample_texts
from amygdala_tl.cli import app

from ..conftest import WORDS, make_tiny_hf, write

LAYER, N_LAYERS = 2, 3


@pytest.fixture
def words_corpus(tmp_path):
    """Three concepts x 3 stories of random words, 8 to 24 long (padding in every batch)."""
    from amygdala_tl.corpus import load_corpus

    generator = torch.Generator().manual_seed(5)
    for concept in ("afraid", "calm", "bored"):
        for index in range(3):
            length = int(torch.randint(8, 25, (1,), generator=generator))
            words = [WORDS[int(i)] for i in torch.randint(0, len(WORDS), (length,), generator=generator)]
            write(tmp_path / "corpus" / "stories" / concept / f"story_{index}.txt", " ".join(words) + "\n")
    return load_corpus(tmp_path / "corpus")


@pytest.fixture
def setup(tiny_model, words_corpus):
    """Batches of the 'calm' positives + 4 negatives, a readout vector, and the gradient pass."""
    texts, is_pos = sample_texts(words_corpus, "calm", 4, seed=0)
    ids, _ = encode(tiny_model.tokenizer, texts, 64)
    batches = make_batches(ids, 3, tiny_model.tokenizer.pad_token_id)
    assert any(int(b.attention_mask.min()) == 0 for b in batches)  # right padding is exercised
    vector = torch.nn.functional.normalize(torch.randn(32, generator=torch.Generator().manual_seed(2)), dim=0).half().float()
    layers = list(range(N_LAYERS))
    return batches, is_pos, vector, layers, head_gradients(tiny_model, batches, layers, LAYER, vector)


def hf_z_and_grads(hf, batch, vector) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Plain PyTorch hooks on the HF model: each layer's o_proj input (= hook_z) and the gradient of the
    readout (model.layers[LAYER]'s output at the last real token, dotted with v) with respect to it."""
    zs, out = {}, {}

    def grab_z(layer):
        def pre_hook(module, args):
            zs[layer] = args[0] if args[0].requires_grad else args[0].detach().requires_grad_()
            return (zs[layer],)

        return pre_hook

    def grab_out(module, args, output):
        out["h"] = output[0] if isinstance(output, tuple) else output

    handles = [hf.model.layers[l].self_attn.o_proj.register_forward_pre_hook(grab_z(l)) for l in range(N_LAYERS)]
    handles.append(hf.model.layers[LAYER].register_forward_hook(grab_out))
    try:
        hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    finally:
        for handle in handles:
            handle.remove()
    last = batch.attention_mask.sum(-1) - 1
    score = (out["h"][torch.arange(len(last)), last] @ vector).sum()
    grads = torch.autograd.grad(score, [zs[l] for l in range(N_LAYERS)])
    split = lambda t: t.detach().reshape(*t.shape[:2], 4, 8)  # noqa: E731 - [batch, pos, head, d_head]
    return [split(zs[l]) for l in range(N_LAYERS)], [split(g) for g in grads]


def hf_reference_drops(batches, vector, n_texts):
    """The estimated drop per text, layer and head, from the plain HF model (same weights) and autograd:
    -sum over real positions and d_head of grad * (mean z - z), the mean over every real token."""
    hf = make_tiny_hf(N_LAYERS, 0).float()
    runs = [hf_z_and_grads(hf, batch, vector) for batch in batches]
    masks = [batch.attention_mask[:, :, None, None].float() for batch in batches]
    drops = torch.zeros(n_texts, N_LAYERS, 4)
    for l in range(N_LAYERS):
        mean = sum((zs[l] * m).sum((0, 1)) for (zs, _), m in zip(runs, masks)) / sum(m.sum() for m in masks)
        for batch, (zs, grads), m in zip(batches, runs, masks):
            drops[batch.indices, l] = -(grads[l] * (mean - zs[l]) * m).sum((1, 3))
    return drops


def test_estimate_equals_plain_torch_autograd_on_the_hf_model(setup):
    """The whole estimate (gradient, mean z, mean - z product, sums) from an independent computation."""
    batches, is_pos, vector, layers, gradients = setup
    means = gradients.mean.means()
    ours = estimated_drops(gradients, torch.stack([means[l] for l in layers]))
    expected = hf_reference_drops(batches, vector, len(is_pos))
    assert float(expected.abs().max()) > 1e-2  # not a comparison of zeros
    torch.testing.assert_close(ours, expected, atol=1e-7, rtol=1e-4)
    torch.testing.assert_close(attribution_effects(gradients, is_pos, layers), contrast(expected, is_pos), atol=1e-7, rtol=1e-4)


def test_estimate_is_the_limit_of_small_real_ablations(tiny_model, setup):
    """Moving one head's z by eps * (mean - z) for real: the drop / eps converges to the estimate
    (one-sided: error O(eps); central difference: O(eps^2))."""
    batches, is_pos, vector, layers, gradients = setup
    means = gradients.mean.means()
    estimate = estimated_drops(gradients, torch.stack([means[l] for l in layers]))

    def scores(layer, head, eps):
        def nudge(z, hook):  # noqa: ARG001
            z = z.clone()
            z[:, :, head] = z[:, :, head] + eps * (means[layer][head] - z[:, :, head])
            return z

        out = torch.zeros(len(is_pos))
        for batch in batches:
            resid = forward(
                tiny_model,
                batch.input_ids,
                attention_mask=batch.attention_mask,
                interventions=[(hooks.attn_z(layer), nudge)],
                read=[hooks.resid_post(LAYER)],
            ).acts[hooks.resid_post(LAYER)]
            last = batch.attention_mask.sum(-1) - 1
            out[batch.indices] = resid[torch.arange(len(last)), last].float() @ vector.half().float()
        return out

    def worst_error(quotient):
        return max(float((quotient(layer, head) - estimate[:, layer, head]).abs().max()) for layer in layers for head in range(4))

    clean = scores(0, 0, 0.0)
    one_sided = {eps: worst_error(lambda layer, head, eps=eps: (clean - scores(layer, head, eps)) / eps) for eps in (0.1, 0.01)}
    central = worst_error(lambda layer, head: (scores(layer, head, -0.03) - scores(layer, head, 0.03)) / 0.06)
    scale = float(estimate.abs().max())
    assert scale > 1e-3
    assert one_sided[0.01] < 1e-3 * scale and one_sided[0.01] < one_sided[0.1] / 5  # first order: the error shrinks with eps
    assert central < 1e-4 * scale  # second order


def test_rank_agreement_on_known_rankings():
    heads = ["L0H0", "L0H1", "L1H0", "L1H1"]
    same = rank_agreement(heads, torch.tensor([4.0, 3.0, 2.0, 1.0]), torch.tensor([8.0, 5.0, 0.5, -1.0]), top_n=2)
    assert same.spearman == pytest.approx(1.0) and same.top_n_overlap == 1.0 and same.sign_agreement == 0.75
    reverse = rank_agreement(heads, torch.tensor([4.0, 3.0, 2.0, 1.0]), torch.tensor([1.0, 2.0, 3.0, 4.0]), top_n=2)
    assert reverse.spearman == pytest.approx(-1.0) and reverse.top_n_overlap == 0.0
    # ranks 1,2,3,4 vs 2,1,4,3: sum d^2 = 4, rho = 1 - 6 * 4 / (4 * 15) = 0.6; both top-2 are {0, 1}
    swapped = rank_agreement(heads, torch.tensor([4.0, 3.0, 2.0, 1.0]), torch.tensor([3.0, 4.0, 1.0, 2.0]), top_n=2)
    assert swapped.spearman == pytest.approx(0.6) and swapped.top_n_overlap == 1.0
    shifted = rank_agreement(heads, torch.tensor([4.0, 3.0, 2.0, 1.0]), torch.tensor([1.0, 4.0, 3.0, 2.0]), top_n=3)
    assert shifted.top_n_overlap == pytest.approx(2 / 3)  # top-3 {0, 1, 2} vs {1, 2, 3}
    assert rank_agreement(heads[:2], torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0]), top_n=1).spearman is None  # too few heads
    assert rank_agreement(heads, torch.tensor([4.0, 3.0, 2.0, 1.0]), torch.ones(4), top_n=2).spearman is None  # constant side


def test_attribution_mode_ablates_the_top_heads_and_reports_the_agreement(tiny_model, words_corpus):
    from scipy.stats import spearmanr

    vector = 100 * torch.nn.functional.normalize(torch.randn(32, generator=torch.Generator().manual_seed(2)), dim=0)
    full = concept_circuit(tiny_model, words_corpus, "calm", LAYER, vector, n_negatives=4, batch_size=3, max_length=64, mode="ablation").to_json()
    circuit = concept_circuit(
        tiny_model, words_corpus, "calm", LAYER, vector, n_negatives=4, batch_size=3, max_length=64, mode="attribution", verify_top=5
    )
    fast = circuit.to_json()
    assert fast["mode"] == "attribution" and fast["attribution_effects"] == full["attribution_effects"]
    estimates = torch.tensor(fast["attribution_effects"]).flatten()
    top5 = torch.argsort(estimates, descending=True)[:5].tolist()
    names = [f"L{i // 4}H{i % 4}" for i in top5]
    assert fast["agreement"]["heads"] == names and [row[0] for row in fast["attribution_ranking"][:5]] == names
    flat_fast, flat_full = sum(fast["ablation_effects"], []), sum(full["ablation_effects"], [])
    assert [i for i, v in enumerate(flat_fast) if v is not None] == sorted(top5)  # only the verified heads were ablated
    for i in top5:  # the same real ablation as ablating every head
        assert flat_fast[i] == pytest.approx(flat_full[i], abs=1e-4)
    agreement = fast["agreement"]
    assert agreement["top_n"] == 2 and agreement["ablation"] == [pytest.approx(flat_full[i], abs=1e-4) for i in top5]
    by_ablation = sorted(range(5), key=lambda i: -agreement["ablation"][i])[:2]
    assert agreement["top_n_overlap"] == len({0, 1} & set(by_ablation)) / 2  # attribution's top 2 are the first two listed
    # ablation mode compares over every head: Spearman from the two grids as written
    assert full["agreement"]["spearman"] == pytest.approx(float(spearmanr(estimates.numpy(), flat_full).statistic), abs=1e-3)
    assert full["agreement"]["spearman"] > 0.9  # a random tiny model is close to linear in one head's z
    summary = "\n".join(circuit.summary())
    assert "by attribution" in summary and "ablating the top 5" in summary and "over 5 heads: Spearman" in summary


def test_ablations_without_kept_residuals_equal_those_with_them(tiny_model, words_corpus, monkeypatch):
    """Over the memory budget the gradient pass keeps no residuals; the ablations then read them in passes of their own."""
    from amygdala_tl.circuits import concept

    vector = 100 * torch.nn.functional.normalize(torch.randn(32, generator=torch.Generator().manual_seed(2)), dim=0)
    run = lambda: concept_circuit(tiny_model, words_corpus, "calm", LAYER, vector, n_negatives=4, batch_size=3, max_length=64, mode="ablation")  # noqa: E731
    kept = run().to_json()
    monkeypatch.setattr(concept, "STARTS_BUDGET", 0)
    monkeypatch.setattr(concept, "STARTS_PER_PASS", 2)
    read = run().to_json()
    assert read["ablation_effects"] == kept["ablation_effects"] and read["agreement"] == kept["agreement"]


def test_heads_concept_mode_and_verify_top_are_checked_before_anything_loads(tmp_path):
    for extra, message in ((["--mode", "exact"], "--mode"), (["--verify-top", "0"], "--verify-top")):
        result = CliRunner().invoke(app, ["heads", "concept", "--concept", "calm", "--layer", "1", "--vectors", str(tmp_path / "none"), *extra])
        assert result.exit_code == 2 and message in result.output
