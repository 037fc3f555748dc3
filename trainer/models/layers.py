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
# weight is therefore stored as 4 columns and read as their mean.
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

    With `first_order=True` each feature also has a first-order weight. It lives in the same
    row as the feature's embedding, as LINEAR_WIDTH extra columns (`split` takes them apart),
    so one lookup, one update and one exchange between ranks per id serve both: a table of
    its own cost DeepFM a tenth of its step time on two CPU processes. (Row-wise optimisers
    then keep one accumulator for the whole row.) With `embeddings=False` (logistic
    regression) the tables hold only the first-order columns.

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
        dim: int | None = None,
        first_order: bool = False,
        embeddings: bool = True,
    ) -> None:
        super().__init__()
        if not features:
            raise ValueError("a model needs at least one sparse feature")
        if not (embeddings or first_order):
            raise ValueError("a SparseArch needs embeddings, first-order weights or both")
        self.feature_names = [f.name for f in features]
        self.dims = [dim or f.embedding_dim for f in features] if embeddings else [0] * len(features)
        self.extra = LINEAR_WIDTH if first_order else 0
        self.has_embeddings = embeddings
        self.widths = [d + self.extra for d in self.dims]
        role = "emb" if embeddings else "lin"
        configs = table_configs(features, precision, role, widths=self.widths)
        self.ebc = EmbeddingBagCollection(tables=configs, device=device)
        self.uniform = len(set(self.dims)) == 1

    @property
    def out_features(self) -> int:
        return sum(self.dims)

    @property
    def first_order_columns(self) -> int:
        """Columns after each table's embedding that hold the first-order weight (0 when a table holds
        nothing but first-order columns, as logistic regression's do)."""
        return self.extra if self.has_embeddings else 0

    def forward(self, sparse: KeyedJaggedTensor) -> KeyedTensor:
        return self.ebc(sparse)

    def _values(self, pooled: KeyedTensor) -> torch.Tensor:
        """[B, sum of widths] in `feature_names` order (float32 even for fp16 tables).

        A sharded collection returns its keys grouped by shard, not in table order; the
        regroup puts them back so sharded training and the unsharded export read alike.
        """
        if pooled.keys() == self.feature_names:
            return pooled.values().float()
        return KeyedTensor.regroup([pooled], [self.feature_names])[0].float()

    def split(self, pooled: KeyedTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings [B, sum of D_f], first-order weights [B, F]), in `feature_names` order."""
        if not self.extra:
            raise ValueError("this SparseArch has no first-order weights (first_order=False)")
        values = self._values(pooled)
        if self.uniform:
            rows = values.view(values.shape[0], len(self.feature_names), self.widths[0])
            embeddings = rows[:, :, : self.dims[0]].reshape(values.shape[0], -1)
            return embeddings, rows[:, :, self.dims[0] :].mean(dim=2)
        parts = values.split(self.widths, dim=1)
        embeddings = torch.cat([p[:, :d] for p, d in zip(parts, self.dims, strict=True)], dim=1)
        return embeddings, torch.stack([p[:, d:].mean(dim=1) for p, d in zip(parts, self.dims, strict=True)], dim=1)

    def ordered(self, pooled: KeyedTensor) -> torch.Tensor:
        """[B, sum of D_f]: the embeddings in `feature_names` order."""
        return self.split(pooled)[0] if self.extra else self._values(pooled)

    def first_order(self, pooled: KeyedTensor) -> torch.Tensor:
        """[B, F]: each feature's first-order weight, in `feature_names` order."""
        return self.split(pooled)[1]

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
        return self.from_flat(self.arch.ordered(self.arch(sparse)))

    def with_first_order(self, sparse: KeyedJaggedTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(fields [B, F, D], first-order weights [B, F]) from one lookup (the arch needs `first_order=True`)."""
        embeddings, first = self.arch.split(self.arch(sparse))
        return self.from_flat(embeddings), first

    def from_flat(self, embeddings: torch.Tensor) -> torch.Tensor:
        """[B, sum of D_f] (`SparseArch.split`'s first part) -> [B, F, D]."""
        if self.uniform:
            return embeddings.view(embeddings.shape[0], self.num_fields, self.dim)
        columns = []
        parts = embeddings.split(self.arch.dims, dim=1)
        for name, v in zip(self.arch.feature_names, parts, strict=True):
            columns.append(self.projections[name](v) if name in self.projections else v)
        return torch.stack(columns, dim=1)

    def select(self, fields: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
        """The [B, len(names), D] slice of `fields` for the named features."""
        index = [self.arch.feature_names.index(n) for n in names]
        return fields[:, index, :]


class FeatureLinear(nn.Module):
    """The first-order term: the sum of the features' first-order weights (`SparseArch.first_order`)
    plus a linear map of the dense features (or a bias when there are none) -> [B].

    Example::

        arch = SparseArch([SparseInput("user", "id", 100, 8)], first_order=True)
        linear = FeatureLinear(num_dense=3)
        linear(arch.first_order(arch(kjt)), torch.randn(2, 3)).shape  # [2]
    """

    def __init__(self, num_dense: int) -> None:
        super().__init__()
        self.dense = nn.Linear(num_dense, 1, bias=True) if num_dense else None
        self.bias = nn.Parameter(torch.zeros(1)) if not num_dense else None

    def forward(self, first_order: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        out = first_order.sum(dim=1)
        if self.dense is not None:
            return out + self.dense(dense).squeeze(-1)
        assert self.bias is not None
        return out + self.bias


class OverArch(nn.Module):
    """The head: an MLP then one logit per row -> [B]."""

    def __init__(self, in_features: int, layers: Sequence[int], dropout: float = 0.0, batch_norm: bool = False) -> None:
        super().__init__()
        self.mlp = MLP(in_features, layers, dropout, batch_norm)
        self.logit = nn.Linear(self.mlp.out_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit(self.mlp(x)).squeeze(-1)
