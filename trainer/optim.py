"""Optimisers: a fused sparse optimiser inside the embedding backward, a dense one for the rest,
one learning-rate schedule over both, and gradient clipping of the dense part."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torchrec.optim as trec_optim
from torch import nn
from torchrec import EmbeddingBagCollection
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from recplane.api.trainjob import Optimization

# Optimiser classes TorchRec maps onto FBGEMM's fused kernels (EXACT_ROWWISE_ADAGRAD, ADAM, EXACT_SGD).
_SPARSE: dict[str, tuple[type[torch.optim.Optimizer], dict[str, float]]] = {
    "rowwise_adagrad": (trec_optim.RowWiseAdagrad, {"eps": 1e-8}),
    "adam": (trec_optim.Adam, {"eps": 1e-8}),
    "sgd": (trec_optim.SGD, {}),
}
_DENSE: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adagrad": torch.optim.Adagrad,
    "sgd": torch.optim.SGD,
}


def embedding_parameters(module: nn.Module) -> list[nn.Parameter]:
    return [p for m in module.modules() if isinstance(m, EmbeddingBagCollection) for p in m.parameters()]


def attach_sparse_optimizer(module: nn.Module, opt: Optimization) -> None:
    """Fuse the sparse optimiser into the embedding backward; call before sharding.

    Embedding rows are updated as their gradients are produced, so a step never holds a
    dense gradient of a table (which for large tables would not fit).
    """
    cls, extra = _SPARSE[opt.sparse_optimizer]
    apply_optimizer_in_backward(cls, embedding_parameters(module), {"lr": opt.sparse_learning_rate, **extra})


def build_optimizer(model: nn.Module, opt: Optimization) -> KeyedOptimizer:
    """One optimiser over the sharded model: fused embedding optimisers + the dense optimiser."""
    dense_params = dict(in_backward_optimizer_filter(model.named_parameters()))
    factory = _DENSE[opt.dense_optimizer]
    parts: list[KeyedOptimizer] = []
    fused = getattr(model, "fused_optimizer", None)
    if fused is not None:
        parts.append(fused)
    if dense_params:
        parts.append(KeyedOptimizerWrapper(dense_params, lambda params: factory(params, lr=opt.learning_rate)))
    return CombinedOptimizer(parts)  # type: ignore[arg-type]


def lr_factor(opt: Optimization, total_steps: int) -> Callable[[int], float]:
    """The schedule as a multiplier of each group's base learning rate at step s (0-based)."""
    warmup = opt.warmup_steps

    def constant(step: int) -> float:
        return 1.0

    def linear_warmup(step: int) -> float:
        return min(1.0, (step + 1) / warmup) if warmup else 1.0

    def cosine(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        span = max(1, total_steps - warmup)
        progress = min(1.0, (step - warmup) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return {"constant": constant, "linear_warmup": linear_warmup, "cosine": cosine}[opt.lr_schedule]


class Schedule:
    """Sets every param group's learning rate from its base rate and the step (stateless, so resume is exact)."""

    def __init__(self, optimizer: torch.optim.Optimizer, factor: Callable[[int], float]) -> None:
        self.optimizer = optimizer
        self.factor = factor
        self.base = [float(g["lr"]) for g in optimizer.param_groups]

    def apply(self, step: int) -> float:
        f = self.factor(step)
        for group, base in zip(self.optimizer.param_groups, self.base, strict=True):
            group["lr"] = base * f
        return f


def dense_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for _, p in in_backward_optimizer_filter(model.named_parameters()) if p.requires_grad]


def clip_dense_gradients(params: Iterable[nn.Parameter], max_norm: float | None) -> float | None:
    """Clip the dense gradients by global norm (after DDP's all-reduce, so every rank clips alike).

    Embedding gradients are consumed by the fused optimiser inside the backward and are not clipped.
    """
    if max_norm is None:
        return None
    return float(torch.nn.utils.clip_grad_norm_(list(params), max_norm))
