"""Quality metrics and held-out evaluation against hand computations on synthetic activations."""

from __future__ import annotations

import json
import math

import pytest
import torch

from amygdala_tl.directions.pooled import diff_of_means, normalize
from amygdala_tl.quality.heldout import heldout_evaluation, labels_of, loo_metrics, loo_pooled_scores
from amygdala_tl.quality.metrics import best_neurons, cosine_matrix, linear_combination, nearest_concepts, variance_ratios


def test_first_pc_ratio_matches_a_hand_computation():
    # positives spread along x (variance 4) and y (variance 1): first PC carries 4 / 5
    positives = torch.tensor([[2.0, 1.0, 0.0], [-2.0, -1.0, 0.0], [2.0, -1.0, 0.0], [-2.0, 1.0, 0.0]])
    ratios = variance_ratios(positives)
    assert ratios[0] == pytest.approx(0.8) and ratios[1] == pytest.approx(0.2)
    assert variance_ratios(positives[:1]) == [1.0]


def test_ridge_r2_of_an_exact_combination_is_one():
    torch.manual_seed(0)
    others = torch.randn(4, 50)
    target = 0.7 * others[0] - 0.4 * others[2]
    directions = torch.cat([target[None], others])
    names = ["target", "a", "b", "c", "d"]
    result = linear_combination(directions, names, 0)
    assert result["r_squared"] > 0.999 and result["residual_norm"] < 0.05
    assert [name for name, _ in result["top_contributors"][:2]] == ["a", "c"]
    assert result["top_contributors"][0][1] == pytest.approx(0.7, abs=0.01)
    assert result["top_contributors"][1][1] == pytest.approx(-0.4, abs=0.01)
    independent = linear_combination(torch.randn(5, 50), names, 0)
    assert independent["r_squared"] < 0.5


def test_the_ridge_equals_sklearns_ridge_and_r2_score():
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score

    directions = torch.randn(7, 40, generator=torch.Generator().manual_seed(3))
    directions[0] += 0.8 * directions[3]
    names = [f"c{i}" for i in range(7)]
    for index in (0, 4):
        features, target = directions[[i for i in range(7) if i != index]].double().T.numpy(), directions[index].double().numpy()
        model = Ridge(alpha=0.01, fit_intercept=False).fit(features, target)
        result = linear_combination(directions, names, index)
        assert result["r_squared"] == pytest.approx(r2_score(target, model.predict(features)), abs=1e-10)
        expected = sorted(zip([n for n in names if n != names[index]], model.coef_), key=lambda pair: -abs(pair[1]))[:5]
        assert [name for name, _ in result["top_contributors"]] == [name for name, _ in expected]
        assert [c for _, c in result["top_contributors"]] == pytest.approx([c for _, c in expected], abs=1e-10)


def test_best_neuron_finds_a_planted_neuron_with_its_sign():
    torch.manual_seed(0)
    w_out = torch.randn(100, 32)
    direction = normalize(torch.randn(32))
    w_out[37] = -3.0 * direction + 0.01 * torch.randn(32)
    result = best_neurons(w_out, direction)
    assert result["best_neuron_idx"] == 37 and result["best_neuron_cosine"] < -0.99
    assert result["top5_neurons"][0] == [37, result["best_neuron_cosine"]]
    assert best_neurons(None, direction)["best_neuron_idx"] is None


def test_nearest_concepts_excludes_itself_and_sorts():
    directions = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    nearest = nearest_concepts(cosine_matrix(directions), ["a", "b", "c", "d"], 0, k=3)
    assert [name for name, _ in nearest] == ["b", "c", "d"]
    assert nearest[0][1] == pytest.approx(0.9 / math.hypot(0.9, 0.1), abs=1e-5)


def clusters(n_concepts=4, per_concept=6, n_baselines=5, d=16, spread=0.3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_concepts, d, generator=generator) * 3
    acts, labels = [], []
    for c in range(n_concepts):
        acts.append(centres[c] + spread * torch.randn(per_concept, d, generator=generator))
        labels += [c] * per_concept
    acts.append(spread * torch.randn(n_baselines, d, generator=generator))
    labels += [-1] * n_baselines
    labels = torch.tensor(labels)
    return torch.cat(acts), torch.stack([labels == c for c in range(n_concepts)])


def test_loo_scores_equal_an_explicit_refit():
    acts, membership = clusters()
    fast = loo_pooled_scores(acts, membership)
    for t in range(acts.shape[0]):
        keep = torch.arange(acts.shape[0]) != t
        refit = normalize(diff_of_means(acts[keep], membership[:, keep])).float()
        torch.testing.assert_close(fast[t], refit @ acts[t], atol=1e-4, rtol=1e-4)


def test_heldout_auroc_is_one_on_separable_clusters_and_half_on_shuffled_labels():
    acts, membership = clusters()
    report = heldout_evaluation(acts[None], [3], membership, ["a", "b", "c", "d"], n_layers=6)
    block = report.layers[3]
    assert block.mean_auroc > 0.99 and block.top1 == 1.0
    assert block.random_auroc is not None and 0.3 < block.random_auroc < 0.7
    shuffled_aurocs = []
    for seed in range(10):
        permutation = torch.randperm(acts.shape[0], generator=torch.Generator().manual_seed(seed))
        shuffled = heldout_evaluation(acts[permutation][None], [3], membership, ["a", "b", "c", "d"], n_layers=6)
        shuffled_aurocs.append(shuffled.layers[3].mean_auroc)
    assert abs(sum(shuffled_aurocs) / len(shuffled_aurocs) - 0.5) < 0.1
    json.dumps(report.to_json(), allow_nan=False)  # strict JSON


def test_top1_counts_only_the_held_out_concepts_own_rank():
    scores = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0], [0.0, 0.0]])
    labels = labels_of(torch.tensor([[True, False, True, False], [False, True, False, False]]))
    result = loo_metrics(scores, labels, torch.tensor([True, True]), ["a", "b"])
    assert labels.tolist() == [0, 1, 0, -1]
    assert result.top1 == 1.0 and {c: block["top1"] for c, block in result.per_concept.items()} == {"a": 1.0, "b": 1.0}
    assert result.per_concept["b"]["auroc"] == 1.0


def test_centred_scores_remove_a_shared_offset():
    acts, membership = clusters(spread=0.3)
    offset = torch.zeros(acts.shape[1])
    offset[0] = 200.0  # every text shares a large component: raw scores carry mu . v_c per concept
    shifted = acts + offset
    centred = loo_pooled_scores(shifted, membership, centered=True)
    t = 4
    keep = torch.arange(acts.shape[0]) != t
    directions = normalize(diff_of_means(shifted[keep], membership[:, keep])).float()
    expected = (shifted[t] - shifted[keep].mean(0)) @ directions.T
    torch.testing.assert_close(centred[t], expected, atol=1e-3, rtol=1e-4)
    report = heldout_evaluation(shifted[None], [0], membership, ["a", "b", "c", "d"], n_layers=2).layers[0]
    assert report.top1_centered == 1.0 and report.mean_auroc_centered is not None and report.mean_auroc_centered > 0.99
