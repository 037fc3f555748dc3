"""Sample strategies: label rule, dedupe, bot filter, inactive users, time split, negative sampling.

Each works on a whole Arrow table sorted by time, with columnar operations
(pyarrow group-by, numpy sorts and masks) and no Python loop per row. A column a
strategy needs but the events lack is a DataError naming the spec field.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recplane.api.sampleset import BotFilter, Dedupe, InactiveUserFilter, LabelRule, NegativeSampling, Split

from . import synthetic
from .errors import DataError

LABEL_COLUMN = "label"
WEIGHT_COLUMN = "weight"
P_LABEL_COLUMN = "_p_label"


def _require(table: pa.Table, column: str, field: str) -> pa.ChunkedArray:
    if column not in table.column_names:
        shown = ", ".join(c for c in table.column_names if not c.startswith(synthetic.HIDDEN_PREFIX))
        raise DataError(field, f"column {column!r} is not in the events (columns: {shown})")
    return table[column]


def _not_empty(table: pa.Table, before: int, field: str, what: str) -> pa.Table:
    if table.num_rows == 0:
        raise DataError(field, f"no events left after {what} ({before:,} before); relax this setting")
    return table


def normalize_time(table: pa.Table, column: str) -> pa.Table:
    """Make the timestamp column int64 epoch seconds and sort the table by it (stable)."""
    field = "spec.columns.timestamp"
    col = _require(table, column, field)
    t = col.type
    try:
        if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_string(t) or pa.types.is_large_string(t):
            secs = pc.cast(pc.cast(col, pa.timestamp("s")), pa.int64())
        elif pa.types.is_integer(t):
            secs = pc.cast(col, pa.int64())
        elif pa.types.is_floating(t):
            secs = pc.cast(pc.floor(col), pa.int64())
        else:
            raise DataError(field, f"column {column!r} has type {t}; expected epoch seconds or a timestamp")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise DataError(field, f"column {column!r} is not a timestamp: {str(e).splitlines()[0]}") from None
    if secs.null_count:
        raise DataError(field, f"{secs.null_count:,} events have no {column!r}; every event needs a timestamp")
    table = table.set_column(table.schema.get_field_index(column), column, secs)
    return table.sort_by([(column, "ascending")])


def apply_label(table: pa.Table, rule: LabelRule) -> pa.Table:
    """Add `label` (float32 0/1): clicked, and dwelled at least minDwellSeconds when a dwell column is set.

    For synthetic events also add `_p_label`, the true P(label) under this rule.
    """
    clicked = _numeric(_require(table, rule.click_column, "spec.label.clickColumn"), "spec.label.clickColumn")
    positive = pc.greater(pc.fill_null(clicked, 0), 0)
    if rule.dwell_column:
        dwell = _numeric(_require(table, rule.dwell_column, "spec.label.dwellColumn"), "spec.label.dwellColumn")
        long_enough = pc.fill_null(pc.greater_equal(dwell, rule.min_dwell_seconds), False)
        positive = pc.and_(positive, long_enough)
    label = pc.cast(positive, pa.float32())
    p_label = None
    names = table.column_names
    if synthetic.P_CLICK_COLUMN in names and rule.click_column == "clicked":
        p_click = table[synthetic.P_CLICK_COLUMN].to_numpy()
        if rule.dwell_column is None:
            p_label = p_click
        elif rule.dwell_column == "dwell_s" and synthetic.DWELL_SCALE_COLUMN in names:
            scale = table[synthetic.DWELL_SCALE_COLUMN].to_numpy()
            p_label = synthetic.p_label(p_click, scale, rule.min_dwell_seconds)
    table = table.drop_columns(
        [c for c in (LABEL_COLUMN, WEIGHT_COLUMN, P_LABEL_COLUMN) if c in names]
        + [c for c in (synthetic.P_CLICK_COLUMN, synthetic.DWELL_SCALE_COLUMN) if c in names]
    )
    table = table.append_column(LABEL_COLUMN, label)
    if p_label is not None:
        table = table.append_column(P_LABEL_COLUMN, pa.array(p_label, pa.float64()))
    return table


def _numeric(col: pa.ChunkedArray, field: str) -> pa.ChunkedArray:
    t = col.type
    if pa.types.is_boolean(t):
        return pc.cast(col, pa.int8())
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return col
    raise DataError(field, f"column has type {t}; expected a number or a boolean")


def dedupe(table: pa.Table, cfg: Dedupe) -> pa.Table:
    """Keep the first (earliest) event of each key tuple; the table must be sorted by time."""
    for key in cfg.keys:
        _require(table, key, "spec.dedupe.keys")
    rows = table.select(cfg.keys).append_column("_row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    try:
        first = rows.group_by(cfg.keys, use_threads=False).aggregate([("_row", "min")])["_row_min"]
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as e:
        raise DataError("spec.dedupe.keys", f"cannot group by {cfg.keys}: {e}") from None
    keep = np.sort(first.to_numpy())
    return table.take(pa.array(keep))


def _codes(col: pa.ChunkedArray) -> np.ndarray:
    """Dense integer codes of a column's values (null -> -1)."""
    encoded = pc.dictionary_encode(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
    return pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def bot_filter(table: pa.Table, cfg: BotFilter, user_column: str, ts_column: str) -> tuple[pa.Table, int]:
    """Drop every event of users with more than maxEvents events inside any windowSeconds window.

    Returns (table, number of users dropped). The table must be sorted by time.
    """
    codes = _codes(_require(table, user_column, "spec.columns.user"))
    ts = table[ts_column].to_numpy()
    m = cfg.max_events
    if len(codes) <= m:
        return table, 0
    order = np.argsort(codes, kind="stable")  # per user, still in time order
    u, t = codes[order], ts[order]
    # More than m events inside a window <=> some event and the m-th after it are closer than the window.
    burst = (u[m:] == u[:-m]) & (t[m:] - t[:-m] < cfg.window_seconds) & (u[m:] >= 0)
    bots = np.unique(u[m:][burst])
    if len(bots) == 0:
        return table, 0
    return table.filter(pa.array(~np.isin(codes, bots))), len(bots)


def inactive_users(table: pa.Table, cfg: InactiveUserFilter, user_column: str) -> tuple[pa.Table, int]:
    """Drop users with fewer than minEvents events (and events without a user). Returns (table, users dropped)."""
    codes = _codes(_require(table, user_column, "spec.columns.user"))
    counts = np.bincount(codes[codes >= 0], minlength=int(codes.max()) + 1 if len(codes) else 0)
    active = counts >= cfg.min_events
    keep = (codes >= 0) & active[np.maximum(codes, 0)]
    return table.filter(pa.array(keep)), int((~active).sum())


def time_split(table: pa.Table, split: Split, ts_column: str) -> tuple[pa.Table, pa.Table]:
    """(train, validation): validation is the newest `validationFraction` of the events, split at a timestamp."""
    ts = table[ts_column].to_numpy()
    n = len(ts)
    cut = ts[min(n - 1, int(n * (1.0 - split.validation_fraction)))]
    n_train = int(np.searchsorted(ts, cut, side="left"))
    if n_train == 0 or n_train == n:
        raise DataError(
            "spec.split.validationFraction",
            f"the {n:,} events span too little time to split (cut at ts={cut}); "
            "add events from a longer period or change validationFraction",
        )
    return table.slice(0, n_train), table.slice(n_train)


def negative_sampling(table: pa.Table, cfg: NegativeSampling, seed: int) -> pa.Table:
    """Keep every positive and a `rate` fraction of negatives; add `weight` = 1/rate on kept negatives."""
    label = table[LABEL_COLUMN].to_numpy()
    positive = label > 0.5
    if cfg.rate >= 1.0:
        return table.append_column(WEIGHT_COLUMN, pa.array(np.ones(len(label), np.float32)))
    rng = np.random.default_rng(seed)
    keep = positive | (rng.random(len(label)) < cfg.rate)
    weight = np.where(positive, 1.0, 1.0 / cfg.rate).astype(np.float32)
    table = table.append_column(WEIGHT_COLUMN, pa.array(weight))
    return table.filter(pa.array(keep))


def with_unit_weight(table: pa.Table) -> pa.Table:
    return table.append_column(WEIGHT_COLUMN, pa.array(np.ones(table.num_rows, np.float32)))
