"""Sharding plans: what the planner may use, and tables it cannot place refused with the feature and the fix."""

from __future__ import annotations

import pytest
import torch

from recplane.api.trainjob import ModelConfig
from recplane.trainer.dist import DistContext
from recplane.trainer.errors import ShardingError
from recplane.trainer.models import ModelInputs, SparseInput, build_model
from recplane.trainer.sharding import (
    allowed_sharding_types,
    check_placeable,
    column_block,
    constraints,
    embedding_tables,
)

CPU = DistContext(rank=0, world_size=2, local_rank=0, backend="gloo", device=torch.device("cpu"))
GPU = DistContext(rank=0, world_size=2, local_rank=0, backend="nccl", device=torch.device("cuda", 0))


def tables(dim: int, precision: str = "fp32", model: str = "fm"):  # type: ignore[no-untyped-def]
    inputs = ModelInputs(sparse=(SparseInput("user_id", "id", 100, dim), SparseInput("item_id", "id", 50, dim)))
    config = ModelConfig(type=model, embedding_dim=dim)
    return embedding_tables(build_model(config, inputs, precision, device=torch.device("meta")))  # type: ignore[arg-type]


def test_column_wise_shards_are_multiples_of_four_at_least_one_per_rank() -> None:
    assert column_block(16, 2) == 8
    assert column_block(64, 4) == 16
    assert column_block(12, 2) == 4  # 6-wide halves would break FBGEMM's 4-column rows
    assert column_block(20, 2) == 4
    assert column_block(4, 8) == 4


def test_every_table_is_listed_with_its_feature() -> None:
    # FM keeps each feature's first-order weight in 4 columns after its 8 embedding columns.
    names = {(t.name, t.feature, t.embedding_dim, t.first_order_columns) for t in tables(8)}
    assert names == {("emb_user_id", "user_id", 12, 4), ("emb_item_id", "item_id", 12, 4)}
    # Logistic regression has first-order weights only.
    names = {(t.name, t.embedding_dim, t.first_order_columns) for t in tables(8, model="lr")}
    assert names == {("lin_user_id", 4, 0), ("lin_item_id", 4, 0)}


@pytest.mark.parametrize("sharding", ["auto", "table_wise", "column_wise", "table_column_wise"])
def test_an_embedding_width_the_fused_kernels_cannot_hold_is_refused_naming_the_feature(sharding: str) -> None:
    with pytest.raises(ShardingError) as e:
        check_placeable(tables(6), sharding)
    message = str(e.value)
    assert "spec.model.embeddingDim" in message
    assert "user_id" in message and "6 columns" in message
    assert "multiple of 4" in message and "data_parallel" in message


def test_data_parallel_takes_any_width_but_not_fp16() -> None:
    check_placeable(tables(6), "data_parallel")
    with pytest.raises(ShardingError, match="embeddingPrecision"):
        check_placeable(tables(8, "fp16"), "data_parallel")


def test_row_wise_is_refused_on_cpu_and_allowed_on_gpu() -> None:
    with pytest.raises(ShardingError, match=r"row_wise sharding needs GPUs.*table_wise"):
        allowed_sharding_types("row_wise", CPU)
    assert allowed_sharding_types("row_wise", GPU) == ["row_wise"]


def test_auto_lets_the_planner_choose_among_what_the_hardware_runs() -> None:
    assert set(allowed_sharding_types("auto", CPU)) == {"table_wise", "column_wise", "table_column_wise"}
    assert "row_wise" in allowed_sharding_types("auto", GPU)


def test_auto_keeps_tables_too_narrow_to_split_out_of_column_wise_groups() -> None:
    allowed = {name: c.sharding_types for name, c in constraints(tables(16, model="lr"), "auto", CPU).items()}
    assert allowed["lin_user_id"] == ["table_wise"]  # 4 columns: one shard either way
    allowed = {name: c.sharding_types for name, c in constraints(tables(16), "auto", CPU).items()}
    assert set(allowed["emb_user_id"]) == {"table_wise", "column_wise", "table_column_wise"}
    # An explicit choice is honoured as it is.
    assert constraints(tables(16, model="lr"), "column_wise", CPU)["lin_user_id"].sharding_types == ["column_wise"]
