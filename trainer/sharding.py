"""Sharding plans: which rank holds which embedding table (or which columns of it).

The TorchRec planner chooses the plan (`auto`) or works inside the constraint the
TrainJob sets (`table_wise`, `column_wise`, `table_column_wise`, and `row_wise` on
GPUs). The plan is logged, stored in the model version, and checked up front so a
table it cannot place fails with a message, not deep in FBGEMM.

`data_parallel` replicates every table on every rank: the tables stay plain TorchRec
EmbeddingBagCollections inside DDP, their gradients are all-reduced, and the sparse
optimiser runs after the all-reduce like the dense one. (TorchRec's own data-parallel
sharding uses FBGEMM's dense TBE kernel, whose backward is not registered for CPU
tensors in fbgemm-gpu-cpu: its tables would silently never learn.)
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

from torch import nn
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation
from torchrec.distributed.planner.types import KernelConfig, PlannerError, TopologyFactory, TrainerConfig
from torchrec.distributed.types import ShardingEnv, ShardingPlan, ShardingType

from .dist import DistContext
from .errors import ShardingError
from .models.layers import SparseArch

# FBGEMM's fused (optimizer-in-backward) embedding kernels read rows in 4-column vectors.
COLUMN_ALIGNMENT = 4
# Share of each device the planner leaves to dense layers, activations and input buffers.
DENSE_RESERVATION = 0.15
SHARDED_TYPES = ("table_wise", "column_wise", "table_column_wise", "row_wise")
CPU_SHARDED_TYPES = ("table_wise", "column_wise", "table_column_wise")
REPLICATED = "data_parallel"
_COLUMN_SPLIT = (ShardingType.COLUMN_WISE.value, ShardingType.TABLE_COLUMN_WISE.value)
_TYPES = {
    "table_wise": ShardingType.TABLE_WISE.value,
    "column_wise": ShardingType.COLUMN_WISE.value,
    "table_column_wise": ShardingType.TABLE_COLUMN_WISE.value,
    "row_wise": ShardingType.ROW_WISE.value,
    "data_parallel": ShardingType.DATA_PARALLEL.value,
}


@dataclass(frozen=True)
class Table:
    """One embedding table of a model, where it sits and what it reads."""

    module: str
    name: str
    feature: str
    num_embeddings: int
    embedding_dim: int
    data_type: str
    first_order_columns: int = 0
    """Columns of `embedding_dim` holding the feature's first-order weight (after its embedding)."""


def embedding_tables(model: nn.Module) -> list[Table]:
    """Every embedding table of `model` (each lives in a SparseArch), in module order."""
    out = []
    for path, arch in model.named_modules():
        if isinstance(arch, SparseArch):
            for cfg in arch.ebc.embedding_bag_configs():
                out.append(
                    Table(
                        module=f"{path}.ebc" if path else "ebc",
                        name=cfg.name,
                        feature=cfg.feature_names[0],
                        num_embeddings=cfg.num_embeddings,
                        embedding_dim=cfg.embedding_dim,
                        data_type=cfg.data_type.value.lower(),
                        first_order_columns=arch.first_order_columns,
                    )
                )
    return out


def is_replicated(sharding: str) -> bool:
    return sharding == REPLICATED


def column_block(dim: int, world_size: int) -> int:
    """Width of column-wise shards: the widest multiple of 4 dividing `dim` that still gives every
    rank a shard (a 16-wide table on 2 ranks -> two 8-wide shards; 20 columns -> five 4-wide ones).
    A table too narrow for that is split into 4-wide shards, down to a single one."""
    blocks = [b for b in range(COLUMN_ALIGNMENT, dim + 1, COLUMN_ALIGNMENT) if dim % b == 0]
    spread = [b for b in blocks if dim // b >= world_size]
    return max(spread) if spread else min(blocks, default=dim)


def allowed_sharding_types(sharding: str, ctx: DistContext) -> list[str]:
    """TorchRec sharding types the planner may use, refusing what this hardware cannot run."""
    on_gpu = ctx.device.type == "cuda"
    if sharding == "row_wise" and not on_gpu:
        raise ShardingError(
            "spec.distributed.sharding",
            "row_wise sharding needs GPUs (FBGEMM's row-wise kernels and nccl); this run is on CPU. "
            "Pick auto, table_wise, column_wise, table_column_wise or data_parallel, "
            "or run on GPUs with distributed.backend nccl",
        )
    if sharding == "auto":
        return [_TYPES[t] for t in (SHARDED_TYPES if on_gpu else CPU_SHARDED_TYPES)]
    if sharding not in SHARDED_TYPES:
        raise ShardingError(
            "spec.distributed.sharding", f"unknown sharding {sharding!r}; use auto, {', '.join(_TYPES)}"
        )
    return [_TYPES[sharding]]


def check_placeable(tables: list[Table], sharding: str) -> None:
    """Refuse tables the plan cannot place, naming the feature and the fix."""
    if is_replicated(sharding):
        if any(t.data_type == "fp16" for t in tables):
            raise ShardingError(
                "spec.optimization.embeddingPrecision",
                "fp16 embedding storage needs sharded tables (FBGEMM's fused kernels keep fp16 rows with fp32 "
                "optimiser state); data_parallel replicas train through plain fp32 optimisers. Set "
                "embeddingPrecision fp32, or pick a sharding other than data_parallel",
            )
        return
    for t in tables:
        if t.embedding_dim % COLUMN_ALIGNMENT:
            what = "auto plan" if sharding == "auto" else f"{sharding} plan"
            width = f"{t.embedding_dim} columns wide"
            if t.first_order_columns:
                embedding = t.embedding_dim - t.first_order_columns
                width = f"{embedding} columns wide (plus {t.first_order_columns} first-order columns)"
            raise ShardingError(
                "spec.model.embeddingDim",
                f"embedding table {t.name} (feature {t.feature!r}) is {width}, and the {what} "
                f"keeps it in FBGEMM's fused kernels, which need a multiple of {COLUMN_ALIGNMENT} columns per shard. "
                f"Set the feature's embeddingDim in the FeatureSet (or spec.model.embeddingDim) to a multiple of "
                f"{COLUMN_ALIGNMENT}, or use spec.distributed.sharding data_parallel",
            )


def constraints(tables: list[Table], sharding: str, ctx: DistContext) -> dict[str, ParameterConstraints]:
    types = allowed_sharding_types(sharding, ctx)
    out = {}
    for t in tables:
        block = column_block(t.embedding_dim, ctx.world_size)
        allowed = types
        if sharding == "auto" and block == t.embedding_dim:
            # Too narrow to split by columns (a 4-wide first-order table): column_wise would place it whole
            # on one rank, as table_wise does, but as a sharding group of its own, which costs a further set
            # of all-to-alls every step.
            allowed = [x for x in types if x not in _COLUMN_SPLIT] or types
        out[t.name] = ParameterConstraints(sharding_types=allowed, compute_kernels=["fused"], min_partition=block)
    return out


def plan_sharding(model: nn.Module, sharding: str, ctx: DistContext, batch_size: int) -> ShardingPlan:
    """The plan every rank agrees on (computed by the planner on rank 0 and broadcast).

    `data_parallel` gives an empty plan: DistributedModelParallel then replicates the tables with DDP.
    """
    tables = embedding_tables(model)
    check_placeable(tables, sharding)
    if is_replicated(sharding):
        return ShardingPlan(plan={})
    topology = TopologyFactory.create_topology(
        TrainerConfig(world_size=ctx.world_size, local_world_size=_local_world_size(ctx)),
        kernel_config=KernelConfig(compute_device=ctx.device.type),
    )
    planner = EmbeddingShardingPlanner(
        topology=topology,
        batch_size=batch_size,
        constraints=constraints(tables, sharding, ctx),
        storage_reservation=FixedPercentageStorageReservation(DENSE_RESERVATION),
    )
    try:
        return planner.collective_plan(model, _sharders(), ctx.process_group)
    except PlannerError as e:
        raise ShardingError(
            "spec.distributed.sharding",
            f"the TorchRec planner cannot place the embedding tables with sharding {sharding} on "
            f"{ctx.world_size} process(es): {str(e).splitlines()[0]}. Try auto, more workers, or smaller tables",
        ) from None


def shard_model(module: nn.Module, plan: ShardingPlan, ctx: DistContext) -> DistributedModelParallel:
    """Wrap `module` (tables on `meta`, dense layers materialised) in DistributedModelParallel."""
    with warnings.catch_warnings():
        # DMP passes DDP the (deprecated) broadcast_buffers=False; buffers are averaged by weights.average_buffers.
        warnings.filterwarnings("ignore", message=".*broadcast_buffers", category=FutureWarning)
        return DistributedModelParallel(
            module,
            env=ShardingEnv.from_process_group(ctx.process_group),
            device=ctx.device,
            plan=plan,
            sharders=_sharders(),  # type: ignore[arg-type]
        )


def describe_plan(plan: ShardingPlan, tables: list[Table], world_size: int) -> dict[str, Any]:
    """JSON form of a plan: per table its sharding type, kernel, ranks and shards."""
    out: dict[str, Any] = {}
    planned: dict[str, Any] = {}
    for module_path, module_plan in plan.plan.items():
        for name, ps in module_plan.items():  # type: ignore[attr-defined]
            planned[name] = (module_path, ps)
    for t in tables:
        entry: dict[str, Any] = {
            "module": t.module,
            "feature": t.feature,
            "rows": t.num_embeddings,
            "dim": t.embedding_dim,
            "dataType": t.data_type,
        }
        if t.name not in planned:
            entry.update(shardingType=REPLICATED, computeKernel="dense", ranks=list(range(world_size)), shards=[])
        else:
            _, ps = planned[t.name]
            shards = [
                {"offsets": list(sm.shard_offsets), "sizes": list(sm.shard_sizes), "placement": str(sm.placement)}
                for sm in (ps.sharding_spec.shards if ps.sharding_spec is not None else [])  # type: ignore[attr-defined]
            ]
            entry.update(
                shardingType=ps.sharding_type,
                computeKernel=ps.compute_kernel,
                ranks=list(ps.ranks) if ps.ranks is not None else list(range(world_size)),
                shards=shards,
            )
        out[t.name] = entry
    return out


def format_plan(described: dict[str, Any]) -> str:
    """The plan as a small table for the log."""
    lines = [f"{'table':<28} {'type':<18} {'kernel':<8} {'rows':>10} {'dim':>5}  ranks"]
    for name, p in described.items():
        ranks = ",".join(str(r) for r in p["ranks"])
        lines.append(
            f"{name:<28} {p['shardingType']:<18} {p['computeKernel']:<8} {p['rows']:>10} {p['dim']:>5}  {ranks}"
        )
    return "\n".join(lines)


def _sharders() -> list[EmbeddingBagCollectionSharder]:
    return [EmbeddingBagCollectionSharder()]


def _local_world_size(ctx: DistContext) -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size))
