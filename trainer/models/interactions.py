"""What makes each model itself: how feature embeddings interact.

Shapes: B batch, F fields (sparse features), D embedding dim. Each module is a
few lines to read side by side with its paper.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn


class FMInteraction(nn.Module):
    """Factorization Machine second-order term (Rendle 2010): sum over pairs i<j of <v_i, v_j>.

    Computed in O(F*D) as 0.5 * sum_d ((sum_i v_id)^2 - sum_i v_id^2).
    TorchRec's `FactorizationMachine` flattens all fields into one vector and crosses
    scalars, which is not this term, hence the few lines here.

    Example::

        FMInteraction()(torch.randn(4, 3, 8)).shape  # [4]
    """

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        """fields: [B, F, D] -> [B]."""
        square_of_sum = fields.sum(dim=1).pow(2)
        sum_of_square = fields.pow(2).sum(dim=1)
        return 0.5 * (square_of_sum - sum_of_square).sum(dim=1)


class FFMInteraction(nn.Module):
    """Field-aware FM (Juan et al. 2016): sum over pairs i<j of <v_{i,field j}, v_{j,field i}>.

    Every feature has one K-sized vector per field, so its table is F*K wide.

    Example::

        FFMInteraction(num_fields=3, dim=4)(torch.randn(2, 3, 3 * 4)).shape  # [2]
    """

    rows: torch.Tensor
    cols: torch.Tensor

    def __init__(self, num_fields: int, dim: int) -> None:
        super().__init__()
        self.num_fields = num_fields
        self.dim = dim
        rows, cols = torch.triu_indices(num_fields, num_fields, offset=1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def forward(self, field_aware: torch.Tensor) -> torch.Tensor:
        """field_aware: [B, F, F*K] (feature i's vector for field j at [:, i, j*K:(j+1)*K]) -> [B]."""
        v = field_aware.view(-1, self.num_fields, self.num_fields, self.dim)  # [B, F(feature), F(field), K]
        left = v[:, self.rows, self.cols]  # v_{i, field j}: [B, P, K]
        right = v[:, self.cols, self.rows]  # v_{j, field i}: [B, P, K]
        return (left * right).sum(dim=(1, 2))


class SENETLayer(nn.Module):
    """Squeeze-and-Excitation field re-weighting (FiBiNET, Huang et al. 2019).

    Squeeze each field to its mean, excite through a bottleneck of F/r, and scale
    every field embedding by its learned weight.

    Example::

        SENETLayer(num_fields=6, reduction=3)(torch.randn(4, 6, 8)).shape  # [4, 6, 8]
    """

    def __init__(self, num_fields: int, reduction: int = 3) -> None:
        super().__init__()
        hidden = max(1, num_fields // reduction)
        self.excitation = nn.Sequential(
            nn.Linear(num_fields, hidden, bias=False),
            nn.ReLU(),
            nn.Linear(hidden, num_fields, bias=False),
            nn.ReLU(),
        )

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        """fields: [B, F, D] -> [B, F, D]."""
        weights = self.excitation(fields.mean(dim=2))  # [B, F]
        return fields * weights.unsqueeze(-1)


BilinearType = Literal["field_all", "field_each", "field_interaction"]


class BilinearInteraction(nn.Module):
    """Bilinear interaction (FiBiNET): p_ij = (v_i W) * v_j for every pair i<j -> [B, F(F-1)/2, D].

    `field_all` shares one W, `field_each` has one W per field i, `field_interaction`
    one W per pair (i, j).

    Example::

        BilinearInteraction(num_fields=4, dim=8, kind="field_each")(torch.randn(2, 4, 8)).shape  # [2, 6, 8]
    """

    rows: torch.Tensor
    cols: torch.Tensor

    def __init__(self, num_fields: int, dim: int, kind: BilinearType = "field_interaction") -> None:
        super().__init__()
        rows, cols = torch.triu_indices(num_fields, num_fields, offset=1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.kind = kind
        count = {"field_all": 1, "field_each": num_fields, "field_interaction": len(rows)}[kind]
        self.weight = nn.Parameter(torch.empty(count, dim, dim))
        nn.init.xavier_uniform_(self.weight)

    @property
    def num_pairs(self) -> int:
        return int(self.rows.numel())

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        """fields: [B, F, D] -> [B, P, D] with P = F(F-1)/2."""
        # index_select + bmm: their backward (index_add, bmm) is several times cheaper on CPU than
        # advanced indexing + einsum.
        left = fields.index_select(1, self.rows)  # [B, P, D]
        right = fields.index_select(1, self.cols)
        if self.kind == "field_all":
            projected = left @ self.weight[0]
        else:
            weight = self.weight.index_select(0, self.rows) if self.kind == "field_each" else self.weight
            projected = torch.bmm(left.transpose(0, 1), weight).transpose(0, 1)  # [P, B, D] x [P, D, D]
        return projected * right
