"""Ranking models: one click probability per (user, item, context) row.

Every model maps (sparse: KeyedJaggedTensor, dense: [B, N]) to logits [B]. They
share `SparseArch`, `FeatureLinear`, `MLP` and `OverArch`; the interaction is
what tells them apart.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec import KeyedJaggedTensor
from torchrec.modules.crossnet import CrossNet

from recplane.api.trainjob import ModelConfig

from .inputs import ModelInputs, Precision
from .interactions import BilinearInteraction, FFMInteraction, FMInteraction, SENETLayer
from .layers import FeatureLinear, FieldEmbeddings, OverArch, SparseArch


class RankingModel(nn.Module):
    """Base of the ranking zoo: `forward(sparse, dense) -> logits [B]`."""

    task = "ranking"

    def __init__(self, inputs: ModelInputs, config: ModelConfig) -> None:
        super().__init__()
        self.inputs = inputs
        self.config = config

    def forward(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class LR(RankingModel):
    """Logistic regression over one weight per id and one per dense feature."""

    def __init__(
        self,
        inputs: ModelInputs,
        config: ModelConfig,
        precision: Precision = "fp32",
        device: torch.device | None = None,
    ) -> None:
        super().__init__(inputs, config)
        self.sparse_arch = SparseArch(inputs.sparse, precision, device, embeddings=False, first_order=True)
        self.linear = FeatureLinear(len(inputs.dense))

    def forward(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        return self.linear(self.sparse_arch.first_order(self.sparse_arch(sparse)), dense)


class FM(RankingModel):
    """Factorization Machine: first-order term + pairwise embedding inner products."""

    def __init__(
        self,
        inputs: ModelInputs,
        config: ModelConfig,
        precision: Precision = "fp32",
        device: torch.device | None = None,
    ) -> None:
        super().__init__(inputs, config)
        arch = SparseArch(inputs.sparse, precision, device, first_order=True)
        self.fields = FieldEmbeddings(arch, config.embedding_dim)
        self.linear = FeatureLinear(len(inputs.dense))
        self.fm = FMInteraction()

    def forward(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        fields, first = self.fields.with_first_order(sparse)
        return self.linear(first, dense) + self.fm(fields)


class FFM(RankingModel):
    """Field-aware FM: each feature keeps one `embeddingDim`-sized vector per other field.

    Tables are F * embeddingDim wide, so FFM wants a small embeddingDim (4 is common).
    """

    def __init__(
        self,
        inputs: ModelInputs,
        config: ModelConfig,
        precision: Precision = "fp32",
        device: torch.device | None = None,
    ) -> None:
        super().__init__(inputs, config)
        num_fields = len(inputs.sparse)
        self.field_aware = SparseArch(
            inputs.sparse, precision, device, dim=num_fields * config.embedding_dim, first_order=True
        )
        self.linear = FeatureLinear(len(inputs.dense))
        self.ffm = FFMInteraction(num_fields, config.embedding_dim)

    def forward(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        embeddings, first = self.field_aware.split(self.field_aware(sparse))
        return self.linear(first, dense) + self.ffm(embeddings)


class WideDeep(RankingModel):
    """Wide & Deep (Cheng et al. 2016): a linear wide part plus an MLP over embeddings and dense features."""

    def __init__(
        self,
        inputs: ModelInputs,
        config: ModelConfig,
        precision: Precision = "fp32",
        device: torch.device | None = None,
    ) -> None:
        super().__init__(inputs, config)
        self.sparse_arch = SparseArch(inputs.sparse, precision, device, first_order=True)
        self.wide = FeatureLinear(len(inputs.dense))
        self.deep = OverArch(
            self.sparse_arch.out_features + len(inputs.dense), config.dense_layers, config.dropout, config.batch_norm
        )

    def forward(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        embeddings, first = self.sparse_arch.split(self.sparse_arch(sparse))
        deep_in = torch.cat([embeddings, dense], dim=1)
        return self.wide(first, dense) + self.deep(deep_in)


class DeepFM(RankingModel):
    """DeepFM (Guo et al. 2017): first-order + FM + an MLP, all over the same embeddings."""

    def __init__(
        self,
        inputs: ModelInputs,
        config: ModelConfig,
        precision: Precision = "fp32",
        device: torch.device | None = None,
    ) -> None:
        super().__init__(inputs, config)
        arch = SparseArch(inputs.sparse, precision, device, first_order=True)
        self.fields = FieldEmbeddings(arch, config.embedding_dim)
        self.linear = FeatureLinear(len(inputs.dense))
        self.fm = FMInteraction()
        deep_in = self.fields.num_fields * config.embedding_dim + len(inputs.dense)
        self.deep = OverArch(deep_in, config.dense_layers, config.dropout, config.batch_norm)

    def forward(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        fields, first = self.fields.with_first_order(sparse)  # [B, F, D], [B, F]
        deep_in = torch.cat([fields.flatten(1), dense], dim=1)
        return self.linear(first, dense) + self.fm(fields) + self.deep(deep_in)


class DCNv2(RankingModel):
    """DCN-v2 (Wang et al. 2021), stacked: full-rank cross layers, then an MLP, then the logit."""

    def __init__(
        self,
        inputs: ModelInputs,
        config: ModelConfig,
        precision: Precision = "fp32",
        device: torch.device | None = None,
    ) -> None:
        super().__init__(inputs, config)
        self.sparse_arch = SparseArch(inputs.sparse, precision, device)
        width = self.sparse_arch.out_features + len(inputs.dense)
        self.cross = CrossNet(in_features=width, num_layers=config.cross_layers)
        self.deep = OverArch(width, config.dense_layers, config.dropout, config.batch_norm)

    def forward(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        x0 = torch.cat([self.sparse_arch.flat(sparse), dense], dim=1)
        return self.deep(self.cross(x0))


class FiBiNET(RankingModel):
    """FiBiNET (Huang et al. 2019): SENET re-weights fields, bilinear layers cross both the
    original and the re-weighted embeddings, an MLP reads both plus the dense features."""

    def __init__(
        self,
        inputs: ModelInputs,
        config: ModelConfig,
        precision: Precision = "fp32",
        device: torch.device | None = None,
    ) -> None:
        super().__init__(inputs, config)
        dim = config.embedding_dim
        self.fields = FieldEmbeddings(SparseArch(inputs.sparse, precision, device), dim)
        # First-order weights in tables of their own, unlike the other models: sharing a row (and its
        # row-wise Adagrad accumulator) with embeddings the bilinear layers push hard slowed them down
        # and cost 0.013 AUC on the synthetic feed (bench/bench_models_vs_bayes.py).
        self.first_order = SparseArch(inputs.sparse, precision, device, embeddings=False, first_order=True)
        self.linear = FeatureLinear(len(inputs.dense))
        num_fields = self.fields.num_fields
        if num_fields < 2:
            raise ValueError("model.type fibinet needs at least two sparse features to cross")
        self.senet = SENETLayer(num_fields, config.senet_reduction)
        self.bilinear = BilinearInteraction(num_fields, dim, config.bilinear_type)
        self.bilinear_senet = BilinearInteraction(num_fields, dim, config.bilinear_type)
        deep_in = 2 * self.bilinear.num_pairs * dim + len(inputs.dense)
        self.deep = OverArch(deep_in, config.dense_layers, config.dropout, config.batch_norm)

    def forward(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        fields = self.fields(sparse)  # [B, F, D]
        first = self.first_order.first_order(self.first_order(sparse))  # [B, F]
        p = self.bilinear(fields)  # [B, P, D]
        q = self.bilinear_senet(self.senet(fields))  # [B, P, D]
        deep_in = torch.cat([p.flatten(1), q.flatten(1), dense], dim=1)
        return self.linear(first, dense) + self.deep(deep_in)


RANKING_ZOO: dict[str, type[RankingModel]] = {
    "lr": LR,
    "fm": FM,
    "ffm": FFM,
    "wide_deep": WideDeep,
    "deepfm": DeepFM,
    "dcn_v2": DCNv2,
    "fibinet": FiBiNET,
}
