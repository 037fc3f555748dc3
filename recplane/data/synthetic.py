"""The built-in behaviour generator: feed impressions with a known click model.

Two shapes (`SyntheticSource.shape`):

* `feed`: users with Zipf-like activity (a few bots that burst), authors, posts with
  topics, and contexts (hour, device, network, position, referrer). The click
  probability comes from a latent model: user/item/author biases, a low-rank
  user x topic affinity, context effects, a position bias, a bonus when the post's
  topic is among the user's recent topics, and one non-linear interaction
  (affinity matters more for fresh posts). Some impressions repeat (dedupe has
  work) and bots burst (the bot filter has work).
* `criteo`: 26 categorical (`c1`..`c26`, 8-hex-digit strings) and 13 count columns
  (`i1`..`i13`) with nulls, a per-value additive click model and one pairwise
  interaction; generated fast for benchmarks.

Both shapes also carry `ts`, `user_id`, `item_id`, `clicked` and `dwell_s`, so the
default SampleSet strategies apply, and two hidden columns with the truth:
`_p_click` (P(click)) and `_dwell_scale` (the log-logistic dwell scale). Dwell
time given a click is log-logistic with shape `DWELL_SHAPE`, so
P(dwell >= m | click) = 1 / (1 + (m / scale) ** DWELL_SHAPE) exactly, and the
SampleSet can compute the true P(label) of every row for any label rule and
from it the Bayes-optimal AUC.

`batch` selects a later, non-overlapping time window of the same population;
with `drift` > 0 the users' tastes rotate a little further each batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from recplane.api.sampleset import SyntheticSource

DWELL_SHAPE = 2.5
EPOCH_START = 1_700_000_000  # 2023-11-14T22:13:20Z: the first batch's first second
P_CLICK_COLUMN = "_p_click"
DWELL_SCALE_COLUMN = "_dwell_scale"
HIDDEN_PREFIX = "_"

DEVICES = ("ios", "android", "web")
NETWORKS = ("wifi", "4g", "5g")
REFERRERS = ("feed", "push", "search", "profile", "share")
_LATENT = 8
_BOT_BURST = 400  # events per burst, inside _BOT_BURST_SECONDS: well over the default 300/60s
_BOT_BURST_SECONDS = 50
_BOT_SHARE = 0.02
_REPEAT_SHARE = 0.06


def feed_schema() -> pa.Schema:
    return pa.schema(
        [
            ("ts", pa.int64()),
            ("user_id", pa.string()),
            ("item_id", pa.string()),
            ("author_id", pa.string()),
            ("topic", pa.string()),
            ("hour", pa.int32()),
            ("device", pa.string()),
            ("network", pa.string()),
            ("position", pa.int32()),
            ("referrer", pa.string()),
            ("recent_topics", pa.list_(pa.string())),
            ("item_age_hours", pa.float32()),
            ("author_followers", pa.int64()),
            ("user_activity", pa.float32()),
            ("clicked", pa.int8()),
            ("dwell_s", pa.float32()),
            (P_CLICK_COLUMN, pa.float64()),
            (DWELL_SCALE_COLUMN, pa.float64()),
        ]
    )


CRITEO_SPARSE = tuple(f"c{i}" for i in range(1, 27))
CRITEO_DENSE = tuple(f"i{i}" for i in range(1, 14))
# Cardinalities in the spirit of the Criteo display-ads columns, capped by the event count.
_CRITEO_CARD = (
    1400, 550, 1_000_000, 200_000, 300, 24, 12_000, 600, 3, 90_000, 5_500, 800_000, 3_200,
    27, 15_000, 500_000, 10, 5_600, 2_200, 4, 700_000, 18, 15, 100_000, 100, 60_000,
)  # fmt: skip
_CRITEO_NULL = (
    0,
    0,
    0.03,
    0.03,
    0,
    0.1,
    0,
    0,
    0,
    0,
    0,
    0.03,
    0,
    0,
    0,
    0.03,
    0,
    0,
    0.4,
    0.4,
    0.03,
    0,
    0,
    0.03,
    0.4,
    0.4,
)
_CRITEO_DENSE_NULL = (0.45, 0, 0.2, 0.2, 0.02, 0.2, 0.04, 0, 0.04, 0.45, 0.04, 0.75, 0.2)


def criteo_schema() -> pa.Schema:
    fields = [("ts", pa.int64()), ("user_id", pa.string()), ("item_id", pa.string())]
    fields += [(c, pa.string()) for c in CRITEO_SPARSE]
    fields += [(c, pa.int64()) for c in CRITEO_DENSE]
    fields += [
        ("clicked", pa.int8()),
        ("dwell_s", pa.float32()),
        (P_CLICK_COLUMN, pa.float64()),
        (DWELL_SCALE_COLUMN, pa.float64()),
    ]
    return pa.schema(fields)


def schema(shape: str) -> pa.Schema:
    return feed_schema() if shape == "feed" else criteo_schema()


def p_label(p_click: np.ndarray, dwell_scale: np.ndarray | None, min_dwell: float) -> np.ndarray:
    """True P(clicked and dwell >= min_dwell) per row. dwell_scale None: the label is the click alone."""
    if dwell_scale is None or min_dwell <= 0:
        return p_click
    with np.errstate(divide="ignore", over="ignore"):
        survive = 1.0 / (1.0 + (min_dwell / dwell_scale) ** DWELL_SHAPE)
    return p_click * survive


def generate(spec: SyntheticSource, batch_rows: int = 262_144) -> Iterator[pa.RecordBatch]:
    """Stream `spec.events` rows as record batches (each batch a later time slice)."""
    if spec.shape == "criteo":
        yield from _CriteoGenerator(spec).batches(batch_rows)
    else:
        yield from _FeedGenerator(spec).batches(batch_rows)


def identity(spec: SyntheticSource) -> dict[str, object]:
    """What makes generated events what they are (part of a SampleSet version)."""
    return {"synthetic": spec.to_wire(), "generator": 1}


# ---------------------------------------------------------------------------------------
def _zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    rng.shuffle(w)
    return w / w.sum()


def _cdf(weights: np.ndarray) -> np.ndarray:
    c = np.cumsum(weights)
    c /= c[-1]
    return c


def _draw(cdf: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(cdf) - 1)


def _names(prefix: str, n: int) -> pa.Array:
    return pa.array([f"{prefix}{i}" for i in range(n)], pa.string())


def _take(names: pa.Array, idx: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    indices = pa.array(idx.astype(np.int32), mask=null)
    return names.take(indices)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _time_slices(spec: SyntheticSource, batch_rows: int) -> Iterator[tuple[int, int, int]]:
    """(rows, start_ts, end_ts) of each chunk; batch b starts where batch b-1 ended."""
    span = spec.days * 86_400
    start = EPOCH_START + spec.batch * span
    chunks = max(1, math.ceil(spec.events / batch_rows))
    for c in range(chunks):
        rows = spec.events // chunks + (1 if c < spec.events % chunks else 0)
        yield rows, start + span * c // chunks, start + span * (c + 1) // chunks


@dataclass
class _Clicks:
    clicked: np.ndarray
    dwell: np.ndarray


def _click_and_dwell(p_click: np.ndarray, scale: np.ndarray, rng: np.random.Generator) -> _Clicks:
    clicked = rng.random(len(p_click)) < p_click
    u = rng.random(len(p_click)).clip(1e-12, 1 - 1e-12)
    dwell = scale * (u / (1.0 - u)) ** (1.0 / DWELL_SHAPE)
    return _Clicks(clicked.astype(np.int8), np.where(clicked, dwell, 0.0).astype(np.float32))


class _FeedGenerator:
    """The feed population (fixed by `seed`) and its impressions."""

    def __init__(self, spec: SyntheticSource) -> None:
        self.spec = spec
        rng = np.random.default_rng([spec.seed, 0])
        u, n_items, n_authors, t = spec.users, spec.items, spec.authors, spec.topics
        # Users: activity, bias, taste (drifting by `batch`), primary device; a few bots.
        self.activity = _zipf_weights(u, 0.8, rng)
        self.n_bots = max(1, u // 200) if u >= 50 and spec.events >= 20 * _BOT_BURST else 0
        self.bots = rng.choice(u, self.n_bots, replace=False) if self.n_bots else np.zeros(0, np.int64)
        human = self.activity.copy()
        human[self.bots] = 0.0
        self.user_cdf = _cdf(human)
        self.user_bias = rng.normal(0.0, 0.35, u)
        taste = rng.normal(0.0, 1.0, (u, _LATENT))
        drift_dir = rng.normal(0.0, 1.0, (u, _LATENT))
        angle = spec.drift * spec.batch * math.pi / 2
        self.taste = taste * math.cos(angle) + drift_dir * math.sin(angle)
        self.primary_device = rng.choice(len(DEVICES), u, p=[0.45, 0.45, 0.10])
        self.events_per_day = (self.activity * spec.events / spec.days).astype(np.float32)
        # Topics, authors, items.
        self.topic_vec = rng.normal(0.0, 1.0 / math.sqrt(_LATENT), (t, _LATENT))
        author_pop = _zipf_weights(n_authors, 1.1, rng)
        self.author_bias = rng.normal(0.0, 0.3, n_authors)
        pop_z = (np.log(author_pop) - np.log(author_pop).mean()) / (np.log(author_pop).std() + 1e-9)
        self.author_followers = np.floor(np.exp(rng.normal(6.0 + 1.2 * pop_z, 0.8))).astype(np.int64)
        author_topic = rng.integers(0, t, n_authors)
        self.item_author = _draw(_cdf(author_pop), n_items, rng)
        own_topic = rng.random(n_items) < 0.6
        self.item_topic = np.where(own_topic, author_topic[self.item_author], rng.integers(0, t, n_items))
        self.item_bias = rng.normal(0.0, 0.4, n_items)
        self.item_cdf = _cdf(_zipf_weights(n_items, 0.9, rng) * np.exp(0.5 * self.item_bias))
        self.device_effect = np.array([0.1, 0.0, -0.25])
        self.network_effect = np.array([0.05, -0.05, 0.1])
        self.referrer_effect = np.array([0.0, 0.45, 0.3, 0.2, 0.6])
        self.user_names = _names("u", u)
        self.item_names = _names("i", n_items)
        self.author_names = _names("a", n_authors)
        self.topic_names = _names("t", t)

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        # Keep the [rows, topics] score matrix of recent topics small.
        batch_rows = max(1000, min(batch_rows, (1 << 23) // self.spec.topics))
        bot_rows_total = int(self.spec.events * _BOT_SHARE) if self.n_bots else 0
        slices = list(_time_slices(self.spec, batch_rows))
        for c, (rows, start, end) in enumerate(slices):
            rng = np.random.default_rng([self.spec.seed, 1, self.spec.batch, c])
            bot_rows = bot_rows_total * (c + 1) // len(slices) - bot_rows_total * c // len(slices)
            bursts = bot_rows // _BOT_BURST
            bot_rows = bursts * _BOT_BURST
            yield self._chunk(rows - bot_rows, bursts, start, end, rng)

    def _chunk(self, n: int, bursts: int, start: int, end: int, rng: np.random.Generator) -> pa.RecordBatch:
        s = self.spec
        user = _draw(self.user_cdf, n, rng)
        item = _draw(self.item_cdf, n, rng)
        # A feed rarely shows a post twice by chance: redraw accidental repeats a few times.
        for _ in range(3):
            _, first = np.unique(user * s.items + item, return_index=True)
            again = np.ones(n, bool)
            again[first] = False
            if not again.any():
                break
            item[again] = _draw(self.item_cdf, int(again.sum()), rng)
        ts = rng.integers(start, end, n)
        # Repeated impressions: the same post shown again to the same user minutes later.
        repeat = np.flatnonzero(rng.random(n) < _REPEAT_SHARE)
        if len(repeat):
            src = rng.integers(0, n, len(repeat))
            user[repeat], item[repeat] = user[src], item[src]
            ts[repeat] = ts[src] + rng.integers(5, 900, len(repeat))
        device = np.where(rng.random(n) < 0.85, self.primary_device[user], rng.integers(0, len(DEVICES), n))
        network = rng.choice(len(NETWORKS), n, p=[0.6, 0.3, 0.1])
        network = np.where(device == 2, 0, network)
        network_null = rng.random(n) < 0.02
        position = np.minimum(rng.geometric(0.15, n) - 1, 49)
        referrer = rng.choice(len(REFERRERS), n, p=[0.7, 0.08, 0.07, 0.1, 0.05])
        age = rng.exponential(36.0, n)
        hour = (ts // 3600) % 24
        author = self.item_author[item]
        topic = self.item_topic[item]
        # Recent topics: a Gumbel top-k draw from the user's topic preferences, k in 0..5.
        scores = self.taste[user] @ self.topic_vec.T
        width = min(5, s.topics)
        noisy = scores + rng.gumbel(size=scores.shape)
        top = np.argpartition(-noisy, width - 1, axis=1)[:, :width]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(noisy, top, axis=1), axis=1), axis=1)
        k = rng.integers(0, width + 1, n)
        keep = np.arange(width)[None, :] < k[:, None]
        recent_values = top[keep]
        recent_offsets = np.r_[0, np.cumsum(k)].astype(np.int32)
        in_recent = (keep & (top == topic[:, None])).any(axis=1)
        affinity = scores[np.arange(n), topic]
        fresh = np.exp(-age / 24.0)
        logit = (
            -2.3
            + self.user_bias[user]
            + self.item_bias[item]
            + self.author_bias[author]
            + 0.9 * affinity
            + self.device_effect[device]
            + np.where(network_null, 0.0, self.network_effect[network])
            + self.referrer_effect[referrer]
            + 0.25 * np.sin(2 * math.pi * (hour - 15) / 24.0)
            - 0.35 * np.log1p(position)
            + 0.4 * in_recent
            + 0.8 * np.tanh(affinity) * fresh
        )
        p_click = _sigmoid(logit)
        dwell_scale = np.exp(1.6 + 0.5 * affinity + 0.3 * self.item_bias[item])
        cols = {
            "ts": ts,
            "user": user,
            "item": item,
            "author": author,
            "topic": topic,
            "hour": hour,
            "device": device,
            "network": network,
            "network_null": network_null,
            "position": position,
            "referrer": referrer,
            "age": age,
            "p_click": p_click,
            "dwell_scale": dwell_scale,
            "recent_values": recent_values,
            "recent_offsets": recent_offsets,
        }
        if bursts:
            cols = _concat_cols(cols, self._bot_bursts(bursts, start, end, rng))
        clicks = _click_and_dwell(cols["p_click"], cols["dwell_scale"], rng)
        recent = pa.ListArray.from_arrays(
            pa.array(cols["recent_offsets"], pa.int32()), _take(self.topic_names, cols["recent_values"])
        )
        arrays = [
            pa.array(cols["ts"], pa.int64()),
            _take(self.user_names, cols["user"]),
            _take(self.item_names, cols["item"]),
            _take(self.author_names, cols["author"]),
            _take(self.topic_names, cols["topic"]),
            pa.array(cols["hour"].astype(np.int32)),
            _take(pa.array(DEVICES), cols["device"]),
            _take(pa.array(NETWORKS), cols["network"], cols["network_null"]),
            pa.array(cols["position"].astype(np.int32)),
            _take(pa.array(REFERRERS), cols["referrer"]),
            recent,
            pa.array(cols["age"].astype(np.float32)),
            pa.array(self.author_followers[cols["author"]]),
            pa.array(self.events_per_day[cols["user"]]),
            pa.array(clicks.clicked),
            pa.array(clicks.dwell),
            pa.array(cols["p_click"]),
            pa.array(cols["dwell_scale"]),
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=feed_schema())

    def _bot_bursts(self, bursts: int, start: int, end: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Bots: hundreds of impressions within a minute, random posts, clicks without reading."""
        n = bursts * _BOT_BURST
        burst_start = rng.integers(start, max(start + 1, end - _BOT_BURST_SECONDS), bursts)
        ts = np.repeat(burst_start, _BOT_BURST) + rng.integers(0, _BOT_BURST_SECONDS, n)
        item = rng.integers(0, self.spec.items, n)
        k = np.zeros(n, np.int64)
        return {
            "ts": ts,
            "user": np.repeat(rng.choice(self.bots, bursts), _BOT_BURST),
            "item": item,
            "author": self.item_author[item],
            "topic": self.item_topic[item],
            "hour": (ts // 3600) % 24,
            "device": np.full(n, 2),
            "network": np.zeros(n, np.int64),
            "network_null": np.zeros(n, bool),
            "position": rng.integers(0, 50, n),
            "referrer": np.zeros(n, np.int64),
            "age": rng.exponential(36.0, n),
            "p_click": np.full(n, 0.3),
            "dwell_scale": np.full(n, 0.5),
            "recent_values": np.zeros(0, np.int64),
            "recent_offsets": np.r_[0, np.cumsum(k)],
        }


def _concat_cols(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {k: np.concatenate([a[k], b[k]]) for k in a if k not in ("recent_values", "recent_offsets")}
    out["recent_values"] = np.concatenate([a["recent_values"], b["recent_values"]])
    out["recent_offsets"] = np.concatenate([a["recent_offsets"], b["recent_offsets"][1:] + a["recent_offsets"][-1]])
    return out


def _hex_names(n: int, rng: np.random.Generator) -> pa.Array:
    """n distinct 8-hex-digit strings, built without a Python loop per value."""
    values = _distinct_u32(n, rng)
    digits = (values[:, None] >> (np.arange(7, -1, -1, dtype=np.uint32) * 4)[None, :]) & 0xF
    chars = np.frombuffer(b"0123456789abcdef", np.uint8)[digits].reshape(-1)
    offsets = np.arange(0, 8 * n + 1, 8, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def _distinct_u32(n: int, rng: np.random.Generator) -> np.ndarray:
    values = np.unique(rng.integers(0, 1 << 32, int(n * 1.1) + 16, dtype=np.uint64)).astype(np.uint32)
    while len(values) < n:
        values = np.unique(np.r_[values, rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)])
    return rng.permutation(values)[:n]


class _CriteoGenerator:
    """Criteo-like anonymous columns with an additive per-value click model."""

    def __init__(self, spec: SyntheticSource) -> None:
        self.spec = spec
        rng = np.random.default_rng([spec.seed, 2])
        self.cards = [max(2, min(c, spec.events // 4)) for c in _CRITEO_CARD]
        self.names = [_hex_names(c, rng) for c in self.cards]
        sigmas = np.linspace(0.05, 0.5, len(self.cards))
        rng.shuffle(sigmas)
        self.effects = [rng.normal(0.0, s, c) for s, c in zip(sigmas, self.cards, strict=True)]
        self.pair = [rng.normal(0.0, 0.5, (c, 4)) for c in self.cards[:2]]
        self.dense_scale = rng.uniform(0.5, 3.0, len(CRITEO_DENSE))
        self.dense_beta = rng.normal(0.0, 0.12, len(CRITEO_DENSE))
        self.user_cdf = _cdf(_zipf_weights(spec.users, 1.0, rng))
        self.item_cdf = _cdf(_zipf_weights(spec.items, 0.9, rng))
        self.user_names = _names("u", spec.users)
        self.item_names = _names("i", spec.items)

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        for c, (rows, start, end) in enumerate(_time_slices(self.spec, batch_rows)):
            rng = np.random.default_rng([self.spec.seed, 3, self.spec.batch, c])
            yield self._chunk(rows, start, end, rng)

    def _chunk(self, n: int, start: int, end: int, rng: np.random.Generator) -> pa.RecordBatch:
        logit = np.full(n, -1.6)
        arrays: list[pa.Array] = [
            pa.array(np.sort(rng.integers(start, end, n))),
            _take(self.user_names, _draw(self.user_cdf, n, rng)),
            _take(self.item_names, _draw(self.item_cdf, n, rng)),
        ]
        sparse_idx = []
        for j, card in enumerate(self.cards):
            # Skewed draw: small indices (frequent values) dominate, like real ids.
            u = rng.random(n)
            idx = np.minimum((card * (u * u * np.sqrt(u))).astype(np.int64), card - 1)
            null = rng.random(n) < _CRITEO_NULL[j] if _CRITEO_NULL[j] else None
            logit += np.where(null, 0.0, self.effects[j][idx]) if null is not None else self.effects[j][idx]
            sparse_idx.append(idx)
            arrays.append(_take(self.names[j], idx, null))
        logit += 0.5 * (self.pair[0][sparse_idx[0]] * self.pair[1][sparse_idx[1]]).sum(axis=1)
        for j in range(len(CRITEO_DENSE)):
            counts = np.floor(np.exp(rng.normal(1.0, self.dense_scale[j] * 0.6, n)) - 1.0).astype(np.int64)
            counts = np.maximum(counts, -1)
            null = rng.random(n) < _CRITEO_DENSE_NULL[j] if _CRITEO_DENSE_NULL[j] else None
            z = np.log1p(np.maximum(counts, 0)) - 1.0
            logit += self.dense_beta[j] * (np.where(null, 0.0, z) if null is not None else z)
            arrays.append(pa.array(counts, pa.int64(), mask=null))
        p_click = _sigmoid(logit)
        dwell_scale = np.exp(1.6 + 0.3 * self.effects[0][sparse_idx[0]])
        clicks = _click_and_dwell(p_click, dwell_scale, rng)
        arrays += [pa.array(clicks.clicked), pa.array(clicks.dwell), pa.array(p_click), pa.array(dwell_scale)]
        return pa.RecordBatch.from_arrays(arrays, schema=criteo_schema())
