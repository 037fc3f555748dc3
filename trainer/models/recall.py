"""Recall (candidate generation) models: a user vector and an item vector whose inner product ranks items.

`user_embedding(sparse, dense) -> [B, E]` and `item_embedding(sparse, dense) -> [B, E]`
read only their own tower's features, so serving can embed a user without an item
and build the item index without users. `forward` gives the pointwise logit [B]
used for AUC on labelled rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchrec import KeyedJaggedTensor

from recplane.api.trainjob import ModelConfig

from .inputs import ModelInputs, Precision
from .interactions import FMInteraction
from .layers import MLP, FieldEmbeddings, SparseArch


class RecallModel(nn.Module):
    task = "recall"

    def __init__(self, inputs: ModelInputs, config: ModelConfig) -> None:
        super().__init__()
        self.inputs = inputs
        self.config = config
        groups = set(config.user_groups)

        def user_side(name: str, group: str) -> bool:
            # The user and item id features go to their own tower whatever their group ("id" holds both).
            if name == inputs.item_key:
                return False
            return name == inputs.user_key or group in groups

        self.user_sparse = [f.name for f in inputs.sparse if user_side(f.name, f.group)]
        self.item_sparse = [f.name for f in inputs.sparse if not user_side(f.name, f.group)]
        self.user_dense = [i for i, f in enumerate(inputs.dense) if f.group in groups]
        self.item_dense = [i for i, f in enumerate(inputs.dense) if f.group not in groups]
        if not self.user_sparse or not self.item_sparse:
            side = "user" if not self.user_sparse else "item"
            raise ValueError(
                f"model.userGroups {sorted(groups)} leaves the {side} tower without sparse features "
                f"(feature groups present: {sorted({f.group for f in inputs.sparse})}); "
                "list the user-side groups in model.userGroups so both towers get at least one"
            )

    def user_embedding(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def item_embedding(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TwoTower(RecallModel):
    """Two-tower retrieval (Yi et al. 2019): an MLP per side over its embeddings and dense features,
    L2-normalised outputs, score = <u, v> / temperature; trained with in-batch softmax and log-Q correction
    (see `objectives.in_batch_softmax`)."""

    def __init__(
        self,
        inputs: ModelInputs,
        config: ModelConfig,
        precision: Precision = "fp32",
        device: torch.device | None = None,
    ) -> None:
        super().__init__(inputs, config)
        self.sparse_arch = SparseArch(inputs.sparse, precision, device)
        dims = dict(zip(self.sparse_arch.feature_names, self.sparse_arch.dims, strict=True))
        self.user_tower = self._tower(sum(dims[n] for n in self.user_sparse) + len(self.user_dense))
        self.item_tower = self._tower(sum(dims[n] for n in self.item_sparse) + len(self.item_dense))
        self.temperature = config.temperature

    def _tower(self, in_features: int) -> nn.Module:
        mlp = MLP(in_features, self.config.dense_layers, self.config.dropout, self.config.batch_norm)
        return nn.Sequential(mlp, nn.Linear(mlp.out_features, self.config.embedding_dim))

    def _side(
        self, sparse: KeyedJaggedTensor, dense: torch.Tensor, names: list[str], dense_idx: list[int]
    ) -> torch.Tensor:
        pooled = self.sparse_arch(sparse).to_dict()
        parts = [pooled[n].float() for n in names] + [dense[:, dense_idx]]
        return torch.cat(parts, dim=1)

    def user_embedding(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        """[B, E], unit length."""
        return F.normalize(self.user_tower(self._side(sparse, dense, self.user_sparse, self.user_dense)), dim=1)

    def item_embedding(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        """[B, E], unit length."""
        return F.normalize(self.item_tower(self._side(sparse, dense, self.item_sparse, self.item_dense)), dim=1)

    def towers(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(user [B, E], item [B, E]) from one embedding lookup."""
        pooled = self.sparse_arch(sparse).to_dict()
        user_in = torch.cat([pooled[n].float() for n in self.user_sparse] + [dense[:, self.user_dense]], dim=1)
        item_in = torch.cat([pooled[n].float() for n in self.item_sparse] + [dense[:, self.item_dense]], dim=1)
        return F.normalize(self.user_tower(user_in), dim=1), F.normalize(self.item_tower(item_in), dim=1)

    def forward(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        user, item = self.towers(sparse, dense)
        return (user * item).sum(dim=1) / self.temperature


class FMRecall(RecallModel):
    """FM split into towers: logit = <sum U, sum I> + FM(U) + FM(I) + first-order terms.

    For one user the user-only terms are a constant, so items rank by
    [sum U, 1] . [sum I, FM(I) + item first-order], an inner product serving can index.
    """

    user_mask: torch.Tensor

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
        self.bias = nn.Parameter(torch.zeros(1))
        self.user_dense_linear = nn.Linear(len(self.user_dense), 1, bias=False) if self.user_dense else None
        self.item_dense_linear = nn.Linear(len(self.item_dense), 1, bias=False) if self.item_dense else None
        self.fm = FMInteraction()
        names = self.fields.arch.feature_names
        self.register_buffer("user_mask", torch.tensor([n in self.user_sparse for n in names]), persistent=False)

    def _parts(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(user fields [B, Fu, D], item fields [B, Fi, D], user first-order [B], item first-order [B])."""
        fields, first = self.fields.with_first_order(sparse)  # [B, F, D], [B, F]
        user_first = first[:, self.user_mask].sum(dim=1)
        item_first = first[:, ~self.user_mask].sum(dim=1)
        if self.user_dense_linear is not None:
            user_first = user_first + self.user_dense_linear(dense[:, self.user_dense]).squeeze(-1)
        if self.item_dense_linear is not None:
            item_first = item_first + self.item_dense_linear(dense[:, self.item_dense]).squeeze(-1)
        return fields[:, self.user_mask], fields[:, ~self.user_mask], user_first, item_first

    def user_embedding(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        """[B, D + 1]: [sum of user fields, 1]."""
        user, _, _, _ = self._parts(sparse, dense)
        return torch.cat([user.sum(dim=1), torch.ones_like(user[:, 0, :1])], dim=1)

    def item_embedding(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        """[B, D + 1]: [sum of item fields, FM(item fields) + item first-order]."""
        _, item, _, item_first = self._parts(sparse, dense)
        return torch.cat([item.sum(dim=1), (self.fm(item) + item_first).unsqueeze(1)], dim=1)

    def forward(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        user, item, user_first, item_first = self._parts(sparse, dense)
        cross = (user.sum(dim=1) * item.sum(dim=1)).sum(dim=1)
        return cross + self.fm(user) + self.fm(item) + user_first + item_first + self.bias


RECALL_ZOO: dict[str, type[RecallModel]] = {"two_tower": TwoTower, "fm_recall": FMRecall}
