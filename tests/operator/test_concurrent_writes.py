"""A reconcile's independent writes go out side by side, and none is left behind on an error."""

from __future__ import annotations

import functools
import threading

import pytest

from recplane.operator.config import OperatorConfig
from recplane.operator.controllers.base import Context
from recplane.operator.kube import ApiError


def context() -> Context:
    return Context(kube=None, artifacts=None, config=OperatorConfig(workers=2), events=lambda *a: None)  # type: ignore[arg-type]


def test_writes_are_in_flight_together() -> None:
    # Each write waits until all three have started: run one after another, they would time out.
    barrier = threading.Barrier(3, timeout=10)

    def write(name: str) -> str:
        barrier.wait()
        return name

    out = context().concurrently({k: functools.partial(write, k) for k in ("deployment", "service", "hpa")})
    assert out == {"deployment": "deployment", "service": "service", "hpa": "hpa"}


def test_an_error_is_raised_once_every_other_write_has_finished() -> None:
    finished: list[str] = []
    release = threading.Event()

    def slow() -> None:
        release.wait(10)
        finished.append("slow")

    def refused() -> None:
        release.set()
        raise ApiError(422, "Invalid", "spec.ports: Required value")

    with pytest.raises(ApiError, match=r"spec\.ports"):
        context().concurrently({"deployment": slow, "service": refused})
    assert finished == ["slow"]


def test_a_single_write_runs_in_the_callers_thread() -> None:
    assert context().concurrently({"only": lambda: threading.current_thread().name}) == {
        "only": threading.current_thread().name
    }
