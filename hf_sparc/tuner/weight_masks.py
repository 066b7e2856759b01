"""The arithmetic of unmerged weight-level masks: a masked matmul that matches the merged one, and
the pruned entries as a sparse matrix (for masks too sparse to copy the weight for)."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F


def matmul(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, transposed: bool
) -> torch.Tensor:
    if not transposed:
        return F.linear(x, weight, bias)
    # Conv1D stores [in, out] and computes addmm; use the same op so results match bit for bit
    out = torch.addmm(bias, x.reshape(-1, x.shape[-1]), weight)
    return out.view(*x.shape[:-1], weight.shape[1])


def pruned_entries_csr(weight: torch.Tensor, ids: torch.Tensor, transposed: bool) -> torch.Tensor:
    """``[out, in]`` CSR matrix (float32, the dtype every backend's sparse matmul supports) holding
    the entries of ``weight`` at the flat positions ``ids``; ``transposed``: ``weight`` is stored
    ``[in, out]`` (GPT-2's ``Conv1D``)."""
    width = weight.shape[1]
    rows, cols = ids // width, ids % width
    out_idx, in_idx = (cols, rows) if transposed else (rows, cols)
    out_features, in_features = (weight.shape[1], weight.shape[0]) if transposed else weight.shape
    # CSR wants entries ordered by output row (Conv1D ids are ordered by input row)
    order = torch.argsort(out_idx * in_features + in_idx)
    crow = torch.zeros(out_features + 1, dtype=torch.int64, device=ids.device)
    crow[1:] = torch.bincount(out_idx, minlength=out_features).cumsum(0)
    values = weight.flatten()[ids].float()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            crow,
            in_idx[order],
            values[order],
            size=(out_features, in_features),
            check_invariants=True,  # built once per change, so the check is cheap
        )
