"""Head census on the bundled model: agreement with TransformerLens's detect_head, real induction heads."""

from __future__ import annotations

import pytest
import torch
from transformer_lens.head_detector import detect_head

from amygdala_tl.circuits.detectors import induction, natural_batch, previous_token
from amygdala_tl.circuits.patterns import (
    attention_patterns,
    duplicate_token_detection,
    induction_detection,
    previous_token_detection,
    score_detection,
)

pytestmark = pytest.mark.integration

SEQUENCES = [
    "The cat sat on the mat. The cat sat on the mat again, and the dog watched the cat.",
    "One two three, one two three: she counted the steps and counted them again.",
]
PATTERNS = {"previous_token_head": previous_token_detection, "duplicate_token_head": duplicate_token_detection, "induction_head": induction_detection}


@pytest.mark.parametrize("name", list(PATTERNS))
@pytest.mark.parametrize("exclude_bos, exclude_current_token", [(False, False), (True, True)])
def test_scores_equal_transformer_lens_detect_head(bundled, name, exclude_bos, exclude_current_token):
    ours = []
    for sequence in SEQUENCES:
        tokens = bundled.bridge.to_tokens(sequence).cpu()
        ours.append(
            score_detection(
                attention_patterns(bundled, tokens),
                PATTERNS[name](tokens),
                exclude_bos=exclude_bos,
                exclude_current_token=exclude_current_token,
                applicable_only=False,
            )
        )
    theirs = detect_head(bundled.bridge, SEQUENCES, name, exclude_bos=exclude_bos, exclude_current_token=exclude_current_token)
    torch.testing.assert_close(torch.stack(ours).mean(0), theirs.float(), atol=1e-5, rtol=0)


def test_trained_model_has_induction_and_previous_token_heads(bundled):
    result = induction(bundled, batch=6, half=40)
    chance = 1 / 40  # attention spread evenly over the positions a second-half query can see is below this
    top_head, top_score = result.top(1)[0]
    assert top_score > 10 * chance and len(result.flagged) >= 2
    from amygdala_tl.corpus import load_corpus

    from ..conftest import CORPUS

    natural = natural_batch(bundled.tokenizer, load_corpus(CORPUS).texts[:24], 48)
    previous = previous_token(bundled, natural)
    assert previous.top(1)[0][1] > 0.5
