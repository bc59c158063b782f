"""Pooled diff-of-means against a hand computation, baselines included as negatives."""

from __future__ import annotations

import torch

from amygdala_tl.directions.pooled import diff_of_means, normalize


def test_pooled_equals_hand_computed_diff_of_means():
    torch.manual_seed(0)
    acts = torch.randn(2, 7, 5)  # 2 layers, 7 texts
    labels = ["a", "a", "b", "b", "b", "baseline", "baseline"]
    concepts = ["a", "b"]
    membership = torch.tensor([[label == c for label in labels] for c in concepts])
    directions = torch.stack([normalize(diff_of_means(layer_acts, membership)).float() for layer_acts in acts])
    assert directions.shape == (2, 2, 5)
    for layer in range(2):
        for ci, concept in enumerate(concepts):
            pos = [i for i, label in enumerate(labels) if label == concept]
            neg = [i for i, label in enumerate(labels) if label != concept]  # other concept + baselines
            expected = acts[layer, pos].mean(0) - acts[layer, neg].mean(0)
            expected = expected / expected.norm()
            torch.testing.assert_close(directions[layer, ci], expected, atol=1e-6, rtol=1e-6)
    assert torch.allclose(directions.norm(dim=-1), torch.ones(2, 2))


def test_diff_of_means_is_unnormalized_and_fp64():
    acts = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    diff = diff_of_means(acts, torch.tensor([[True, False, False]]))
    assert diff.dtype == torch.float64
    torch.testing.assert_close(diff[0], torch.tensor([2.0, -1.0], dtype=torch.float64))
