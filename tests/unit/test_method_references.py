"""Methods checked against independent computations: left truncation with a BOS-adding tokenizer,
the subspace direction against a from-scratch fp64 reference of docs/methods.md, and steer's alpha
scaling against a captured residual norm."""

from __future__ import annotations

import itertools

import pytest
import torch

from amygdala_tl import hooks
from amygdala_tl.capture import encode
from amygdala_tl.directions.pooled import diff_of_means
from amygdala_tl.directions.subspace import subspace_directions
from amygdala_tl.formats.readout import build_readout

from ..conftest import WORDS

# ---- tokenization: BOS kept, the END of a long story kept ----------------------------------------


def bos_tokenizer(template: str = "[BOS] $A"):
    """Word-level tokenizer whose post-processor prepends [BOS] (as Llama/SmolLM tokenizers do)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, "[EOS]": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single=template, special_tokens=[("[BOS]", 2), ("[EOS]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="[BOS]", pad_token="[PAD]", unk_token="[UNK]")


def test_tokenize_keeps_bos_and_the_end_of_a_long_text():
    tokenizer = bos_tokenizer()
    vocab = tokenizer.get_vocab()
    long_words = "the cat sat on the mat and the dog was quiet in the warm room".split()
    texts = ["rain on the road", " ".join(long_words), "the sun", " ".join(long_words[:5])]
    assert tokenizer(texts[0])["input_ids"][0] == 2  # the tokenizer really adds a BOS
    max_length = 6
    ids, truncated = encode(tokenizer, texts, max_length)
    assert truncated == [1]
    assert ids[1] == [2] + [vocab[w] for w in long_words[-(max_length - 1) :]]  # [BOS] + the last 5 words
    assert len(ids[1]) == max_length
    # texts that fit (the one at exactly max_length included) are unchanged
    assert ids[0] == [2] + [vocab[w] for w in "rain on the road".split()]
    assert ids[2] == [2, vocab["the"], vocab["sun"]]
    assert ids[3] == [2] + [vocab[w] for w in long_words[:5]] and len(ids[3]) == max_length
    # a single token of room still keeps the BOS
    ids, truncated = encode(tokenizer, texts, 2)
    assert truncated == [0, 1, 2, 3] and ids[1] == [2, vocab["room"]]


def test_tokenize_keeps_leading_and_trailing_specials_and_the_end_of_the_text():
    tokenizer = bos_tokenizer("[BOS] $A [EOS]")
    vocab = tokenizer.get_vocab()
    words = "the cat sat on the mat and dog".split()
    ids, truncated = encode(tokenizer, [" ".join(words)], 5)
    assert truncated == [0] and ids[0] == [2, vocab[words[-3]], vocab[words[-2]], vocab[words[-1]], 3]  # not the first word


# ---- subspace: an independent reference of docs/methods.md's recipe -----------------------------


def reference_subspace(bases, positive, reference, eigen_k):
    """docs/methods.md, "subspace": M = mean_pos V V^T - mean_neg V V^T (fp64, full eigh); take the top
    eigen_k eigenvectors, flip each so it points along the pooled diff-of-means, weight each by its
    eigenvalue clamped at 0, sum, normalize, and flip the result to point along the reference too."""
    d = bases[0].shape[0]
    m_pos = sum((bases[i].double() @ bases[i].double().T for i in range(len(bases)) if positive[i]), torch.zeros(d, d, dtype=torch.float64))
    m_neg = sum((bases[i].double() @ bases[i].double().T for i in range(len(bases)) if not positive[i]), torch.zeros(d, d, dtype=torch.float64))
    n_pos = int(sum(positive))
    matrix = m_pos / n_pos - m_neg / (len(bases) - n_pos)
    values, vectors = torch.linalg.eigh(matrix)
    order = torch.argsort(values, descending=True)[:eigen_k]
    total = torch.zeros(d, dtype=torch.float64)
    for value, vector in zip(values[order], vectors[:, order].T):
        if float(vector @ reference) < 0:
            vector = -vector
        total += max(float(value), 0.0) * vector
    if float(total @ reference) < 0:
        total = -total
    return total / total.norm(), values[order]


# Each story's basis is a subset of 6 orthonormal directions u_0..u_5 (a random rotation of R^6), so
# M = sum_j (pos_count_j / 6 - neg_count_j / 6) u_j u_j^T exactly: eigenvalues 1, 1/2, 1/3, -1/6, -1/2, -1.
POSITIVE_SETS = [(0, 1), (0, 1, 2), (0, 1, 2), (0, 1, 2), (0, 4), (0, 3)]
NEGATIVE_SETS = [(5, 1, 4), (5, 2, 4), (5, 3, 4), (5, 3, 4), (5,), (5,)]
EIGENVALUES = [1.0, 0.5, 1 / 3, -1 / 6, -0.5, -1.0]


def planted_bases(d=6, seed=0):
    rotation, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    bases = [rotation[:, list(s)].float().contiguous() for s in POSITIVE_SETS + NEGATIVE_SETS]
    return bases, rotation


def test_subspace_direction_equals_an_independent_fp64_reference():
    """eigen_k = 4 reaches the negative eigenvalue -1/6 (clamped to weight 0), and the weights 1, 1/2, 1/3
    differ: dropping the clamp or the eigenvalue weighting changes the answer. Every sign pattern of
    the reference over u_0..u_3 is tried: the eigenvectors' own signs (arbitrary from eigh) can agree
    with at most a couple of them, so skipping the per-vector alignment changes the answer too."""
    bases, rotation = planted_bases()
    n = len(bases)
    patterns = list(itertools.product([1.0, -1.0], repeat=4))
    magnitudes = torch.tensor([0.3, 1.0, 0.7, 0.5], dtype=torch.float64)  # not proportional to the answer
    references = torch.stack([rotation[:, :4] @ (torch.tensor(s, dtype=torch.float64) * magnitudes) for s in patterns])
    membership = torch.tensor([[i < 6 for i in range(n)]] * len(patterns))
    result = subspace_directions(bases, membership, references, eigen_k=4)
    for c, signs in enumerate(patterns):
        expected, top_values = reference_subspace(bases, membership[c].tolist(), references[c], eigen_k=4)
        torch.testing.assert_close(top_values, torch.tensor(EIGENVALUES[:4], dtype=torch.float64), atol=1e-6, rtol=0)
        # the closed form: the three positive eigenvectors with the reference's signs, weighted 1, 1/2, 1/3
        closed = rotation[:, :3] @ (torch.tensor(signs[:3], dtype=torch.float64) * torch.tensor(EIGENVALUES[:3], dtype=torch.float64))
        torch.testing.assert_close(expected, closed / closed.norm(), atol=1e-6, rtol=0)
        torch.testing.assert_close(result.directions[c].double(), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(result.eigvals[0].double(), torch.tensor(EIGENVALUES, dtype=torch.float64), atol=1e-5, rtol=0)


def test_subspace_direction_on_random_bases_equals_the_reference():
    """Generic data: random per-story bases in d = 16 plus a direction only the positives share."""
    generator = torch.Generator().manual_seed(3)
    d, n = 16, 12
    shared = torch.nn.functional.normalize(torch.randn(d, generator=generator), dim=0)
    bases = []
    for i in range(n):
        columns = torch.randn(d, 3, generator=generator)
        if i < 4:
            columns = torch.cat([shared[:, None], columns], dim=1)
        bases.append(torch.linalg.qr(columns)[0])
    membership = torch.tensor([[i < 4 for i in range(n)], [4 <= i < 8 for i in range(n)]])
    references = torch.randn(2, d, generator=generator, dtype=torch.float64)
    result = subspace_directions(bases, membership, references, eigen_k=3)
    for c in range(2):
        expected, top_values = reference_subspace(bases, membership[c].tolist(), references[c], eigen_k=3)
        gaps = (top_values[:-1] - top_values[1:]).abs()
        assert float(gaps.min()) > 1e-3  # eigenvectors well defined
        torch.testing.assert_close(result.directions[c].double(), expected, atol=1e-4, rtol=0)


# ---- steer: alpha is in units of the mean residual norm (first position excluded) ---------------


def test_steer_adds_alpha_times_the_mean_residual_norm_after_the_first_token(tiny_model, monkeypatch):
    import amygdala_tl.pipelines.steer as steer_module

    layer, alpha = 1, 2.5
    prompt = "the cat sat on the mat and the dog was quiet"
    directions = torch.nn.functional.normalize(torch.randn(2, 2, 32, generator=torch.Generator().manual_seed(0)), dim=-1)
    readout = build_readout(["calm", "afraid"], [1, 2], directions)

    tokens = torch.tensor([tiny_model.tokenizer(prompt)["input_ids"]])
    store = {}
    with torch.inference_mode():
        tiny_model.bridge.run_with_hooks(
            tokens, return_type=None, fwd_hooks=[(hooks.resid_post(layer), lambda act, hook: store.__setitem__("resid", act.detach().clone()))]
        )
    norms = store["resid"][0].norm(dim=-1)
    expected = alpha * float(norms[1:].mean())
    assert abs(float(norms.mean()) - float(norms[1:].mean())) > 1e-3 * float(norms.mean())  # the first position matters

    used_hooks = []
    original_generate = steer_module.generate

    def recording_generate(model, prompt, fwd_hooks, *args, **kwargs):
        used_hooks.append(list(fwd_hooks))
        return original_generate(model, prompt, fwd_hooks, *args, **kwargs)

    monkeypatch.setattr(steer_module, "generate", recording_generate)
    result = steer_module.steer(tiny_model, readout, "afraid", layer, alpha, prompt, max_new_tokens=1)
    assert result.added_norm == pytest.approx(expected, rel=1e-5)

    # what the steered run really adds to the residual at the layer: alpha * mean norm * the unit vector
    steered_hooks = [h for h in used_hooks if h]
    assert len(steered_hooks) == 1
    with torch.inference_mode():
        tiny_model.bridge.run_with_hooks(
            tokens,
            return_type=None,
            fwd_hooks=steered_hooks[0] + [(hooks.resid_post(layer), lambda act, hook: store.__setitem__("steered", act.detach().clone()))],
        )
    added = (store["steered"] - store["resid"])[0]
    vector = readout.vectors[layer][1].float()
    torch.testing.assert_close(added, (expected * vector).expand_as(added), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(added.norm(dim=-1), torch.full((tokens.shape[1],), expected * float(vector.norm())), atol=1e-4, rtol=1e-5)


# ---- lda (the default method): an independent numpy reference of docs/methods.md's "whitened" ------


def reference_lda(x, labels, shrink=True):
    """docs/methods.md, "whitened", from scratch in numpy: every text minus its own class mean (each concept's
    positives a class, the scenario baselines (label -1) one more), the pooled within-class covariance
    S = R^T R / n shrunk by the Ledoit-Wolf formula written out (shrinkage = min(beta, delta) / delta with
    beta = sum_k |r_k r_k^T - S|_F^2 / n^2 and delta = |S - mu I|_F^2, mu = tr S / d), then per concept
    S^-1 (mean(P) - mean(N)), unit norm, pointing along the diff-of-means."""
    import numpy as np

    n, d = x.shape
    residuals = np.empty_like(x)
    for label in set(labels.tolist()):
        rows = labels == label
        residuals[rows] = x[rows] - x[rows].mean(0)
    s = residuals.T @ residuals / n
    mu = np.trace(s) / d
    beta = sum(np.linalg.norm(np.outer(r, r) - s) ** 2 for r in residuals) / n**2
    delta = np.linalg.norm(s - mu * np.eye(d)) ** 2
    shrinkage = min(beta, delta) / delta if shrink else 0.0
    sigma = (1 - shrinkage) * s + shrinkage * mu * np.eye(d)
    out = []
    for c in range(int(labels.max()) + 1):
        diff = x[labels == c].mean(0) - x[labels != c].mean(0)
        w = np.linalg.solve(sigma, diff)
        out.append(np.sign(w @ diff) * w / np.linalg.norm(w))
    return np.stack(out), shrinkage


def lda_scenario(seed, d, n_per_concept, n_baselines, n_concepts=3):
    """Concepts with distinct means and a shared, correlated within-class spread; the scenario baselines sit
    at a large shared offset and vary along their own direction too (style that no concept owns)."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.eye(d, dtype=torch.float64) + 0.5 * torch.randn(d, d, generator=generator, dtype=torch.float64)
    means = 1.5 * torch.randn(n_concepts, d, generator=generator, dtype=torch.float64)
    offset = 6.0 * torch.randn(d, generator=generator, dtype=torch.float64)
    style = torch.nn.functional.normalize(torch.randn(d, generator=generator, dtype=torch.float64), dim=0)
    rows, labels = [], []
    for c in range(n_concepts):
        rows.append(torch.randn(n_per_concept, d, generator=generator, dtype=torch.float64) @ mixing + means[c])
        labels += [c] * n_per_concept
    baselines = torch.randn(n_baselines, d, generator=generator, dtype=torch.float64) @ mixing + offset
    baselines += 4.0 * torch.randn(n_baselines, 1, generator=generator, dtype=torch.float64) * style
    rows.append(baselines)
    labels += [-1] * n_baselines
    labels_t = torch.tensor(labels)
    membership = torch.stack([labels_t == c for c in range(n_concepts)])
    return torch.cat(rows).float(), membership, labels_t


def lda_fit(acts, membership):
    from amygdala_tl.directions.registry import METHODS, MethodInputs

    return METHODS["lda"].fit(acts, membership, MethodInputs(torch.full((acts.shape[0],), -1))).double()


def test_lda_is_the_default_method_and_equals_an_independent_reference_on_concepts_and_offset_baselines():
    """3 concepts + baselines at a shared offset, n >> d. Leaving the baselines out of the within-class
    residuals, or centring every text on the global mean, moves the directions far from the reference."""
    from amygdala_tl.pipelines.extract import ExtractConfig

    assert ExtractConfig().method == "lda"
    for seed in range(3):
        acts, membership, labels = lda_scenario(seed, d=8, n_per_concept=300, n_baselines=300)
        expected, shrinkage = reference_lda(acts.double().numpy(), labels.numpy())
        assert 0 < shrinkage < 0.05  # n >> d: Ledoit-Wolf barely shrinks
        result = lda_fit(acts, membership)
        torch.testing.assert_close(result, torch.from_numpy(expected), atol=2e-6, rtol=0)
        pooled = diff_of_means(acts, membership)
        assert float((torch.nn.functional.normalize(pooled, dim=-1) * result).sum(-1).max()) < 0.99  # whitening matters here


def test_lda_shrinkage_is_ledoit_wolf_to_a_1e_6_norm():
    """d close to n: the shrinkage is large, and the direction depends on its exact value. Without the
    Ledoit-Wolf intensity (no shrinkage, another estimator) the direction is off by far more than 1e-6."""
    for seed in range(3):
        acts, membership, labels = lda_scenario(10 + seed, d=24, n_per_concept=10, n_baselines=10, n_concepts=2)
        expected, shrinkage = reference_lda(acts.double().numpy(), labels.numpy())
        unshrunk, _ = reference_lda(acts.double().numpy(), labels.numpy(), shrink=False)
        assert shrinkage > 0.05 and float(torch.from_numpy(expected - unshrunk).norm(dim=-1).min()) > 1e-2
        result = lda_fit(acts, membership)
        assert float((result - torch.from_numpy(expected)).norm(dim=-1).max()) < 1e-6


def test_lda_fold_refits_from_shared_statistics_equal_a_refit_on_the_kept_texts():
    """Cross-validation refits lda without each fold from statistics computed once (LdaFolds): the shrunk
    covariance equals sklearn's Ledoit-Wolf on the kept texts' residuals, and the directions the independent
    reference, where the shrinkage is large (d close to n) and where a whole class is held out of a fold."""
    from sklearn.covariance import LedoitWolf

    from amygdala_tl.directions.lda import LdaFolds, within_class_residuals

    for seed in range(3):
        acts, membership, labels = lda_scenario(20 + seed, d=24, n_per_concept=12, n_baselines=9)
        folds = LdaFolds(acts, membership)
        n = acts.shape[0]
        for held_rows in (torch.arange(seed, n, 4), torch.arange(n - 9, n)):  # every 4th text; every baseline
            held = torch.zeros(n, dtype=torch.bool)
            held[held_rows] = True
            kept = (~held).nonzero().flatten()
            covariance, _ = folds.statistics_without(held)
            reference = LedoitWolf(assume_centered=True).fit(within_class_residuals(acts[kept], membership[:, kept]).numpy())
            assert reference.shrinkage_ > 0.05
            torch.testing.assert_close(covariance, torch.from_numpy(reference.covariance_), rtol=1e-9, atol=1e-12)
            expected, _ = reference_lda(acts[kept].double().numpy(), labels[kept].numpy())
            assert float((folds.without(held).double() - torch.from_numpy(expected)).norm(dim=-1).max()) < 1e-6


# ---- pca aggregator: the principal component's arbitrary sign is aligned with the diff-of-means ----


def test_pca_points_along_the_diff_of_means_over_seeds_and_under_negated_activations():
    """SVD returns a component or its negative at random; for every seed, concept and pairing, and for the
    activations negated (which negates the answer, not just the data), direction . diff_of_means > 0."""
    from amygdala_tl.directions.registry import METHODS, MethodInputs

    n_concepts, per_concept, n_baselines, d = 3, 6, 4, 12
    n = n_concepts * per_concept + n_baselines
    membership = torch.zeros(n_concepts, n, dtype=torch.bool)
    for c in range(n_concepts):
        membership[c, c * per_concept : (c + 1) * per_concept] = True
    partner = torch.full((n,), -1)
    partner[[0, 6, 12]] = n - 1  # one framing of each concept is paired with the last baseline
    flips = 0
    for seed in range(8):
        generator = torch.Generator().manual_seed(seed)
        # each concept's stories spread widely along an axis of their own, around a mean only a little off the
        # others': the first component is that axis, and its sign says nothing about the diff-of-means
        rows = labels_of_rows(membership)
        axes = torch.nn.functional.normalize(torch.randn(n_concepts + 1, d, generator=generator), dim=-1)
        spread = 4.0 * torch.randn(n, 1, generator=generator) * axes[rows]
        acts = 0.3 * torch.randn(n, d, generator=generator) + torch.randn(n_concepts + 1, d, generator=generator)[rows] + spread
        for sign in (1.0, -1.0):
            x = sign * acts
            direction = METHODS["pca"].fit(x, membership, MethodInputs(partner)).double()
            diff = diff_of_means(x, membership)
            assert torch.allclose(direction.norm(dim=-1), torch.ones(n_concepts, dtype=torch.float64), atol=1e-6)
            assert ((direction * diff).sum(-1) > 0).all(), (seed, sign)
            raw_sign = torch.sign((pca_raw(x, membership, partner) * diff).sum(-1))
            flips += int((raw_sign < 0).sum())
        torch.testing.assert_close(
            METHODS["pca"].fit(-acts, membership, MethodInputs(partner)),
            -METHODS["pca"].fit(acts, membership, MethodInputs(partner)),
            atol=1e-6,
            rtol=0,
        )
    assert flips > 0  # the unaligned components really do point the wrong way sometimes


def labels_of_rows(membership):
    """Row index into [concept means..., baseline mean] of every text."""
    has = membership.any(0)
    return torch.where(has, membership.float().argmax(0), torch.full_like(has, membership.shape[0], dtype=torch.long))


def pca_raw(acts, membership, partner):
    from amygdala_tl.directions.aggregators import pca_directions

    return pca_directions(acts, membership, partner)
