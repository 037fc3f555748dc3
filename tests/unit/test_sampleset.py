"""SampleSet: sources, strategies, versions and the step entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from recplane.api.sampleset import SampleSetSpec, SyntheticSource
from recplane.data.errors import DataError
from recplane.data.metrics import roc_auc
from recplane.data.samples import iter_record_batches, read_split
from recplane.data.steps import materialize_sampleset
from recplane.data.synthetic import generate
from recplane.store import LocalStore, Store

NS = "default"


def _spec(**spec: Any) -> SampleSetSpec:
    return SampleSetSpec.model_validate(spec)


def _synthetic(events: int = 20_000, **extra: Any) -> SampleSetSpec:
    return _spec(source={"format": "synthetic", "synthetic": {"events": events, "users": 2000, "items": 3000}}, **extra)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return LocalStore(tmp_path / "store")


def _events(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows)


def _write(table: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def _no_strategies(**extra: Any) -> dict[str, Any]:
    base = {
        "dedupe": {"enabled": False},
        "botFilter": {"enabled": False},
        "inactiveUsers": {"enabled": False},
        "label": {"dwellColumn": None},
    }
    base.update(extra)
    return base


def _nothing_stored(store: Store) -> bool:
    return store.names(NS, "sampleset") == [] or all(
        not store.versions(NS, "sampleset", n) for n in store.names(NS, "sampleset")
    )


# ---- the synthetic feed, end to end ----------------------------------------------------------
def test_status_reports_rows_after_each_strategy_in_order(store: Store) -> None:
    m = materialize_sampleset(_synthetic(), store, NS, "feed")
    rows = m.status["rows"]
    assert list(rows) == ["source", "dedupe", "botFilter", "inactiveUsers"]
    assert rows["source"] == 20_000
    assert rows["source"] > rows["dedupe"] > rows["botFilter"] > rows["inactiveUsers"] > 0
    assert m.status["trainRows"] + m.status["validationRows"] == rows["inactiveUsers"]
    assert m.status["botUsers"] >= 1
    assert 0.02 < m.status["positiveRate"] < 0.3
    assert m.status["version"] == m.version
    assert {c["name"] for c in m.status["schema"]} >= {"user_id", "item_id", "label", "weight", "recent_topics"}
    assert m.status["nullRates"]["network"] > 0


def test_bayes_auc_is_the_auc_of_the_true_probability_on_validation(store: Store) -> None:
    m = materialize_sampleset(_synthetic(), store, NS, "feed")
    validation = read_split(store, m, "validation")
    expected = roc_auc(validation["_p_label"].to_numpy(), validation["label"].to_numpy())
    assert m.status["bayesAuc"] == pytest.approx(expected, abs=1e-6)
    assert 0.6 < m.status["bayesAuc"] < 0.95


def test_roc_auc_matches_the_pairwise_definition() -> None:
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 10, 300).astype(float)  # many ties
    labels = rng.random(300) < 0.3
    pos, neg = scores[labels], scores[~labels]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
        len(pos) * len(neg)
    )
    assert roc_auc(scores, labels) == pytest.approx(pairwise)


def test_the_label_needs_the_minimum_dwell(store: Store) -> None:
    m = materialize_sampleset(_synthetic(label={"minDwellSeconds": 10}), store, NS, "feed")
    t = read_split(store, m, "train")
    label = t["label"].to_numpy() > 0
    assert (t["clicked"].to_numpy()[label] == 1).all()
    assert (t["dwell_s"].to_numpy()[label] >= 10).all()
    clicked_short = (t["clicked"].to_numpy() == 1) & (t["dwell_s"].to_numpy() < 10)
    assert clicked_short.any() and not label[clicked_short].any()


def test_validation_is_the_newest_time_range(store: Store) -> None:
    m = materialize_sampleset(_synthetic(split={"validationFraction": 0.2}), store, NS, "feed")
    train, validation = read_split(store, m, "train"), read_split(store, m, "validation")
    assert pc.max(train["ts"]).as_py() < pc.min(validation["ts"]).as_py()
    share = validation.num_rows / (train.num_rows + validation.num_rows)
    assert 0.15 < share < 0.25


def test_negative_sampling_keeps_positives_and_weights_negatives(store: Store) -> None:
    full = materialize_sampleset(_synthetic(), store, NS, "full")
    sampled = materialize_sampleset(_synthetic(negativeSampling={"rate": 0.25}), store, NS, "sampled")
    t_full, t = read_split(store, full, "train"), read_split(store, sampled, "train")
    label, weight = t["label"].to_numpy(), t["weight"].to_numpy()
    assert (weight[label > 0] == 1.0).all() and (weight[label == 0] == 4.0).all()
    assert (label > 0).sum() == (t_full["label"].to_numpy() > 0).sum()
    negatives_full = (t_full["label"].to_numpy() == 0).sum()
    assert 0.2 < (label == 0).sum() / negatives_full < 0.3
    # Weighted, the positive rate is unbiased; validation is never sampled.
    assert sampled.status["positiveRate"] == pytest.approx(full.status["positiveRate"], rel=0.1)
    assert sampled.status["validationRows"] == full.status["validationRows"]
    assert list(sampled.status["rows"])[-1] == "negativeSampling"


def test_a_rerun_returns_the_stored_version_without_writing(store: Store) -> None:
    first = materialize_sampleset(_synthetic(), store, NS, "feed")
    again = materialize_sampleset(_synthetic(), store, NS, "feed")
    assert again.version == first.version and again.created_at == first.created_at
    assert len(store.versions(NS, "sampleset", "feed")) == 1
    # Resources do not change the content, so not the version either.
    bigger = materialize_sampleset(_synthetic(resources={"cpu": "4"}), store, NS, "feed")
    assert bigger.version == first.version


def test_a_changed_spec_is_a_new_version_and_the_old_one_can_come_back(store: Store) -> None:
    a = materialize_sampleset(_synthetic(), store, NS, "feed")
    b = materialize_sampleset(_synthetic(split={"validationFraction": 0.3}), store, NS, "feed")
    assert a.version != b.version
    assert store.latest(NS, "sampleset", "feed").version == b.version  # type: ignore[union-attr]
    materialize_sampleset(_synthetic(), store, NS, "feed")
    assert store.latest(NS, "sampleset", "feed").version == a.version  # type: ignore[union-attr]


def test_ranks_read_equal_disjoint_shares_across_shards(store: Store) -> None:
    m = materialize_sampleset(_synthetic(shardRows=4000), store, NS, "feed")
    assert len([r for r in m.row_counts if r.startswith("train/")]) > 2
    total = m.status["trainRows"]
    seen = []
    for rank in range(3):
        batches = list(iter_record_batches(store, m, "train", 1000, rank=rank, world_size=3, columns=["ts", "user_id"]))
        assert all(b.num_rows == 1000 for b in batches[:-1])
        assert sum(b.num_rows for b in batches) == total // 3
        seen.append(pa.Table.from_batches(batches))
    everything = read_split(store, m, "train", columns=["ts", "user_id"])
    assert pa.concat_tables(seen).equals(everything.slice(0, 3 * (total // 3)))


def test_synthetic_batches_move_forward_in_time_and_drift() -> None:
    base = {"events": 5000, "users": 100, "items": 500}
    first = pa.Table.from_batches(generate(SyntheticSource(**base)))
    second = pa.Table.from_batches(generate(SyntheticSource(**base, batch=1)))
    drifted = pa.Table.from_batches(generate(SyntheticSource(**base, batch=1, drift=1.0)))
    assert pc.max(first["ts"]).as_py() < pc.min(second["ts"]).as_py()
    assert first.equals(pa.Table.from_batches(generate(SyntheticSource(**base))))  # same seed, same events
    assert not np.allclose(second["_p_click"].to_numpy(), drifted["_p_click"].to_numpy())


def test_criteo_shape_has_26_sparse_and_13_dense_columns() -> None:
    t = pa.Table.from_batches(generate(SyntheticSource(shape="criteo", events=5000)))
    assert [f"c{i}" for i in range(1, 27)] + [f"i{i}" for i in range(1, 14)] == [
        c for c in t.column_names if c[0] in "ci" and c[1:].isdigit()
    ]
    assert t.num_rows == 5000 and t["c3"].null_count > 0 and t["i1"].null_count > 0


# ---- strategies on hand-made events --------------------------------------------------------
def _file_spec(path: Path, fmt: str = "parquet", **extra: Any) -> SampleSetSpec:
    return _spec(source={"format": fmt, "uri": str(path)}, **_no_strategies(**extra))


def _clicks(n_users: int = 4, per_user: int = 10, start: int = 1_000) -> list[dict[str, Any]]:
    return [
        {"user_id": f"u{u}", "item_id": f"i{k}", "ts": start + 100 * k + u, "clicked": int(k % 3 == 0)}
        for u in range(n_users)
        for k in range(per_user)
    ]


def test_dedupe_keeps_the_first_impression(store: Store, tmp_path: Path) -> None:
    rows = _clicks()
    rows.append({"user_id": "u0", "item_id": "i1", "ts": 50_000, "clicked": 1})  # a later repeat of u0/i1
    rows.append({"user_id": "u1", "item_id": "i2", "ts": 50, "clicked": 0})  # an earlier one of u1/i2
    path = _write(_events(rows), tmp_path / "events.parquet")
    m = materialize_sampleset(_file_spec(path, dedupe={"enabled": True}), store, NS, "s")
    assert m.status["rows"] == {"source": 42, "dedupe": 40}
    t = pa.concat_tables([read_split(store, m, "train"), read_split(store, m, "validation")])
    kept = {(r["user_id"], r["item_id"]): r["ts"] for r in t.to_pylist()}
    assert kept[("u0", "i1")] == 1_100 and kept[("u1", "i2")] == 50


def test_the_bot_filter_drops_users_bursting_above_the_limit(store: Store, tmp_path: Path) -> None:
    rows = _clicks()
    rows += [{"user_id": "bot", "item_id": f"i{k}", "ts": 2_000 + k, "clicked": 1} for k in range(6)]  # 6 in 6 s
    rows += [{"user_id": "steady", "item_id": f"i{k}", "ts": 2_000 + 20 * k, "clicked": 0} for k in range(6)]
    path = _write(_events(rows), tmp_path / "events.parquet")
    spec = _file_spec(path, botFilter={"enabled": True, "maxEvents": 5, "windowSeconds": 60})
    m = materialize_sampleset(spec, store, NS, "s")
    users = set(read_split(store, m, "train")["user_id"].to_pylist()) | set(
        read_split(store, m, "validation")["user_id"].to_pylist()
    )
    assert "bot" not in users and "steady" in users
    assert m.status["rows"]["botFilter"] == m.status["rows"]["source"] - 6 and m.status["botUsers"] == 1


def test_the_inactive_user_filter_drops_users_with_few_events(store: Store, tmp_path: Path) -> None:
    rows = [*_clicks(), {"user_id": "rare", "item_id": "i1", "ts": 1234, "clicked": 1}]
    path = _write(_events(rows), tmp_path / "events.parquet")
    m = materialize_sampleset(_file_spec(path, inactiveUsers={"enabled": True, "minEvents": 2}), store, NS, "s")
    assert m.status["rows"] == {"source": 41, "inactiveUsers": 40} and m.status["inactiveUsers"] == 1


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_csv_and_jsonl_sources_give_the_same_samples_as_parquet(store: Store, tmp_path: Path, fmt: str) -> None:
    table = _events(_clicks())
    parquet = materialize_sampleset(_file_spec(_write(table, tmp_path / "p" / "e.parquet")), store, NS, "p")
    path = tmp_path / fmt / f"e.{fmt}"
    path.parent.mkdir()
    if fmt == "csv":
        pacsv.write_csv(table, path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
    other = materialize_sampleset(_file_spec(path.parent, fmt), store, NS, fmt)
    for split in ("train", "validation"):
        a = read_split(store, parquet, split).select(["user_id", "item_id", "ts", "label", "weight"])
        b = read_split(store, other, split).select(["user_id", "item_id", "ts", "label", "weight"])
        # Train rows are shuffled with a seed from the version, so compare as sets.
        assert sorted(a.to_pylist(), key=str) == sorted(b.to_pylist(), key=str)


def test_follow_mode_makes_a_version_of_only_the_new_files(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    _write(_events(_clicks(start=1_000)), folder / "part-1.parquet")
    spec = _spec(source={"format": "parquet", "uri": str(folder), "follow": True}, **_no_strategies())
    first = materialize_sampleset(spec, store, NS, "s")
    assert materialize_sampleset(spec, store, NS, "s").version == first.version  # nothing new
    _write(_events(_clicks(start=90_000)), folder / "part-2.parquet")
    second = materialize_sampleset(spec, store, NS, "s")
    assert second.version != first.version
    assert second.status["rows"]["source"] == 40
    assert pc.min(read_split(store, second, "train")["ts"]).as_py() >= 90_000


# ---- bad input: a clear error naming the field, and nothing stored ------------------------------
def test_a_missing_source_names_the_uri(store: Store, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"spec.source.uri: .*does-not-exist.* does not exist"):
        materialize_sampleset(_file_spec(tmp_path / "does-not-exist"), store, NS, "s")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"spec.source.uri: no parquet files match"):
        materialize_sampleset(_file_spec(tmp_path / "empty"), store, NS, "s")
    assert _nothing_stored(store)


def test_an_unreadable_file_is_named(store: Store, tmp_path: Path) -> None:
    bad = tmp_path / "events" / "broken.parquet"
    bad.parent.mkdir()
    bad.write_bytes(b"this is not parquet")
    with pytest.raises(DataError, match=r"spec.source.uri: cannot read .*broken.parquet as parquet"):
        materialize_sampleset(_file_spec(bad.parent), store, NS, "s")
    assert _nothing_stored(store)


def test_a_label_rule_on_a_missing_column_names_the_field(store: Store, tmp_path: Path) -> None:
    path = _write(_events(_clicks()), tmp_path / "events.parquet")
    with pytest.raises(DataError, match=r"spec.label.dwellColumn: column 'dwell_s' is not in the events"):
        materialize_sampleset(_file_spec(path, label={"dwellColumn": "dwell_s"}), store, NS, "s")
    with pytest.raises(DataError, match=r"spec.label.clickColumn: column 'click' is not in the events"):
        materialize_sampleset(_file_spec(path, label={"clickColumn": "click", "dwellColumn": None}), store, NS, "s")
    assert _nothing_stored(store)


def test_a_missing_user_column_names_the_field(store: Store, tmp_path: Path) -> None:
    path = _write(_events(_clicks()).drop_columns(["user_id"]), tmp_path / "events.parquet")
    with pytest.raises(DataError, match=r"spec.columns.user: column 'user_id' is not in the events"):
        materialize_sampleset(_file_spec(path, inactiveUsers={"enabled": True}), store, NS, "s")


def test_an_empty_result_after_filtering_names_the_strategy(store: Store, tmp_path: Path) -> None:
    path = _write(_events(_clicks()), tmp_path / "events.parquet")
    spec = _file_spec(path, inactiveUsers={"enabled": True, "minEvents": 1000})
    with pytest.raises(DataError, match=r"spec.inactiveUsers.minEvents: no events left after dropping users"):
        materialize_sampleset(spec, store, NS, "s")
    assert _nothing_stored(store)
    assert not any(p.is_file() for p in (store.root).rglob("*")) if isinstance(store, LocalStore) else True


# ---- the step entry point -----------------------------------------------------------------------
def _step(kind: str, spec_file: Path, store_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RECPLANE_STORE": str(store_dir)}
    return subprocess.run(
        [sys.executable, "-m", "recplane.cli.main", "step", kind, "--spec", str(spec_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_the_step_prints_the_manifest_last_and_progress_on_stderr(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "recplane.io/v1alpha1",
        "kind": "SampleSet",
        "metadata": {"name": "feed", "namespace": "team-a"},
        "spec": {"source": {"format": "synthetic", "synthetic": {"events": 5000, "users": 100}}},
    }
    spec_file = tmp_path / "ss.yaml"
    spec_file.write_text(yaml.safe_dump(doc))
    proc = _step("sampleset", spec_file, tmp_path / "store")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout.strip().splitlines()[-1])
    assert manifest["namespace"] == "team-a" and manifest["kind"] == "sampleset"
    assert manifest["status"]["trainRows"] > 0
    assert "rows/s" in proc.stderr
    assert LocalStore(tmp_path / "store").latest("team-a", "sampleset", "feed") is not None


def test_the_step_refuses_bad_input_with_one_clear_line(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "recplane.io/v1alpha1",
        "kind": "SampleSet",
        "metadata": {"name": "feed"},
        "spec": {"source": {"format": "csv", "uri": str(tmp_path / "nothing-here.csv")}},
    }
    spec_file = tmp_path / "ss.yaml"
    spec_file.write_text(yaml.safe_dump(doc))
    proc = _step("sampleset", spec_file, tmp_path / "store")
    assert proc.returncode == 1
    assert "spec.source.uri" in proc.stderr and "nothing-here.csv" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
