"""Checks a request's raw feature values against the served model's input columns.

The schema models (`recplane.serving.schemas`) check a body's shape; this module
checks what only the model knows: which keys are input columns, and what each
column takes. Every problem is reported with its location in the request
(`("candidates", 3, "hour")`), so the 400 response names the field.

What a column takes follows from the features that read it (the FeatureSet spec)
and, when known, the column's type in the training samples:

* `id` columns (sparse features with hash, vocabulary or cross transforms): a string,
  an integer or a boolean; an integer is accepted for a string column and sent as its
  decimal string, the way the logs would have carried it;
* `number` columns (dense features, bucketize and quantile transforms): a finite number;
* `ids` columns (multi-hot features): a list of ids;
* `null` or a missing key is a missing value: the null bucket (or the dense default),
  exactly as in training.

Unknown keys are refused (400 naming the key) or, with
RECPLANE_SERVE_UNKNOWN_FEATURES=ignore, dropped. After validation a row holds only
values the feature transforms accept, so no request reaches them that they would
fail on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from recplane.data.row_transform import RowBlock

from .schemas import ITEM_ID, RankRequest, RecallRequest

ColumnKind = Literal["id", "number", "ids"]
ValueType = Literal["string", "integer", "float", "boolean"]
Loc = tuple[str | int, ...]
# Enough to fix a request; a body with thousands of bad values gets the first ones.
MAX_ERRORS = 50
_ID_TRANSFORMS = ("hash", "vocabulary", "cross")
_VALUE_TYPES: dict[str, ValueType] = {"string": "string", "int": "integer", "float": "float", "bool": "boolean"}
_INT64 = (-(2**63), 2**63 - 1)
_FLOAT32_MAX = 3.4028234663852886e38
_NOTHING: frozenset[str] = frozenset()
_ITEM_ID_ONLY = frozenset((ITEM_ID,))
_ITEM_ID_TYPES = {str, int}


@dataclass(frozen=True)
class ColumnRule:
    """What one raw input column takes."""

    column: str
    kind: ColumnKind
    features: tuple[str, ...]
    value_type: ValueType | None = None  # type of the (element) values in the training samples, when known

    def describe(self) -> str:
        what = {"id": "one id", "number": "a finite number", "ids": "a list of ids"}[self.kind]
        typed = f" ({self.value_type})" if self.value_type and self.kind != "number" else ""
        return f"{what}{typed}"


def rules_from_features(
    features: Iterable[Any], column_kinds: Mapping[str, str] | None = None
) -> dict[str, ColumnRule]:
    """Column rules from FeatureSet features (objects with name, type, columns, transform.type).

    `column_kinds` are the processor's canonical training column types (`string`, `int`, `float`,
    `bool`, `list<string>`, ...). A column read by several features takes what all of them take:
    a number read by both a dense feature and a hashed cross stays a number.
    """
    column_kinds = column_kinds or {}
    kinds: dict[str, ColumnKind] = {}
    users: dict[str, list[str]] = {}
    for f in features:
        transform = getattr(getattr(f, "transform", None), "type", None)
        for column in f.columns:
            if f.type == "multi_hot":
                kind: ColumnKind = "ids"
            elif f.type == "dense" or transform not in _ID_TRANSFORMS:
                kind = "number"
            else:
                kind = "id"
            previous = kinds.get(column)
            if previous is None or previous == "id":
                kinds[column] = kind
            users.setdefault(column, []).append(f.name)
    return {
        c: ColumnRule(column=c, kind=k, features=tuple(users[c]), value_type=_value_type(column_kinds.get(c)))
        for c, k in kinds.items()
    }


def _value_type(column_kind: str | None) -> ValueType | None:
    if not column_kind:
        return None
    element = column_kind.removeprefix("list<").removesuffix(">")
    return _VALUE_TYPES.get(element)


class RequestInvalid(ValueError):
    """A request the model cannot score; `errors` are pydantic-style dicts (loc, msg, type)."""

    def __init__(self, errors: Sequence[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self.errors = list(errors)


class _Errors:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, loc: Loc, msg: str, type_: str) -> None:
        if len(self.items) < MAX_ERRORS:
            self.items.append({"loc": list(loc), "msg": msg, "type": type_})

    @property
    def full(self) -> bool:
        return len(self.items) >= MAX_ERRORS


class RequestValidator:
    """Turns validated request bodies into rows of raw values for the feature transform."""

    def __init__(
        self,
        rules: Mapping[str, ColumnRule],
        *,
        unknown: Literal["refuse", "ignore"] = "refuse",
        max_candidates: int = 1000,
        max_recall_k: int = 1000,
        model_version: str = "",
    ) -> None:
        self.rules = dict(rules)
        self.unknown = unknown
        self.max_candidates = max_candidates
        self.max_recall_k = max_recall_k
        self.model_version = model_version
        self._known = ", ".join(sorted(self.rules)) or "(none)"
        # Most values of a ranking call are string ids, integers and floats that fit their column as they
        # are: a type and range check passes them (the same outcome as _check, in a fraction of the time).
        self._plain_strings = frozenset(
            c for c, r in self.rules.items() if r.kind == "id" and r.value_type in (None, "string")
        )
        self._plain_ints = frozenset(
            c
            for c, r in self.rules.items()
            if r.kind == "number" or (r.kind == "id" and r.value_type in (None, "integer"))
        )
        self._plain_floats = frozenset(
            c for c, r in self.rules.items() if r.kind == "number" and r.value_type != "integer"
        )

    # ---- public ---------------------------------------------------------------------
    def rank_rows(self, request: RankRequest) -> list[dict[str, Any]]:
        """One row per candidate: user ∪ context ∪ candidate values. Raises RequestInvalid."""
        shared, candidates = self._rank_values(request)
        return [{**shared, **values} for values in candidates]

    def rank_block(self, request: RankRequest) -> RowBlock:
        """The rows of `rank_rows` as a block: user ∪ context values shared, candidates' values column-wise.
        Raises RequestInvalid."""
        candidates = request.candidates
        if len(candidates) <= self.max_candidates:
            errors = _Errors()
            shared = self._shared(request.user, request.context, errors)
            columns = None if errors.items else self._plain_columns(candidates, shared)
            if columns is not None:
                return RowBlock(len(candidates), shared, columns)
        shared, values = self._rank_values(request)  # the value by value checks, which name each problem
        return RowBlock.of_rows(values, shared)

    def _rank_values(self, request: RankRequest) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(user ∪ context values, each candidate's own values). Raises RequestInvalid."""
        errors = _Errors()
        if len(request.candidates) > self.max_candidates:
            errors.add(
                ("candidates",),
                f"{len(request.candidates)} candidates is more than the limit of {self.max_candidates} "
                "(RECPLANE_SERVE_MAX_CANDIDATES); split the call",
                "too_long",
            )
            raise RequestInvalid(errors.items)
        shared = self._shared(request.user, request.context, errors)
        candidates = []
        for i, candidate in enumerate(request.candidates):
            if errors.full:
                break
            candidates.append(self._candidate(candidate, i, shared, errors))
        if errors.items:
            raise RequestInvalid(errors.items)
        return shared, candidates

    def recall_row(self, request: RecallRequest) -> dict[str, Any]:
        """The user ∪ context row of a recall request. Raises RequestInvalid."""
        errors = _Errors()
        if request.k is not None and request.k > self.max_recall_k:
            errors.add(
                ("k",),
                f"{request.k} is more than the limit of {self.max_recall_k} (RECPLANE_SERVE_MAX_RECALL_K)",
                "too_big",
            )
        row = self._shared(request.user, request.context, errors)
        if errors.items:
            raise RequestInvalid(errors.items)
        return row

    # ---- parts ----------------------------------------------------------------------
    def _shared(self, user: dict[str, Any], context: dict[str, Any], errors: _Errors) -> dict[str, Any]:
        """The user ∪ context values."""
        shared = self._section(user, ("user",), errors)
        values = self._section(context, ("context",), errors)
        for key in shared.keys() & values.keys():
            errors.add(("context", key), f"{key!r} is also given in user; give each column once", "duplicate_key")
        shared.update(values)
        return shared

    def _plain_columns(self, candidates: list[dict[str, Any]], shared: dict[str, Any]) -> dict[str, list[Any]] | None:
        """The candidates' values column by column when every one fits its column as it is (the common
        case: ids as strings or integers, finite numbers), checked a column at a time; else None, and the
        value by value checks decide (and name what is wrong)."""
        names = set().union(*candidates)
        if ITEM_ID not in names or not shared.keys().isdisjoint(names):
            return None
        columns = {}
        for name in names:
            values = [c.get(name) for c in candidates]
            kinds = set(map(type, values))
            if name == ITEM_ID:
                if not kinds <= _ITEM_ID_TYPES:  # also a candidate without one (None)
                    return None
                if name not in self.rules:  # the candidate's identity only, no model input
                    continue
            if not self._fits_as_is(name, values, kinds):
                return None
            columns[name] = values
        return columns

    def _fits_as_is(self, name: str, values: list[Any], kinds: set[type]) -> bool:
        present = values
        if type(None) in kinds:
            kinds = kinds - {type(None)}
            present = [v for v in values if v is not None]
        if not kinds:
            return name in self.rules  # only missing values, of a known column
        if kinds == {str}:
            return name in self._plain_strings
        if kinds == {int}:
            return name in self._plain_ints and _INT64[0] <= min(present) and max(present) <= _INT64[1]
        if kinds == {float}:  # the comparisons are False for NaN
            return name in self._plain_floats and all(-_FLOAT32_MAX <= v <= _FLOAT32_MAX for v in present)
        return False

    def _candidate(
        self, candidate: dict[str, Any], index: int, shared: dict[str, Any], errors: _Errors
    ) -> dict[str, Any]:
        loc: Loc = ("candidates", index)
        item_id = candidate.get(ITEM_ID)
        item_id_ok = False
        if item_id is None:
            errors.add((*loc, ITEM_ID), "Field required: every candidate needs its item_id", "missing")
        elif isinstance(item_id, bool) or not isinstance(item_id, str | int):
            errors.add((*loc, ITEM_ID), f"must be a string or an integer, got {_kind_of(item_id)}", "item_id_type")
        else:
            item_id_ok = True
        # item_id is the candidate's identity in the response; as a model input it is checked like any column.
        skip = _NOTHING if item_id_ok and ITEM_ID in self.rules else _ITEM_ID_ONLY
        values = self._section(candidate, loc, errors, skip=skip)
        if not shared.keys().isdisjoint(values):
            for key in values.keys() & shared.keys():
                errors.add(
                    (*loc, key), f"{key!r} is also given in user or context; give each column once", "duplicate_key"
                )
        return values

    def _section(
        self, values: dict[str, Any], loc: Loc, errors: _Errors, skip: frozenset[str] = frozenset()
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in values.items():
            if key in skip:
                continue
            kind = type(value)  # exact types: a bool is no int here, and goes the long way
            if (
                (kind is str and key in self._plain_strings)
                or (kind is int and key in self._plain_ints and _INT64[0] <= value <= _INT64[1])
                or (kind is float and key in self._plain_floats and -_FLOAT32_MAX <= value <= _FLOAT32_MAX)  # not NaN
            ):
                out[key] = value
                continue
            rule = self.rules.get(key)
            if rule is None:
                if self.unknown == "refuse":
                    errors.add(
                        (*loc, key),
                        f"{key!r} is not an input column of model version {self.model_version}; "
                        f"known columns: {self._known} (or set RECPLANE_SERVE_UNKNOWN_FEATURES=ignore)",
                        "unknown_feature",
                    )
                continue
            problem, clean = _check(rule, value)
            if problem is not None:
                errors.add((*loc, key), problem, "feature_value_type")
            else:
                out[key] = clean
        return out


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number" if math.isfinite(value) else _json_number(value)
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _check(rule: ColumnRule, value: Any) -> tuple[str | None, Any]:
    """(problem, cleaned value): problem is None when `value` fits `rule`."""
    if value is None:
        return None, None
    if rule.kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be {rule.describe()} for feature {_features(rule)}, got {_kind_of(value)}", None
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number for feature {_features(rule)}, got {_json_number(value)}", None
        if rule.value_type == "integer":
            # The training column holds integers: 13.0 is 13, 13.5 has no integer value to bucket.
            if isinstance(value, float):
                if not value.is_integer():
                    return f"must be an integer for feature {_features(rule)}, got {value}", None
                value = int(value)
            if not _INT64[0] <= value <= _INT64[1]:
                return f"is out of the 64-bit integer range for feature {_features(rule)}", None
            return None, value
        if abs(value) > _FLOAT32_MAX:
            # Model inputs are float32: a larger magnitude would reach the model as infinity.
            return f"is out of the float32 range (±3.4e38) for feature {_features(rule)}", None
        return None, float(value) if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1] else value
    if rule.kind == "ids":
        if not isinstance(value, list):
            return f"must be {rule.describe()} for feature {_features(rule)}, got {_kind_of(value)}", None
        cleaned = []
        for j, element in enumerate(value):
            problem, clean = _check_id(rule, element)
            if problem is not None or clean is None:
                return f"element [{j}] {problem or 'must not be null'}", None
            cleaned.append(clean)
        return None, cleaned
    return _check_id(rule, value)


def _check_id(rule: ColumnRule, value: Any) -> tuple[str | None, Any]:
    if value is None:
        return None, None
    wanted = rule.value_type
    if isinstance(value, bool):
        if wanted in (None, "boolean"):
            return None, value
    elif isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            if wanted == "string":
                return None, str(value)
            return f"is out of the 64-bit integer range for feature {_features(rule)}; send it as a string", None
        if wanted in (None, "integer"):
            return None, value
        if wanted == "string":
            return None, str(value)
        if wanted == "float":
            return None, float(value)
    elif isinstance(value, str):
        if wanted in (None, "string"):
            return None, value
    elif isinstance(value, float) and math.isfinite(value) and wanted == "float":
        return None, value
    expected = {
        None: "a string, an integer or a boolean",
        "string": "a string",
        "integer": "an integer",
        "float": "a number",
        "boolean": "a boolean",
    }[wanted]
    return f"must be {expected} for feature {_features(rule)}, got {_kind_of(value)}", None


def _json_number(value: float) -> str:
    """NaN, Infinity, -Infinity: the non-finite values as a JSON body spells them."""
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _features(rule: ColumnRule) -> str:
    return ", ".join(rule.features)
