"""Contrastive loss over the (global) batch, exact under data parallelism."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All ranks' ``x`` concatenated in rank order; only the local slice carries gradient.

    Without a process group this is ``x`` itself.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts, dim=0)


def contrastive_loss(
    queries: torch.Tensor, targets: torch.Tensor, logit_scale: float = 100.0
) -> torch.Tensor:
    """Batch cross-entropy (InfoNCE) of queries against all targets of the global batch.

    With ``Q``/``T`` the L2-normalised query/target embeddings of the global batch (``B``
    rows, row ``i`` of both is one triplet), ``logits = s * Q T^T`` and

        L = (1/B) * sum_i -log softmax(logits_i)[i].

    Under ``torch.distributed`` every rank gathers the global batch and computes the *full*
    ``L`` with only its own rows differentiable; the returned value is ``L * world_size`` so
    that DDP's gradient averaging yields exactly ``dL/dtheta`` (the sum over ranks of the
    partial derivatives). Divide by the world size to log it.
    """
    q = F.normalize(queries, dim=-1)
    t = F.normalize(targets, dim=-1)
    q_all = gather_with_grad(q)
    t_all = gather_with_grad(t)
    logits = logit_scale * q_all @ t_all.T
    labels = torch.arange(q_all.shape[0], device=q_all.device)
    loss = F.cross_entropy(logits.float(), labels)
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    return loss * world
