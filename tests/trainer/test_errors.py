"""Bad input ends with a message that names the cause and the fix, and loses nothing already stored."""

from __future__ import annotations

import json
from pathlib import Path

import pipeline_data as pdx
import pytest
import torch

from recplane.api.featureset import FeatureSetSpec
from recplane.api.resource import ResourceError
from recplane.data.catalogs import feed_features
from recplane.data.steps import materialize_featureset
from recplane.store import LocalStore
from recplane.trainer.checkpoint import MARKER
from recplane.trainer.errors import NonFiniteLossError, ShardingError, TrainError
from recplane.trainer.models import objectives
from recplane.trainer.step import train_job, train_step

SINGLE = {"procsPerWorker": 1}


def job(name: str, **overrides: object):  # type: ignore[no-untyped-def]
    overrides.setdefault("distributed", SINGLE)
    return pdx.resource(pdx.trainjob(name, **overrides))  # type: ignore[arg-type]


def test_an_unknown_model_type_is_refused_naming_the_field_and_the_choices() -> None:
    with pytest.raises(ResourceError) as e:
        pdx.resource(pdx.trainjob("bad", model={"type": "xgboost"}))
    assert "spec.model.type" in str(e.value) and "deepfm" in str(e.value)


def test_the_step_command_prints_one_error_line_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = pdx.write_spec(tmp_path / "tj.yaml", pdx.trainjob("bad", model={"type": "xgboost"}))
    with pytest.raises(SystemExit) as e:
        train_step(spec)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: TrainJob") and "spec.model.type" in err


def test_the_step_command_prints_the_manifest_last(
    store: LocalStore, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECPLANE_STORE", str(store.root))
    spec = pdx.write_spec(tmp_path / "tj.yaml", pdx.trainjob("cli", model={"type": "lr"}, distributed=SINGLE))
    manifest = train_step(spec)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["version"] == manifest.version


def test_an_embedding_width_the_plan_cannot_place_names_the_feature(store: LocalStore) -> None:
    with pytest.raises(ShardingError) as e:
        train_job(job("narrow", model={"embeddingDim": 6}), store)
    message = str(e.value)
    assert "spec.model.embeddingDim" in message and "feature 'user_id'" in message and "multiple of 4" in message


def test_the_fused_adam_optimiser_is_refused_on_cpu(store: LocalStore) -> None:
    with pytest.raises(TrainError, match=r"sparseOptimizer: .*adam.*GPUs.*rowwise_adagrad"):
        train_job(job("adam", optimization={"sparseOptimizer": "adam"}), store)


def test_a_missing_featureset_names_the_reference(store: LocalStore) -> None:
    with pytest.raises(
        TrainError,
        match=r"spec.featureSetRef: FeatureSet default/nope has no stored version .*recplane step featureset",
    ):
        train_job(job("orphan", featureSetRef={"name": "nope"}), store)


def test_a_batch_larger_than_the_data_is_refused(store: LocalStore) -> None:
    with pytest.raises(TrainError, match=r"spec.optimization.batchSize: .*fewer than one global batch"):
        train_job(job("huge", optimization={"batchSize": 1_000_000}), store)


def test_a_feature_missing_from_the_featureset_stops_a_warm_start(store: LocalStore) -> None:
    first = train_job(job("warm", optimization={"maxSteps": 2}), store)
    fewer = [f for f in feed_features() if f.name != "referrer"]
    materialize_featureset(
        FeatureSetSpec(sample_set_ref={"name": pdx.SAMPLES}, features=fewer), store, "default", pdx.FEATURES
    )
    with pytest.raises(TrainError) as e:
        train_job(job("warm", optimization={"maxSteps": 2}), store, warm_start_from=first.version)
    assert "features[referrer]" in str(e.value) and "missing from the FeatureSet" in str(e.value)


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real = objectives.weighted_bce

    def exploding(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        calls["n"] += 1
        loss = real(logits, labels, weights)
        return loss * float("nan") if calls["n"] >= 8 else loss

    monkeypatch.setattr(objectives, "weighted_bce", exploding)
    with pytest.raises(NonFiniteLossError) as e:
        train_job(job("unstable", optimization={"maxSteps": 20}, checkpoint={"everySteps": 5}), store)
    message = str(e.value)
    assert "at step 8" in message and "step-5" in message and "gradientClipNorm" in message
    prefix = store.prefix("default", "trainjob", "unstable")
    assert store.exists(prefix + "checkpoints/step-5/" + MARKER)
    assert store.versions("default", "trainjob", "unstable") == []
