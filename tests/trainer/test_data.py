"""Batches prepared ahead in a background thread arrive in order, errors surface where they happened,
and leaving the loop early stops the producer."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from recplane.trainer.data import prefetch


def test_prefetched_items_arrive_in_order_and_all_of_them() -> None:
    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))
    assert list(prefetch(iter([]))) == []


def test_an_error_while_preparing_is_raised_after_the_items_before_it() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("shard 3 is unreadable")

    seen = []
    with pytest.raises(ValueError, match="shard 3 is unreadable"):
        for item in prefetch(items()):
            seen.append(item)
    assert seen == [1, 2]


def test_leaving_the_loop_early_stops_the_producer_and_closes_the_source() -> None:
    produced: list[int] = []
    closed = threading.Event()

    def items() -> Iterator[int]:
        try:
            for i in range(10_000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    for item in prefetch(items(), depth=2):
        if item == 3:
            break
    assert closed.wait(5)
    time.sleep(0.2)
    assert len(produced) <= 3 + 1 + 2 + 1  # what was consumed, the queue and one item in hand
    assert not any(t.name == "recplane-prefetch" and t.is_alive() for t in threading.enumerate())
