"""The model zoo: every model runs forward and backward on hand-made KeyedJaggedTensors, and the
interaction modules compute what their papers define."""

from __future__ import annotations

import itertools

import pytest
import torch
from torchrec import KeyedJaggedTensor

from recplane.api.trainjob import ModelConfig
from recplane.trainer.models import (
    ZOO,
    DenseInput,
    ModelInputs,
    SparseInput,
    TrainModule,
    UnknownModelError,
    build_model,
    in_batch_softmax,
)
from recplane.trainer.models.interactions import (
    BilinearInteraction,
    FFMInteraction,
    FMInteraction,
    SENETLayer,
)
from recplane.trainer.models.recall import RecallModel

B = 6
INPUTS = ModelInputs(
    sparse=(
        SparseInput("user_id", "id", 50, 8),
        SparseInput("item_id", "id", 40, 8),
        SparseInput("author_id", "author", 20, 8),
        SparseInput("recent_topics", "reader", 30, 8, pooling="mean", multi_hot=True),
        SparseInput("device", "environment", 4, 4),
    ),
    dense=(DenseInput("user_activity", "reader"), DenseInput("item_age", "material")),
    user_key="user_id",
    item_key="item_id",
)


def batch(seed: int = 0, same: tuple[str, ...] = ()) -> tuple[KeyedJaggedTensor, torch.Tensor]:
    """B random rows; the features (and dense columns) named in `same` are equal on every row."""
    g = torch.Generator().manual_seed(seed)
    lengths, values = [], []
    for f in INPUTS.sparse:
        rows = 1 if f.name in same else B
        n = torch.randint(1, 4, (rows,), generator=g) if f.multi_hot else torch.ones(rows, dtype=torch.long)
        v = torch.randint(0, f.num_embeddings, (int(n.sum()),), generator=g)
        lengths.append(n.repeat(B // rows))
        values.append(v.repeat(B // rows))
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=INPUTS.sparse_names, values=torch.cat(values), lengths=torch.cat(lengths).int()
    )
    dense = torch.randn(B, len(INPUTS.dense), generator=g)
    for j, f in enumerate(INPUTS.dense):
        if f.name in same:
            dense[:, j] = dense[0, j]
    return kjt, dense


@pytest.mark.parametrize("model_type", sorted(ZOO))
def test_every_model_gives_one_logit_per_row_and_trains_every_parameter(model_type: str) -> None:
    config = ModelConfig(type=model_type, embedding_dim=8, dense_layers=[16, 8], batch_norm=True, dropout=0.1)
    torch.manual_seed(0)
    model = build_model(config, INPUTS)
    sparse, dense = batch()
    labels = torch.tensor([1.0, 0, 1, 1, 0, 1])
    loss, logits = TrainModule(model)(
        sparse, dense, labels, torch.ones(B), item_ids=torch.arange(B), log_q=torch.full((B,), -3.0)
    )
    assert logits.shape == (B,)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    untouched = [n for n, p in model.named_parameters() if p.grad is None]
    assert untouched == [], f"{model_type}: parameters without gradient: {untouched}"


@pytest.mark.parametrize("model_type", ["two_tower", "fm_recall"])
def test_recall_models_score_items_by_the_inner_product_of_their_towers(model_type: str) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(type=model_type, embedding_dim=8, dense_layers=[16]), INPUTS).eval()
    assert isinstance(model, RecallModel)
    # The id features go to their own tower even though both are in the "id" group.
    assert "user_id" in model.user_sparse and "item_id" in model.item_sparse
    assert "author_id" in model.item_sparse and "recent_topics" in model.user_sparse
    # One user (all user-side features equal), six different items.
    sparse, dense = batch(same=(*model.user_sparse, "user_activity"))
    user, item = model.user_embedding(sparse, dense), model.item_embedding(sparse, dense)
    assert user.shape == item.shape and user.shape[0] == B
    torch.testing.assert_close(user, user[:1].expand_as(user))
    # Ranking the items by <user, item> is ranking them by the model's own score:
    # the two differ by a constant for one user.
    gap = model(sparse, dense) - (user * item).sum(dim=1) * (
        1 / model.config.temperature if model_type == "two_tower" else 1.0
    )
    torch.testing.assert_close(gap, gap[:1].expand(B), atol=1e-5, rtol=1e-5)


def test_unknown_model_type_is_refused_with_the_choices() -> None:
    config = ModelConfig.model_construct(type="xgboost", embedding_dim=8)
    with pytest.raises(UnknownModelError, match=r"spec.model.type.*xgboost.*deepfm"):
        build_model(config, INPUTS)


def test_fm_term_is_the_sum_of_pairwise_inner_products() -> None:
    fields = torch.randn(3, 5, 4)
    expected = torch.stack(
        [sum((fields[b, i] * fields[b, j]).sum() for i, j in itertools.combinations(range(5), 2)) for b in range(3)]
    )
    torch.testing.assert_close(FMInteraction()(fields), expected)


def test_ffm_crosses_each_pair_through_the_other_fields_vector() -> None:
    f, k = 4, 3
    v = torch.randn(2, f, f, k)
    expected = torch.stack(
        [sum((v[b, i, j] * v[b, j, i]).sum() for i, j in itertools.combinations(range(f), 2)) for b in range(2)]
    )
    torch.testing.assert_close(FFMInteraction(f, k)(v.reshape(2, f, f * k)), expected)


@pytest.mark.parametrize("kind", ["field_all", "field_each", "field_interaction"])
def test_bilinear_interaction_multiplies_vi_w_with_vj(kind: str) -> None:
    f, d = 4, 3
    layer = BilinearInteraction(f, d, kind)  # type: ignore[arg-type]
    fields = torch.randn(2, f, d)
    out = layer(fields)
    pairs = list(itertools.combinations(range(f), 2))
    assert out.shape == (2, len(pairs), d)
    for p, (i, j) in enumerate(pairs):
        w = layer.weight[{"field_all": 0, "field_each": i, "field_interaction": p}[kind]]
        torch.testing.assert_close(out[:, p], (fields[:, i] @ w) * fields[:, j])


def test_senet_scales_each_field_by_one_learned_weight() -> None:
    layer = SENETLayer(num_fields=6, reduction=3)
    fields = torch.randn(4, 6, 5)
    out = layer(fields)
    ratio = out / fields
    # Every field's vector is scaled uniformly (one weight per row and field).
    torch.testing.assert_close(ratio, ratio[:, :, :1].expand_as(ratio))


def test_log_q_correction_lowers_popular_items_as_negatives() -> None:
    torch.manual_seed(0)
    user, item = (
        torch.nn.functional.normalize(torch.randn(4, 8), dim=1),
        torch.nn.functional.normalize(torch.randn(4, 8), dim=1),
    )
    ids = torch.arange(4)
    plain = in_batch_softmax(user, item, 0.1, ids, None)
    # Item 0 is very popular (log q high): as a negative it is discounted, so the loss of the other rows drops.
    corrected = in_batch_softmax(user, item, 0.1, ids, torch.tensor([0.0, -6.0, -6.0, -6.0]))
    uniform = in_batch_softmax(user, item, 0.1, ids, torch.full((4,), -6.0))
    torch.testing.assert_close(uniform, plain)  # a constant shift changes nothing
    assert not torch.isclose(corrected, plain)


def test_the_same_item_twice_in_a_batch_is_not_its_own_negative() -> None:
    user = torch.eye(3)
    item = torch.eye(3)[[0, 0, 2]]  # rows 0 and 1 clicked the same item
    loss_dupe = in_batch_softmax(user, item, 1.0, torch.tensor([7, 7, 9]), None)
    loss_distinct = in_batch_softmax(user, item, 1.0, torch.tensor([7, 8, 9]), None)
    assert loss_dupe < loss_distinct


def test_features_of_other_sizes_are_projected_for_pairwise_models() -> None:
    model = build_model(ModelConfig(type="deepfm", embedding_dim=8, dense_layers=[8]), INPUTS)
    assert set(model.fields.projections) == {"device"}  # type: ignore[union-attr]
    sparse, _ = batch()
    assert model.fields(sparse).shape == (B, 5, 8)  # type: ignore[operator]
