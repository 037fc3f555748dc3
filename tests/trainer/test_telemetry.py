"""Progress for people on stderr and for Prometheus on rank 0's /metrics."""

from __future__ import annotations

import urllib.request

import pytest

from recplane.trainer.launch import free_port
from recplane.trainer.telemetry import METRICS_PORT_ENV, TrainTelemetry


def test_rank_zero_serves_the_training_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv(METRICS_PORT_ENV, str(port))
    telemetry = TrainTelemetry("feed-deepfm", enabled=True, total_steps=100)
    try:
        telemetry.progress(40, 0.4321, 12_345.0, elapsed=8.0, done=40)
        telemetry.evaluated(0.7512)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        telemetry.close()
    assert 'recplane_train_step{trainjob="feed-deepfm"} 40.0' in body
    assert 'recplane_train_loss{trainjob="feed-deepfm"} 0.4321' in body
    assert 'recplane_train_samples_per_second{trainjob="feed-deepfm"} 12345.0' in body
    assert 'recplane_train_auc{trainjob="feed-deepfm"} 0.7512' in body


def test_progress_lines_show_step_loss_speed_and_eta(capsys: pytest.CaptureFixture[str]) -> None:
    telemetry = TrainTelemetry("job", enabled=True, total_steps=100)
    telemetry.progress(25, 0.5, 2000.0, elapsed=10.0, done=25, force=True)
    assert capsys.readouterr().err.strip() == "step 25/100  loss 0.50000  2,000 samples/s  eta 0:00:30"


def test_other_ranks_stay_silent(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(METRICS_PORT_ENV, str(free_port()))
    telemetry = TrainTelemetry("job", enabled=False, total_steps=10)
    telemetry.progress(5, 0.1, 1.0, elapsed=1.0, done=5, force=True)
    assert telemetry.port is None
    assert capsys.readouterr().err == ""
