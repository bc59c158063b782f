"""Find the induction circuit: induction heads, the previous-token heads before them, and what
ablating them does to in-context copying (loss on the repeated half of [BOS] x x sequences).

    python scripts/find_induction_circuit.py [--model PATH_OR_ID] [--top 3]
"""

from __future__ import annotations

import argparse

from amygdala_tl.capture import forward
from amygdala_tl.circuits.ablation import Condition, ablation_hooks
from amygdala_tl.circuits.detectors import induction, natural_batch, previous_token, repeated_random_tokens
from amygdala_tl.circuits.head import Head
from amygdala_tl.corpus import load_corpus
from amygdala_tl.model import load_model
from amygdala_tl.model_spec import resolve_model_spec


def repeated_half_loss(model, tokens, interventions) -> float:
    """Mean next-token loss over the second copy of x: low when the model copies in context."""
    logits = forward(model, tokens, interventions=interventions, logits=True).logits.float()
    half = (tokens.shape[1] - 1) // 2
    log_probs = logits[:, half + 1 : -1].log_softmax(-1)
    targets = tokens[:, half + 2 :]
    return float(-log_probs.gather(-1, targets[..., None]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--top", type=int, default=3)
    args = parser.parse_args()
    model = load_model(resolve_model_spec(args.model), device="cpu")

    induct = induction(model, batch=6, half=40)
    print("induction heads:", ", ".join(f"{h} {s:.2f}" for h, s in induct.top(args.top)))
    natural = natural_batch(model.tokenizer, load_corpus("corpus").texts[:24], 48)
    previous = previous_token(model, natural)
    first_induction_layer = min(Head.parse(h).layer for h, _ in induct.top(args.top))
    earlier = [(h, s) for h, s in previous.top(20) if Head.parse(h).layer < first_induction_layer][: args.top]
    print("previous-token heads before them:", ", ".join(f"{h} {s:.2f}" for h, s in earlier))

    tokens = repeated_random_tokens(model.tokenizer, 6, 40, seed=7)
    clean = repeated_half_loss(model, tokens, [])
    print(f"loss on the repeated half: clean {clean:.3f}")
    for label, heads in (("induction heads", [h for h, _ in induct.top(args.top)]), ("previous-token heads", [h for h, _ in earlier])):
        if heads:
            hooks = ablation_hooks(model, Condition(tuple(Head.parse(h) for h in heads), "zero"), None)
            print(f"  zero-ablate {label} ({', '.join(heads)}): {repeated_half_loss(model, tokens, hooks):.3f}")


if __name__ == "__main__":
    main()
