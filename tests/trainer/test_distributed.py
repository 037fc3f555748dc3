"""Distributed training under torchrun (2 processes, gloo): every sharding plan trains the same model,
a restarted job resumes from its last complete checkpoint to the same model, a resume with another
world size is refused, and the local runner's launcher returns the stored version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pipeline_data as pdx
import pytest
import torch

from recplane.store import LocalStore
from recplane.trainer.checkpoint import MARKER
from recplane.trainer.errors import CheckpointError
from recplane.trainer.launch import free_port, run_torchrun, training_env
from recplane.trainer.step import train_job

SCENARIOS = Path(__file__).parent / "dist_scenarios.py"


def torchrun(scenario: str, store: LocalStore, tmp_path: Path, nproc: int = 2) -> dict[str, Any]:
    out = tmp_path / f"{scenario}.json"
    log = tmp_path / f"{scenario}.log"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1",
        f"--master-port={free_port()}", str(SCENARIOS), scenario, str(store.root), str(out),
    ]  # fmt: skip
    with log.open("wb") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, log.read_text()[-4000:]
    return json.loads(out.read_text())


def weights(uri: str) -> dict[str, torch.Tensor]:
    return torch.load(Path(uri) / "model.pt", weights_only=True)


def assert_same_model_under_each_plan(runs: dict[str, Any], tolerance: float) -> None:
    """Every run's weights match the table_wise run's, and its recorded plan is the one it was given."""
    reference = weights(runs["table_wise"]["uri"])
    for plan, run in runs.items():
        model = weights(run["uri"])
        assert model.keys() == reference.keys()
        for name, tensor in reference.items():
            torch.testing.assert_close(model[name], tensor, atol=tolerance, rtol=tolerance, msg=f"{plan}: {name}")
        recorded = json.loads((Path(run["uri"]) / "sharding_plan.json").read_text())
        assert {p["shardingType"] for p in recorded.values()} == {plan}


def test_every_sharding_plan_trains_the_same_model(store: LocalStore, tmp_path: Path) -> None:
    runs = torchrun("plans", store, tmp_path)
    assert set(runs) == {"table_wise", "column_wise", "table_column_wise", "data_parallel"}
    assert_same_model_under_each_plan(runs, tolerance=1e-5)
    column_wise = json.loads((Path(runs["column_wise"]["uri"]) / "sharding_plan.json").read_text())
    user = column_wise["emb_user_id"]
    # 8 embedding columns and 4 first-order ones, in three 4-wide shards over both ranks.
    assert [s["sizes"][1] for s in user["shards"]] == [4, 4, 4] and sorted(set(user["ranks"])) == [0, 1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="row_wise sharding and nccl need a CUDA GPU")
def test_on_gpus_row_wise_trains_the_same_model_and_stores_it_for_cpu_serving(
    store: LocalStore, tmp_path: Path
) -> None:
    runs = torchrun("gpu_plans", store, tmp_path, nproc=min(2, torch.cuda.device_count()))
    assert set(runs) == {"row_wise", "table_wise", "data_parallel"}
    # The stored version is plain CPU tensors: a CPU-only server loads it without a map_location.
    assert {t.device.type for t in weights(runs["table_wise"]["uri"]).values()} == {"cpu"}
    assert_same_model_under_each_plan(runs, tolerance=1e-4)
    assert all(run["metrics"]["auc"] > 0.5 for run in runs.values())


def test_a_restarted_job_resumes_from_its_last_checkpoint_to_the_same_model(store: LocalStore, tmp_path: Path) -> None:
    runs = torchrun("resume", store, tmp_path)
    assert runs["crashed"] == "injected crash at step 7"
    resumed, uninterrupted = weights(runs["resumed"]["uri"]), weights(runs["uninterrupted"]["uri"])
    for name, tensor in uninterrupted.items():
        torch.testing.assert_close(resumed[name], tensor, atol=1e-6, rtol=1e-6, msg=name)
    assert runs["resumed"]["metrics"]["auc"] == pytest.approx(runs["uninterrupted"]["metrics"]["auc"], abs=1e-6)
    # A stored version makes its checkpoints redundant: none are left behind.
    assert store.list_objects(store.prefix("default", "trainjob", "resumable") + "checkpoints/") == []


def test_resuming_with_another_world_size_is_refused_with_both_sizes(store: LocalStore, tmp_path: Path) -> None:
    runs = torchrun("crash", store, tmp_path)
    assert runs["crashed"] == "injected crash at step 7"
    kept = store.list_objects(store.prefix("default", "trainjob", "resumable") + "checkpoints/step-5/")
    assert any(o.key.endswith("/" + MARKER) for o in kept)
    doc = pdx.trainjob("resumable", optimization={"maxSteps": 12}, model={"dropout": 0.2, "batchNorm": True})
    with pytest.raises(CheckpointError) as e:
        train_job(pdx.resource(doc), store)
    message = str(e.value)
    assert "step-5 was written by 2 processes but this run has 1" in message
    assert "Run with 2 processes" in message and "checkpoints" in message


def test_the_local_runner_launches_torchrun_and_gets_the_stored_version(store: LocalStore, tmp_path: Path) -> None:
    doc = pdx.trainjob("launched", distributed={"sharding": "auto"}, optimization={"maxSteps": 4})
    spec = pdx.write_spec(tmp_path / "trainjob.yaml", doc)
    log = tmp_path / "train.log"
    manifest = run_torchrun(spec, nproc=2, env={"RECPLANE_STORE": str(store.root)}, log_path=log)
    assert manifest == store.latest("default", "trainjob", "launched")
    assert manifest.status["step"] == 4
    text = log.read_text()
    assert "sharding plan (auto, 2 processes)" in text
    assert "step 4/4" in text and "samples/s" in text


def test_the_launched_processes_share_the_cores_and_ask_for_huge_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert training_env(2)["OMP_NUM_THREADS"] == "4"
    assert training_env(1)["OMP_NUM_THREADS"] == "8"
    assert training_env(16)["OMP_NUM_THREADS"] == "1"
    assert training_env(2)["THP_MEM_ALLOC_ENABLE"] == "1"
