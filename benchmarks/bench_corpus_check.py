"""`corpus check` at 3,000 texts: the indexed near-duplicate check against the exact all-pairs check.

The shipped corpus (every text: training and both development sets) is topped up to --texts with texts made
of sentences drawn from it (so they share many word 5-grams with real texts: a hard case for the index). The
indexed check (word 5-gram postings: only pairs that share a 5-gram are scored) and the exact check (every
pair's Jaccard from Python sets) run on the same texts; they must find the same pairs above the threshold.
Target: the indexed check under 30 s at 3,000 texts on a 2-core CPU.

    python -m benchmarks.bench_corpus_check [--texts 3000] [--exact-sample 1000]
"""

from __future__ import annotations

import argparse
import random
import time
from itertools import combinations
from pathlib import Path

from amygdala_tl.corpus.check import NEAR_DUPLICATE_JACCARD, overlapping_pairs, word_ngrams


def topped_up(texts: list[str], n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    sentences = [s for text in texts for s in text.replace("\n", " ").split(". ") if s]
    out = list(texts)
    while len(out) < n:
        drawn: list[str] = []
        while sum(len(s.split()) for s in drawn) < 150:
            drawn.append(rng.choice(sentences))
        out.append(". ".join(drawn))
    return out


def exact_pairs(texts: list[str]) -> dict[tuple[int, int], float]:
    grams = [word_ngrams(text) for text in texts]
    return {(a, b): len(grams[a] & grams[b]) / len(grams[a] | grams[b]) for a, b in combinations(range(len(texts)), 2) if grams[a] & grams[b]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default="corpus")
    parser.add_argument("--texts", type=int, default=3000)
    parser.add_argument("--exact-sample", type=int, default=1000, help="texts the exact all-pairs check runs on (it grows as n^2)")
    args = parser.parse_args()
    shipped = [path.read_text(encoding="utf-8") for path in sorted(Path(args.corpus).rglob("*.txt"))]
    texts = topped_up(shipped, args.texts)
    started = time.perf_counter()
    indexed = overlapping_pairs(texts)
    indexed_s = time.perf_counter() - started
    sample = texts[: args.exact_sample]
    started = time.perf_counter()
    exact = exact_pairs(sample)
    exact_s = time.perf_counter() - started
    indexed_sample = {pair: j for pair, j in overlapping_pairs(sample).items()}
    assert indexed_sample.keys() == exact.keys() and all(abs(indexed_sample[p] - exact[p]) < 1e-12 for p in exact), "indexed != exact"
    above = sum(j > NEAR_DUPLICATE_JACCARD for j in indexed.values())
    pairs_all, pairs_sample = len(texts) * (len(texts) - 1) / 2, len(sample) * (len(sample) - 1) / 2
    print(f"{len(shipped)} shipped texts topped up to {len(texts)}; {len(indexed)} pairs share a 5-gram, {above} above {NEAR_DUPLICATE_JACCARD}")
    print(f"indexed check, {len(texts)} texts: {indexed_s:.1f} s (target < 30 s)")
    print(f"exact all-pairs check, {len(sample)} texts: {exact_s:.1f} s; same pairs and Jaccards as the index on them")
    print(
        f"exact check scaled to {len(texts)} texts (pairs x {pairs_all / pairs_sample:.1f}): ~{exact_s * pairs_all / pairs_sample:.0f} s, "
        f"{exact_s * pairs_all / pairs_sample / indexed_s:.0f}x the indexed check"
    )


if __name__ == "__main__":
    main()
