"""Mixed precision for the dense layers while training (`optimization.densePrecision`).

Only the forward pass runs under autocast: matrix products in bf16, everything autocast keeps
in fp32 (losses, reductions) and the weights, gradients and optimiser state in fp32. The
embedding tables are not autocast ops; their precision is `embeddingPrecision`.
"""

from __future__ import annotations

import contextlib

import torch


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 matrix products run in hardware here (else autocast emulates them, slowly)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def training_autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[None]:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
