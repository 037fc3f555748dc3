"""Evaluate the CRDs' CEL rules locally, so the CLI and the local runner refuse
exactly what the API server refuses, from the same rule text."""

from __future__ import annotations

from functools import cache
from typing import Any

import celpy
from celpy import celtypes

_ENV = celpy.Environment()


def _is_sorted(values: celtypes.ListType) -> celtypes.BoolType:
    # Kubernetes' CEL list library; celpy does not ship it.
    items: list[Any] = list(values)
    return celtypes.BoolType(items == sorted(items))


@cache
def _program(rule: str) -> celpy.Runner:
    return _ENV.program(_ENV.compile(rule), functions={"isSorted": _is_sorted})


def violations(rules: list[dict[str, str]], obj: dict[str, Any]) -> list[dict[str, str]]:
    """The rules that `obj` (wire format, defaults applied) breaks."""
    broken = []
    activation = {"self": celpy.json_to_cel(obj)}
    for rule in rules:
        try:
            ok = bool(_program(rule["rule"]).evaluate(activation))
        except celpy.CELEvalError:
            ok = False
        if not ok:
            broken.append(rule)
    return broken
