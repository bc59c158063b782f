"""Attribution patching on the bundled model: the estimates rank heads as real mean ablation does."""

from __future__ import annotations

import pytest
import torch

from amygdala_tl.capture import encode, make_batches
from amygdala_tl.capture.forward import last_token_resid
from amygdala_tl.circuits.concept import concept_circuit, sample_texts

from ..conftest import first_sessions_corpus

pytestmark = pytest.mark.integration
LAYER, NEGATIVES = 12, 4


def test_attribution_ranks_heads_as_real_ablation_does(bundled):
    """Every head of layers 11-12 ablated for real beside its estimate: on a trained model the
    estimate is first order only, so the check is on rank agreement, not equality."""
    corpus = first_sessions_corpus()
    texts, is_pos = sample_texts(corpus, "anxious", NEGATIVES, seed=0)
    ids, _ = encode(bundled.tokenizer, texts, 512)
    resid = last_token_resid(bundled, make_batches(ids, 8, bundled.tokenizer.pad_token_id), [LAYER])[LAYER]
    vector = torch.nn.functional.normalize(resid[is_pos].mean(0) - resid[~is_pos].mean(0), dim=0)  # diff-of-means readout
    circuit = concept_circuit(bundled, corpus, "anxious", LAYER, vector, n_negatives=NEGATIVES, layers=[11, 12], mode="ablation", verify_top=5)
    agreement = circuit.agreement
    assert agreement is not None and len(agreement.heads) == 18
    assert agreement.spearman is not None and agreement.spearman > 0.7
    assert agreement.top_n_overlap >= 0.6
    strongest = max(range(18), key=lambda i: abs(agreement.ablation[i]))
    assert agreement.attribution[strongest] == pytest.approx(agreement.ablation[strongest], rel=0.1)  # the largest effect, to 10%
