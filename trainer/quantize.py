"""Int8 embeddings for serving: TorchRec's quantized EmbeddingBagCollection (FBGEMM row-wise int8,
a scale and bias per row), swapped in for every float EmbeddingBagCollection of a model."""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
import torch.ao.quantization as tq
from torch import nn
from torchrec import EmbeddingBagCollection
from torchrec.modules.embedding_configs import DataType
from torchrec.quant.embedding_modules import MODULE_ATTR_ROW_ALIGNMENT_INT
from torchrec.quant.embedding_modules import EmbeddingBagCollection as QuantEmbeddingBagCollection

# Rows of D int8 values plus a 2x fp16 scale and bias, padded to 4 bytes (TorchRec pads to 16 by
# default, for GPU loads; on the serving CPU that would double the size of a 16-wide table).
ROW_ALIGNMENT = 4
_INT8 = tq.QConfig(
    activation=tq.PlaceholderObserver.with_args(dtype=torch.float),
    weight=tq.PlaceholderObserver.with_args(dtype=torch.qint8),
)


def _swap(model: nn.Module, make: type[nn.Module] | object) -> nn.Module:
    for path, module in list(model.named_modules()):
        if not isinstance(module, EmbeddingBagCollection):
            continue
        parent_path, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, attr, make(module))  # type: ignore[operator]
    return model


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` (eval, CPU) whose embedding tables are row-wise int8."""

    def quantize(ebc: EmbeddingBagCollection) -> nn.Module:
        ebc.qconfig = _INT8  # type: ignore[assignment]
        setattr(ebc, MODULE_ATTR_ROW_ALIGNMENT_INT, ROW_ALIGNMENT)
        return QuantEmbeddingBagCollection.from_float(ebc)

    return _swap(copy.deepcopy(model).eval(), quantize)


def int8_skeleton(model: nn.Module) -> nn.Module:
    """`model` with empty int8 tables in place of its float ones, ready for an int8 state dict."""

    def empty(ebc: EmbeddingBagCollection) -> nn.Module:
        tables = [replace(cfg, data_type=DataType.INT8) for cfg in ebc.embedding_bag_configs()]
        return QuantEmbeddingBagCollection(
            tables=tables, is_weighted=False, device=torch.device("cpu"), row_alignment=ROW_ALIGNMENT
        )

    return _swap(model, empty)


def table_bytes(model: nn.Module) -> int:
    """Bytes the model's embedding tables take as stored (int8 rows include their scale and bias)."""
    total = 0
    for module in model.modules():
        if isinstance(module, EmbeddingBagCollection | QuantEmbeddingBagCollection):
            for name, t in module.state_dict().items():
                if name.endswith("weight") or "weight_qscale" in name or "weight_qbias" in name:
                    total += t.numel() * t.element_size()
    return total
