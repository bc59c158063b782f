"""The declared reading: pooling and reading are one choice, and every evaluation reads the way the export declares."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from amygdala_tl.capture import capture, encode, reading
from amygdala_tl.formats.readout import served_scores
from amygdala_tl.quality.evaluation import bootstrap_interval, mean_rank_auroc, rank_metrics

from ..conftest import client_reading, hf_block_outputs, make_tiny_hf


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
    expected = rank_metrics(z, labels, concepts).mean_auroc
    assert mean_rank_auroc(z.double().numpy(), labels.numpy()) == pytest.approx(expected, abs=1e-12)


def test_bootstrap_interval_brackets_the_estimate_and_narrows_with_more_texts():
    z, labels = labelled_scores(0, n_texts=140)
    concepts = [f"c{i}" for i in range(z.shape[1])]
    point = rank_metrics(z, labels, concepts)
    auroc, top1 = bootstrap_interval(z, labels)
    assert auroc[0] < point.mean_auroc < auroc[1] and top1[0] < point.top1 < top1[1]
    big_z, big_labels = labelled_scores(0, n_texts=1400)
    big_auroc, _ = bootstrap_interval(big_z, big_labels)
    assert big_auroc[1] - big_auroc[0] < 0.5 * (auroc[1] - auroc[0])
    assert np.isclose(big_auroc[1] - big_auroc[0], 0, atol=0.05)


TEXTS = ["the cat sat on the mat", "rain", "she had a cup of tea at the table in the morning and it was warm", "the dog sat"]


@pytest.mark.parametrize("pooling", ["mean", "last", "second_half", "tail3", "ema4"])
def test_declared_reading_equals_the_served_per_token_scores_aggregated_by_a_client(tiny_model, pooling):
    """A client gets <h_t, v> per token from the server and aggregates them as the export declares; extract's
    pooled activation read through the fp16 rows must give the same number, whatever the batch and padding."""
    hf_model, layer = make_tiny_hf(seed=0).eval(), 1  # the same weights as tiny_model, plain HF
    rows = torch.nn.functional.normalize(torch.randn(5, 32, generator=torch.Generator().manual_seed(3)), dim=-1).half()
    ours = served_scores(capture(tiny_model, TEXTS, [layer], pooling=pooling, batch_size=3).resid[0], rows)
    declared = reading(pooling)
    for i, ids in enumerate(encode(tiny_model.tokenizer, TEXTS)[0]):
        for padding, left in ((0, False), (3, False), (4, True)):
            per_token = served_scores(
                hf_block_outputs(hf_model, ids, [layer], padding=padding, left=left)[layer], rows
            )  # what the server returns, token by token
            client = client_reading(per_token, declared)
            torch.testing.assert_close(ours[i], client, atol=1e-4, rtol=1e-4)
