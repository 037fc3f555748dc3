"""Errors for people: every data error names the spec field (or input) at fault and the fix."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input or spec. `field` is a path like `spec.source.uri` or `rows[3].user_id`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
