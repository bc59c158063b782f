"""The naive subspace algorithm, kept only as a reference for the benchmark and the equivalence test.

Per concept: build M_pos and M_base (two d x d matrices) from all stories, fully eigendecompose.
This is what the prior system did (over 36 minutes at d = 5120 on a CPU).
"""

from __future__ import annotations

import torch

from amygdala_tl.directions.subspace import N_REPORTED_EIGVALS, combine


def naive_subspace(bases, membership, reference, eigen_k=5):
    d = bases[0].shape[0]
    directions, eigvals = [], []
    for c in range(membership.shape[0]):
        m_pos = torch.zeros(d, d, dtype=torch.float64)
        m_base = torch.zeros(d, d, dtype=torch.float64)
        n_pos = n_base = 0
        for i, basis in enumerate(bases):
            projector = basis.double() @ basis.double().T
            if membership[c, i]:
                m_pos += projector
                n_pos += 1
            else:
                m_base += projector
                n_base += 1
        values, vectors = torch.linalg.eigh(m_pos / n_pos - m_base / n_base)
        values, vectors = values.flip(0), vectors.flip(1)
        directions.append(combine(values[:eigen_k], vectors[:, :eigen_k], reference[c].double()))
        eigvals.append(values[:N_REPORTED_EIGVALS])
    return torch.stack(directions).float(), torch.stack(eigvals).float()
