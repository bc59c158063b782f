"""Are previous-token heads redundant? Ablate the top previous-token heads one, two, three at a
time and watch the best induction head's score: a circuit with backups degrades gracefully.

    python scripts/previous_token_redundancy.py [--model PATH_OR_ID]
"""

from __future__ import annotations

import argparse

from amygdala_tl.circuits.ablation import Condition, ablation_hooks
from amygdala_tl.circuits.detectors import induction, natural_batch, previous_token, repeated_random_tokens
from amygdala_tl.circuits.head import Head
from amygdala_tl.circuits.patterns import attention_patterns, induction_detection, score_detection
from amygdala_tl.corpus import load_corpus
from amygdala_tl.model import load_model
from amygdala_tl.model_spec import resolve_model_spec


def induction_score_with(model, tokens, induction_head: Head, interventions) -> float:
    """The chosen induction head's score while other heads are ablated."""
    patterns = attention_patterns(model, tokens, [induction_head.layer], interventions)
    return float(score_detection(patterns, induction_detection(tokens))[0, induction_head.head])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    model = load_model(resolve_model_spec(args.model), device="cpu")

    best, _ = induction(model, batch=6, half=40).top(1)[0]
    induction_head = Head.parse(best)
    natural = natural_batch(model.tokenizer, load_corpus("corpus").texts[:24], 48)
    candidates = [h for h, _ in previous_token(model, natural).top(30) if Head.parse(h).layer < induction_head.layer][:3]
    tokens = repeated_random_tokens(model.tokenizer, 6, 40, seed=3)
    print(f"induction head {best}: score {induction_score_with(model, tokens, induction_head, []):.3f} (clean)")
    for n in range(1, len(candidates) + 1):
        heads = tuple(Head.parse(h) for h in candidates[:n])
        hooks = ablation_hooks(model, Condition(heads, "zero"), None)
        print(f"  without {', '.join(candidates[:n])}: {induction_score_with(model, tokens, induction_head, hooks):.3f}")


if __name__ == "__main__":
    main()
