"""The recplane model zoo on TorchRec: ranking (LR, FM, FFM, Wide&Deep, DeepFM, DCN-v2, FiBiNET)
and recall (two-tower, FM recall) models over `KeyedJaggedTensor` + dense inputs."""

from __future__ import annotations

import torch

from recplane.api.trainjob import ModelConfig

from .inputs import DenseInput, ModelInputs, Precision, SparseInput, table_configs, table_name
from .objectives import TrainModule, in_batch_softmax, weighted_bce
from .ranking import RANKING_ZOO, RankingModel
from .recall import RECALL_ZOO, RecallModel

ZOO: dict[str, type[RankingModel] | type[RecallModel]] = {**RANKING_ZOO, **RECALL_ZOO}


class UnknownModelError(ValueError):
    pass


def build_model(
    config: ModelConfig,
    inputs: ModelInputs,
    precision: Precision = "fp32",
    device: torch.device | None = None,
) -> RankingModel | RecallModel:
    """The model named by `config.type`; embedding tables on `device` (`meta` before sharding).

    Dense layers are always created on the CPU with the current RNG, so every rank that
    seeds alike builds identical dense weights.
    """
    try:
        cls = ZOO[config.type]
    except KeyError:
        raise UnknownModelError(
            f"spec.model.type: unknown model type {config.type!r}; choose one of {', '.join(ZOO)}"
        ) from None
    return cls(inputs, config, precision, device)  # type: ignore[call-arg]


__all__ = [
    "ZOO",
    "DenseInput",
    "ModelInputs",
    "Precision",
    "RankingModel",
    "RecallModel",
    "SparseInput",
    "TrainModule",
    "UnknownModelError",
    "build_model",
    "in_batch_softmax",
    "table_configs",
    "table_name",
    "weighted_bce",
]
