"""Training objectives, wrapped with the model in one module so DistributedModelParallel
runs the loss inside its forward (DDP and the fused embedding optimisers see one graph)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchrec import KeyedJaggedTensor

from .ranking import RankingModel
from .recall import RecallModel, TwoTower


def weighted_bce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean binary cross-entropy; `weights` [B] undo negative down-sampling."""
    loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    if weights is None:
        return loss.mean()
    return (loss * weights).sum() / weights.sum().clamp_min(1e-12)


def in_batch_softmax(
    user: torch.Tensor,
    item: torch.Tensor,
    temperature: float,
    item_ids: torch.Tensor,
    log_q: torch.Tensor | None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sampled softmax over the other positives of the batch, with log-Q correction.

    user, item: [P, E] embeddings of the P positive rows; item_ids [P] int64 item identity;
    log_q [P]: log of each item's probability of appearing as a positive (its sampling
    probability as an in-batch negative). Popular items are over-sampled as negatives,
    so their logit is lowered by log q (Yi et al., RecSys 2019). The same item appearing
    twice in the batch is not a negative of itself.
    """
    logits = user @ item.T / temperature  # [P, P]
    if log_q is not None:
        logits = logits - log_q.unsqueeze(0)
    same_item = item_ids.unsqueeze(0) == item_ids.unsqueeze(1)
    eye = torch.eye(len(item_ids), dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(same_item & ~eye, float("-inf"))
    target = torch.arange(len(item_ids), device=logits.device)
    loss = F.cross_entropy(logits, target, reduction="none")
    if weights is None:
        return loss.mean()
    return (loss * weights).sum() / weights.sum().clamp_min(1e-12)


class TrainModule(nn.Module):
    """`model` plus its loss: forward(...) -> (loss [], logits [B])."""

    def __init__(self, model: RankingModel | RecallModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        sparse: KeyedJaggedTensor,
        dense: torch.Tensor,
        labels: torch.Tensor,
        weights: torch.Tensor | None = None,
        item_ids: torch.Tensor | None = None,
        log_q: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(self.model, TwoTower):
            logits = self.model(sparse, dense)
            return weighted_bce(logits, labels, weights), logits
        user, item = self.model.towers(sparse, dense)
        logits = (user * item).sum(dim=1) / self.model.temperature
        if item_ids is None:
            raise ValueError("two_tower training needs item ids for its in-batch softmax")
        positive = labels > 0.5
        if not bool(positive.any()):
            # Still touch every parameter so data-parallel gradient buckets stay in step.
            return (user.sum() + item.sum()) * 0.0, logits
        loss = in_batch_softmax(
            user[positive],
            item[positive],
            self.model.temperature,
            item_ids[positive],
            None if log_q is None else log_q[positive],
            None if weights is None else weights[positive],
        )
        return loss, logits
