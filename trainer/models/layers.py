"""The parts every model of the zoo shares: sparse lookups, MLPs, the first-order term.

Shapes: B batch, F sparse features, D embedding dim, N dense features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, KeyedJaggedTensor, KeyedTensor

from .inputs import Precision, SparseInput, table_configs

# FBGEMM's fused embedding kernels need a multiple of 4 columns per table; a first-order
# weight is therefore stored as 4 columns and read as their mean. With row-wise Adagrad or
# Adam the 4 columns move together, so this trains exactly like a one-column weight.
LINEAR_WIDTH = 4


class MLP(nn.Module):
    """Linear -> [BatchNorm] -> ReLU -> [Dropout] per hidden size.

    Example::

        mlp = MLP(in_features=10, layers=[32, 16], dropout=0.1, batch_norm=True)
        mlp(torch.randn(4, 10)).shape  # [4, 16]
    """

    def __init__(self, in_features: int, layers: Sequence[int], dropout: float = 0.0, batch_norm: bool = False) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_features
        for size in layers:
            blocks.append(nn.Linear(width, size))
            if batch_norm:
                blocks.append(nn.BatchNorm1d(size))
            blocks.append(nn.ReLU())
            if dropout > 0:
                blocks.append(nn.Dropout(dropout))
            width = size
        self.net = nn.Sequential(*blocks)
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, in_features] -> [B, layers[-1]] (x itself when there are no layers)."""
        return self.net(x)


class SparseArch(nn.Module):
    """Pooled embedding lookups of every sparse feature, one TorchRec table per feature.

    Example::

        arch = SparseArch([SparseInput("user", "id", 100, 8), SparseInput("item", "id", 50, 8)])
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=["user", "item"], values=torch.tensor([1, 7, 3, 4]), lengths=torch.ones(4, dtype=torch.int32)
        )
        arch.flat(kjt).shape  # [2, 16]: user then item
    """

    def __init__(
        self,
        features: Sequence[SparseInput],
        precision: Precision = "fp32",
        device: torch.device | None = None,
        role: str = "emb",
        dim: int | None = None,
    ) -> None:
        super().__init__()
        if not features:
            raise ValueError("a model needs at least one sparse feature")
        self.feature_names = [f.name for f in features]
        self.dims = [dim or f.embedding_dim for f in features]
        self.ebc = EmbeddingBagCollection(tables=table_configs(features, precision, role, dim), device=device)

    @property
    def out_features(self) -> int:
        return sum(self.dims)

    def forward(self, sparse: KeyedJaggedTensor) -> KeyedTensor:
        return self.ebc(sparse)

    def ordered(self, pooled: KeyedTensor) -> torch.Tensor:
        """[B, sum of D_f] in `feature_names` order (float32 even for fp16 tables).

        A sharded collection returns its keys grouped by shard, not in table order; the
        regroup puts them back so sharded training and the unsharded export read alike.
        """
        if pooled.keys() == self.feature_names:
            return pooled.values().float()
        return KeyedTensor.regroup([pooled], [self.feature_names])[0].float()

    def flat(self, sparse: KeyedJaggedTensor) -> torch.Tensor:
        """[B, sum of D_f]: every feature's pooled embedding side by side, in feature order."""
        return self.ordered(self.ebc(sparse))


class FieldEmbeddings(nn.Module):
    """Every sparse feature as one D-sized vector: [B, F, D], the input of FM-style interactions.

    Features whose table is not D wide get a learned projection to D, so per-feature
    embedding sizes still work with models that multiply embeddings pairwise.
    """

    def __init__(self, arch: SparseArch, dim: int) -> None:
        super().__init__()
        self.arch = arch
        self.dim = dim
        self.uniform = all(d == dim for d in arch.dims)
        self.projections = nn.ModuleDict(
            {
                name: nn.Linear(d, dim, bias=False)
                for name, d in zip(arch.feature_names, arch.dims, strict=True)
                if d != dim
            }
        )

    @property
    def num_fields(self) -> int:
        return len(self.arch.feature_names)

    def forward(self, sparse: KeyedJaggedTensor) -> torch.Tensor:
        pooled = self.arch(sparse)
        if self.uniform:
            values = self.arch.ordered(pooled)
            return values.view(values.shape[0], self.num_fields, self.dim)
        by_name = pooled.to_dict()
        columns = []
        for name in self.arch.feature_names:
            v = by_name[name].float()
            columns.append(self.projections[name](v) if name in self.projections else v)
        return torch.stack(columns, dim=1)

    def select(self, fields: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
        """The [B, len(names), D] slice of `fields` for the named features."""
        index = [self.arch.feature_names.index(n) for n in names]
        return fields[:, index, :]


class FeatureLinear(nn.Module):
    """The first-order term: w0 + sum of per-id weights + a linear map of the dense features -> [B].

    Example::

        linear = FeatureLinear([SparseInput("user", "id", 100, 8)], num_dense=3)
        linear(kjt, torch.randn(2, 3)).shape  # [2]
    """

    def __init__(
        self,
        features: Sequence[SparseInput],
        num_dense: int,
        precision: Precision = "fp32",
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        self.sparse = SparseArch(features, precision, device, role="lin", dim=LINEAR_WIDTH)
        self.num_fields = len(features)
        self.dense = nn.Linear(num_dense, 1, bias=True) if num_dense else None
        self.bias = nn.Parameter(torch.zeros(1)) if not num_dense else None

    def forward(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        weights = self.sparse.flat(sparse).view(-1, self.num_fields, LINEAR_WIDTH)
        out = weights.mean(dim=2).sum(dim=1)
        if self.dense is not None:
            return out + self.dense(dense).squeeze(-1)
        assert self.bias is not None
        return out + self.bias

    def per_field(self, sparse: KeyedJaggedTensor) -> torch.Tensor:
        """[B, F]: each sparse feature's first-order weight (recall models split these by tower)."""
        return self.sparse.flat(sparse).view(-1, self.num_fields, LINEAR_WIDTH).mean(dim=2)


class OverArch(nn.Module):
    """The head: an MLP then one logit per row -> [B]."""

    def __init__(self, in_features: int, layers: Sequence[int], dropout: float = 0.0, batch_norm: bool = False) -> None:
        super().__init__()
        self.mlp = MLP(in_features, layers, dropout, batch_norm)
        self.logit = nn.Linear(self.mlp.out_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit(self.mlp(x)).squeeze(-1)
