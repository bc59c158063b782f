"""Per-story common subspace (docs/methods.md, "subspace").

Each story i contributes V_i, the top right singular vectors of its token-centred activations
(zero-variance directions dropped). For concept c with positive set C (|C| = p, n stories in all):

    M_c = mean_{i in C} V_i V_i^T - mean_{i not in C} V_i V_i^T
        = (a + b) Q_c - b S,    a = 1/p, b = 1/(n - p),  Q_c = sum_{i in C} V_i V_i^T,  S = sum_i V_i V_i^T

S is shared by every concept, so it is built once; Q_c only involves c's own few stories. Only the
top eigenpairs are needed: dense eigh below `dense_max_dim`, Lanczos (scipy eigsh) on the operator
x -> (a + b) W_C (W_C^T x) - b S x above it, where W_C stacks the V_i of C. Ties between the
eigen_k-th and the next eigenvalue make the direction non-unique; `eigengap` reports that gap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from einops import einsum, rearrange
from jaxtyping import Bool, Float
from torch import Tensor

N_REPORTED_EIGVALS = 20
DENSE_MAX_DIM = 2048


def story_basis(tokens: Float[Tensor, "n_tok d_model"], k: int | None = None) -> Float[Tensor, "d_model k"]:
    """Top-k right singular vectors of the token-centred activations, rank-clamped.

    Singular values below max(n_tok, d) * eps * s_max are numerically zero (centring always
    leaves one) and are dropped, as numpy's matrix_rank does.
    """
    centred = tokens.float() - tokens.float().mean(0, keepdim=True)
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    if singular.numel() == 0 or singular[0] <= 0:
        return tokens.new_zeros(tokens.shape[1], 0, dtype=torch.float32)
    tol = singular[0] * max(centred.shape) * torch.finfo(torch.float32).eps
    rank = int((singular > tol).sum())
    keep = rank if k is None else min(k, rank)
    return rearrange(vh[:keep], "k d -> d k").contiguous()


@dataclass
class SubspaceResult:
    directions: Float[Tensor, "n_concepts d_model"]
    eigvals: Float[Tensor, "n_concepts n_eig"]  # top eigenvalues of M_c, descending
    eigengap: Float[Tensor, " n_concepts"]  # lambda_k - lambda_{k+1}, relative to |lambda_1|


def shared_projector_sum(bases: list[Float[Tensor, "d_model _k"]], chunk_columns: int = 4096) -> Float[Tensor, "d_model d_model"]:
    """S = sum_i V_i V_i^T: fp32 products over chunks of stories (BLAS speed), accumulated in fp64."""
    d = bases[0].shape[0]
    total = torch.zeros(d, d, dtype=torch.float64)
    chunk: list[Tensor] = []

    def flush() -> None:
        if chunk:
            stacked = torch.cat(chunk, dim=1).float()
            total.add_(einsum(stacked, stacked, "d k, e k -> d e").double())
            chunk.clear()

    for basis in bases:
        chunk.append(basis)
        if sum(b.shape[1] for b in chunk) >= chunk_columns:
            flush()
    flush()
    return total


def subspace_directions(
    bases: list[Float[Tensor, "d_model _k"]],
    membership: Bool[Tensor, "n_concepts n_texts"],
    reference: Float[Tensor, "n_concepts d_model"],
    eigen_k: int = 5,
    dense_max_dim: int = DENSE_MAX_DIM,
) -> SubspaceResult:
    """One subspace direction per concept. `reference` (the pooled diff-of-means) fixes signs:
    each eigenvector is flipped so positives project above negatives, then the final direction too."""
    n_texts, d = len(bases), bases[0].shape[0]
    shared = shared_projector_sum(bases)
    n_eig = min(max(eigen_k + 1, N_REPORTED_EIGVALS), d - 1 if d > dense_max_dim else d)
    directions, eigvals, gaps = [], [], []
    for c in range(membership.shape[0]):
        members = membership[c].nonzero().flatten().tolist()
        a, b = 1.0 / len(members), 1.0 / (n_texts - len(members))
        own = torch.cat([bases[i].double() for i in members], dim=1)
        if d <= dense_max_dim:
            values, vectors = _top_dense(own, shared, a, b, n_eig)
        else:
            values, vectors = _top_lanczos(own, shared, a, b, n_eig, min(eigen_k + 1, n_eig))
        directions.append(combine(values[:eigen_k], vectors[:, :eigen_k], reference[c].double()))
        eigvals.append(values[:N_REPORTED_EIGVALS])
        gap = (values[eigen_k - 1] - values[eigen_k]) / values[0].abs().clamp_min(1e-12) if len(values) > eigen_k else torch.tensor(float("nan"))
        gaps.append(gap)
    return SubspaceResult(torch.stack(directions).float(), torch.stack(eigvals).float(), torch.stack(gaps).float())


def _top_dense(own, shared, a, b, n_eig):
    matrix = (a + b) * (own @ own.T) - b * shared
    values, vectors = torch.linalg.eigh(matrix)
    return values.flip(0)[:n_eig], vectors.flip(1)[:, :n_eig]


def _top_lanczos(own, shared, a, b, n_eig, n_exact):
    """Lanczos (ARPACK) on x -> (a + b) W_C (W_C^T x) - b S x, fp32 matvecs.

    Two calls: the top `n_exact` eigenpairs (the direction and its eigengap) to tol 1e-8, then the
    remaining reported eigenvalues to tol 1e-4 (eigenvalue error ~tol^2). Asking one call for all 20
    at tight tolerance costs 20x more: past the top few, M's spectrum is a near-degenerate cluster at 0.
    M's spectrum lies in [-1, 1]; shifting by +1 makes ARPACK's relative tolerance an absolute one.
    """
    from scipy.sparse.linalg import LinearOperator, eigsh

    own_np, shared_np = own.float().numpy(), shared.float().numpy()
    d, shift = shared_np.shape[0], 1.0

    def matvec(x):
        x = np.asarray(x, dtype=np.float32).reshape(d, -1)
        return ((a + b) * (own_np @ (own_np.T @ x)) - b * (shared_np @ x) + shift * x).squeeze()

    operator = LinearOperator((d, d), matvec=matvec, matmat=matvec, dtype=np.float32)
    values, vectors = eigsh(operator, k=n_exact, which="LA", tol=1e-8, ncv=min(d - 1, max(2 * n_exact + 1, 100)))
    order = np.argsort(values)[::-1]
    values, vectors = values[order].astype(np.float64) - shift, vectors[:, order].astype(np.float64)
    if n_eig > n_exact:
        more = (
            np.sort(eigsh(operator, k=n_eig, which="LA", tol=1e-4, ncv=min(d - 1, max(2 * n_eig + 1, 60)), return_eigenvectors=False))[::-1] - shift
        )
        values = np.concatenate([values, more[n_exact:]])
    return torch.from_numpy(values.copy()), torch.from_numpy(vectors.copy())


def combine(values: Float[Tensor, " k"], vectors: Float[Tensor, "d_model k"], reference: Float[Tensor, " d_model"]) -> Float[Tensor, " d_model"]:
    """Sign-align each eigenvector with the reference, weight by clamped eigenvalue, sum, normalize.

    If no eigenvalue is positive (positives share no extra subspace), the top eigenvector is used.
    """
    signs = torch.sign(reference @ vectors)
    signs[signs == 0] = 1
    aligned = vectors * signs
    weights = values.clamp_min(0)
    if weights.sum() <= 0:
        weights = torch.zeros_like(values)
        weights[0] = 1
    direction = aligned @ weights
    if direction @ reference < 0:
        direction = -direction
    return direction / direction.norm().clamp_min(1e-12)


class SubspaceCollector:
    """A capture token sink: computes each story's basis per layer while its tokens are in memory."""

    def __init__(self, layers: list[int], n_texts: int, k: int | None = None):
        from .. import hooks

        self.names = {layer: hooks.resid_post(layer) for layer in layers}
        self.k = k
        self.bases: dict[int, list[Tensor | None]] = {layer: [None] * n_texts for layer in layers}

    def __call__(self, indices: list[int], store: dict[str, Tensor], attention_mask: Tensor) -> None:
        lengths = attention_mask.sum(-1).tolist()
        for layer, name in self.names.items():
            acts = store[name]
            for row, index in enumerate(indices):
                # real tokens are a contiguous run: right-padded batches
                self.bases[layer][index] = story_basis(acts[row, : int(lengths[row])].float().cpu(), self.k)
