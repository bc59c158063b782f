"""Subspace method: naive reference vs the library, at d = 5120, 95 concepts, 112 stories x 500 tokens.

Synthetic stories that make the answer well defined (separated top eigenvalues):
- every story spans a 400-dim common subspace (as LM activations share one), which cancels in M;
- concept c's story also carries 6 planted directions u_{c,j}; u_{c,j} also appears in j of the 17
  baselines, so M_c's top eigenvalues are 1 - j/111: separated by 0.009, no ties.
Ties, where they occur in real data, make the direction non-unique; the library reports the
relative eigengap lambda_k - lambda_{k+1} per concept (subspace.json) so a user can see it.

The naive reference is linear in the number of concepts (each concept rebuilds both d x d matrices
and fully eigendecomposes), so by default it runs on --naive-concepts of them and its total time is
extrapolated to all 95; pass --naive-concepts 95 to run it whole (over an hour on 2 cores).
Prints both times, the speedup, and the minimum cosine between their directions.
"""

from __future__ import annotations

import argparse
import time

import torch

from amygdala_tl.directions.pooled import diff_of_means
from amygdala_tl.directions.subspace import story_basis, subspace_directions
from benchmarks.subspace_naive import naive_subspace


def synthetic_bases(d: int, n_concepts: int, n_baselines: int, n_tokens: int, common_rank: int, planted: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    common = torch.linalg.qr(torch.randn(d, common_rank, generator=generator))[0]
    directions = torch.nn.functional.normalize(torch.randn(n_concepts, planted, d, generator=generator), dim=-1)
    baseline_dirs: list[list[torch.Tensor]] = [[] for _ in range(n_baselines)]
    for c in range(n_concepts):
        for j in range(planted):
            for b in torch.randperm(n_baselines, generator=generator)[:j].tolist():
                baseline_dirs[b].append(directions[c, j])
    story_dirs = [list(directions[c]) for c in range(n_concepts)] + baseline_dirs
    bases, pooled = [], []
    for own in story_dirs:
        components = torch.cat([common.T, torch.stack(own)]) if own else common.T
        tokens = torch.randn(n_tokens, components.shape[0], generator=generator) @ components
        bases.append(story_basis(tokens))
        pooled.append(tokens[-1])
    membership = torch.zeros(n_concepts, len(story_dirs), dtype=torch.bool)
    membership[torch.arange(n_concepts), torch.arange(n_concepts)] = True
    return bases, membership, torch.stack(pooled)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=5120)
    parser.add_argument("--concepts", type=int, default=95)
    parser.add_argument("--stories", type=int, default=112)
    parser.add_argument("--tokens", type=int, default=500)
    parser.add_argument("--common-rank", type=int, default=400)
    parser.add_argument("--eigen-k", type=int, default=5)
    parser.add_argument("--naive-concepts", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    start = time.perf_counter()
    bases, membership, pooled = synthetic_bases(
        args.d, args.concepts, args.stories - args.concepts, args.tokens, args.common_rank, args.eigen_k + 1, seed=0
    )
    reference = diff_of_means(pooled, membership)
    print(
        f"data: d={args.d}, {args.concepts} concepts, {len(bases)} stories x {args.tokens} tokens, "
        f"story ranks {min(b.shape[1] for b in bases)}-{max(b.shape[1] for b in bases)} "
        f"({time.perf_counter() - start:.0f} s to generate + SVD)"
    )

    start = time.perf_counter()
    fast = subspace_directions(bases, membership, reference, eigen_k=args.eigen_k)
    fast_s = time.perf_counter() - start

    subset = min(args.naive_concepts, args.concepts)
    start = time.perf_counter()
    naive_dirs, naive_vals = naive_subspace(bases, membership[:subset], reference[:subset], eigen_k=args.eigen_k)
    naive_measured = time.perf_counter() - start
    naive_s = naive_measured * args.concepts / subset

    cosines = (fast.directions[:subset] * naive_dirs).sum(-1)
    exact = args.eigen_k + 1  # the library converges these tightly; the rest of the top 20 loosely
    error = (fast.eigvals[:subset] - naive_vals[:, : fast.eigvals.shape[1]]).abs() / naive_vals[:, :1].abs()
    top_error, tail_error = error[:, :exact].max().item(), error[:, exact:].max().item()
    print(f"library:  {fast_s:8.1f} s for all {args.concepts} concepts (min relative eigengap {fast.eigengap.min():.4f})")
    extrapolated = "" if subset == args.concepts else f", extrapolated from {subset} concepts ({naive_measured:.1f} s)"
    print(f"naive:    {naive_s:8.1f} s for all {args.concepts} concepts{extrapolated}")
    print(f"speedup:  {naive_s / fast_s:8.1f}x")
    print(f"min cosine (library vs naive, {subset} concepts): {cosines.min():.6f}")
    print(f"eigenvalue error relative to lambda_1: top {exact} {top_error:.1e}; reported tail ({exact + 1}-20) {tail_error:.1e}")


if __name__ == "__main__":
    main()
