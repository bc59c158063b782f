"""Subspace method: planted direction recovery, equality with the naive reference, both solvers."""

from __future__ import annotations

import pytest
import torch
from benchmarks.subspace_naive import naive_subspace

from amygdala_tl.directions.pooled import diff_of_means
from amygdala_tl.directions.subspace import story_basis, subspace_directions


def random_bases(n_texts, d, k, seed):
    generator = torch.Generator().manual_seed(seed)
    return [story_basis(torch.randn(k + 1, d, generator=generator)) for _ in range(n_texts)]


def test_story_basis_drops_the_zero_variance_direction_and_is_orthonormal():
    tokens = torch.randn(6, 40)
    basis = story_basis(tokens)
    assert basis.shape == (40, 5)  # 6 tokens, centred: rank 5
    torch.testing.assert_close(basis.T @ basis, torch.eye(5), atol=1e-5, rtol=0)
    assert story_basis(tokens, k=3).shape == (40, 3)
    assert story_basis(tokens[:1]).shape == (40, 0)  # one token: nothing varies


def test_planted_shared_direction_is_recovered_and_nuisances_cancel():
    generator = torch.Generator().manual_seed(0)
    d, n_tok = 64, 12
    planted = torch.nn.functional.normalize(torch.randn(d, generator=generator), dim=0)
    bases, labels = [], []
    for i in range(40):
        tokens = torch.randn(n_tok, d, generator=generator)  # per-story nuisance directions
        if i < 16:  # positives: every token also moves along the planted direction, strongly
            tokens = tokens + 20 * torch.randn(n_tok, 1, generator=generator) * planted
        bases.append(story_basis(tokens, k=4))
        labels.append(i < 16)
    membership = torch.tensor([labels])
    reference = planted[None] * 0.1 + 0.01 * torch.randn(1, d, generator=generator)
    result = subspace_directions(bases, membership, reference, eigen_k=1)
    assert float(result.directions[0] @ planted) > 0.99  # recovered, with the right sign
    assert result.eigvals[0, 0] > 0.5 and result.eigvals[0, 1] < 0.3


@pytest.mark.parametrize("dense_max_dim", [10_000, 0], ids=["dense", "lanczos"])
def test_fast_equals_naive_reference(dense_max_dim):
    d, n_texts = 48, 14
    bases = random_bases(n_texts, d, k=5, seed=1)
    labels = torch.tensor([i % 3 for i in range(n_texts)])  # three concepts, no baseline
    membership = torch.stack([labels == c for c in range(3)])
    acts = torch.randn(n_texts, d, generator=torch.Generator().manual_seed(2))
    reference = diff_of_means(acts, membership)
    fast = subspace_directions(bases, membership, reference, eigen_k=3, dense_max_dim=dense_max_dim)
    naive_dirs, naive_vals = naive_subspace(bases, membership, reference, eigen_k=3)
    cosines = (fast.directions * naive_dirs).sum(-1)
    assert cosines.min() > 0.9999
    n = fast.eigvals.shape[1]
    torch.testing.assert_close(fast.eigvals, naive_vals[:, :n], rtol=1e-5, atol=1e-6)
    assert (fast.directions @ reference.float().T).diagonal().min() > 0  # sign aligned with the pooled direction
