"""The declared reading: pooling and reading are one choice, and every evaluation reads the way the export declares."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from amygdala_tl.quality.evaluation import bootstrap_interval, mean_rank_auroc, rank_metrics


def labelled_scores(seed: int, n_texts: int = 90, n_concepts: int = 6, signal: float = 1.0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_texts) % (n_concepts + 1) - 1  # -1: neutral texts
    z = torch.randn(n_texts, n_concepts, generator=generator)
    z[labels >= 0, labels[labels >= 0]] += signal
    return z.round(decimals=1), labels  # rounding makes ties, which sklearn averages


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rank_sum_auroc_equals_sklearn_with_ties(seed):
    z, labels = labelled_scores(seed)
    concepts = [f"c{i}" for i in range(z.shape[1])]
    expected = rank_metrics(z, labels, concepts)["mean_auroc"]
    assert mean_rank_auroc(z.double().numpy(), labels.numpy()) == pytest.approx(expected, abs=1e-12)


def test_bootstrap_interval_brackets_the_estimate_and_narrows_with_more_texts():
    z, labels = labelled_scores(0, n_texts=140)
    concepts = [f"c{i}" for i in range(z.shape[1])]
    point = rank_metrics(z, labels, concepts)
    auroc, top1 = bootstrap_interval(z, labels)
    assert auroc[0] < point["mean_auroc"] < auroc[1] and top1[0] < point["top1"] < top1[1]
    big_z, big_labels = labelled_scores(0, n_texts=1400)
    big_auroc, _ = bootstrap_interval(big_z, big_labels)
    assert big_auroc[1] - big_auroc[0] < 0.5 * (auroc[1] - auroc[0])
    assert np.isclose(big_auroc[1] - big_auroc[0], 0, atol=0.05)
