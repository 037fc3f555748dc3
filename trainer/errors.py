"""Errors for people: each names the cause (spec field, step, checkpoint) and the fix."""

from __future__ import annotations


class TrainError(RuntimeError):
    """Training cannot go on. `field` is the spec path or input at fault (e.g. `spec.model.type`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ShardingError(TrainError):
    """The sharding plan cannot place a table as asked."""


class NonFiniteLossError(TrainError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class CheckpointError(TrainError):
    """A checkpoint cannot be resumed from."""
