"""Validation metrics: AUC and logloss (torchmetrics, gathered across ranks), recall@K and NDCG@K.

AUC is over the rows as stored; logloss is weighted by the sample weights so
down-sampled negatives count for what they stand for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAUROC

from .data import Batch


class BinaryMetrics:
    """Running AUC and weighted logloss over logits; `sync=True` gathers them from every rank at compute.

    States live on `device`: the process group's collectives (nccl on GPUs) gather them there.
    """

    def __init__(self, sync: bool = True, device: torch.device | None = None) -> None:
        self.device = device or torch.device("cpu")
        self.auc = BinaryAUROC(sync_on_compute=sync).to(self.device)
        self.logloss = MeanMetric(sync_on_compute=sync).to(self.device)

    def update(self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None) -> None:
        logits, labels = logits.detach().float().to(self.device), labels.detach().float().to(self.device)
        w = torch.ones_like(labels) if weights is None else weights.detach().float().to(self.device)
        self.auc.update(torch.sigmoid(logits), labels.long())
        self.logloss.update(F.binary_cross_entropy_with_logits(logits, labels, reduction="none"), w)

    def compute(self) -> dict[str, float | None]:
        auc = float(self.auc.compute())
        logloss = float(self.logloss.compute())
        return {
            "auc": None if math.isnan(auc) else round(auc, 6),
            "logloss": None if math.isnan(logloss) else round(logloss, 6),
        }


@dataclass
class ItemIndex:
    """The retrieval index of a recall model: raw item ids and their embeddings [N, E]."""

    ids: np.ndarray
    embeddings: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)

    def top_k(self, users: torch.Tensor, k: int) -> tuple[torch.Tensor, np.ndarray]:
        """(scores [B, k], raw item ids [B, k]) of the best k items for each user embedding [B, E]."""
        k = min(k, len(self.ids))
        scores, idx = torch.topk(users @ self.embeddings.T, k, dim=1)
        return scores, self.ids[idx.numpy()]

    def positions(self, raw_ids: Iterable[object]) -> np.ndarray:
        """Index of each raw id in the index, -1 when absent."""
        where = {v: i for i, v in enumerate(self.ids.tolist())}
        return np.asarray([where.get(v, -1) for v in raw_ids], dtype=np.int64)


def recall_metrics(
    user_embedding: Callable[[Batch], torch.Tensor],
    index: ItemIndex,
    batches: Iterable[tuple[Batch, list[object]]],
    k: int,
) -> dict[str, float | int | None]:
    """recall@K and NDCG@K over the positive rows: is the row's item among the user's top K of the index?

    `batches` yields (batch, raw item id of each row); only rows labelled positive count.
    Items missing from the index count as misses.
    """
    hits = MeanMetric(sync_on_compute=False)
    gains = MeanMetric(sync_on_compute=False)
    k = min(k, len(index))
    count = 0
    for batch, raw_items in batches:
        labels = batch.inputs.labels
        if labels is None:
            continue
        positive = (labels > 0.5).numpy()
        if not positive.any():
            continue
        users = user_embedding(batch)[torch.from_numpy(positive)]
        target = index.positions([raw_items[i] for i in np.flatnonzero(positive)])
        scores = users @ index.embeddings.T  # [P, N]
        target_t = torch.from_numpy(np.maximum(target, 0))
        target_score = scores.gather(1, target_t.unsqueeze(1))
        rank = (scores > target_score).sum(dim=1)  # 0-based rank of the true item
        found = torch.from_numpy(target >= 0) & (rank < k)
        hits.update(found.float())
        gains.update(
            torch.where(found, 1.0 / torch.log2(rank.float() + 2.0), torch.zeros_like(rank, dtype=torch.float))
        )
        count += int(positive.sum())
    if count == 0:
        return {"recallAtK": None, "ndcgAtK": None, "k": k, "positives": 0}
    return {
        "recallAtK": round(float(hits.compute()), 6),
        "ndcgAtK": round(float(gains.compute()), 6),
        "k": k,
        "positives": count,
    }
