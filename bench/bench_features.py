"""Benchmark: materialise a FeatureSet over synthetic Criteo-shaped events (26 sparse + 13 dense columns).

    .venv/bin/python bench/bench_features.py [--rows 5000000]

Prints, for recplane and for a straightforward pandas implementation of the same
transforms measured in the same run:

* fit: statistics and vocabularies over the training rows (the FeatureSet step);
* transform: every training row turned into model inputs (ids + dense matrix);
* peak RSS of the process that did the work (each phase runs in a fresh process).

recplane's fit also runs over a fifth of the rows, to show its peak memory is
bounded by batches and vocabularies, not by the row count.

The events are written straight from the generator into a SampleSet version
(no strategies), so only the feature work is measured. Nothing is asserted:
this prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from recplane.api.featureset import FeatureSetSpec
from recplane.api.sampleset import SyntheticSource
from recplane.data.catalogs import criteo_features
from recplane.data.samples import write_shard
from recplane.data.synthetic import CRITEO_DENSE, CRITEO_SPARSE, generate
from recplane.store import LocalStore, Manifest, content_version

NS = "bench"
MIN_COUNT = 2
SHARD_ROWS = 1_000_000


def _peak_rss_mib() -> float:
    """Peak resident memory of this process. VmHWM starts afresh at exec; ru_maxrss would carry the
    parent's peak over on Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_samples(store: LocalStore, name: str, rows: int, population_rows: int) -> Manifest:
    """A SampleSet version of `rows` Criteo-shaped training rows (plus a small validation split), drawn
    from the population generated for `population_rows` events: the same value distributions and
    cardinalities whatever `rows` is, so runs of different sizes differ only in row count."""
    validation_rows = max(1000, rows // 50)
    spec = SyntheticSource(shape="criteo", events=population_rows + validation_rows, seed=7)
    version = content_version("bench-samples", spec.to_wire(), rows)
    existing = store.manifest(NS, "sampleset", name, version)
    if existing is not None:
        return existing
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp)
        counts: dict[str, int] = {}
        pending: list[pa.Table] = []
        written = 0

        def flush(split: str) -> None:
            if not pending:
                return
            part = pa.concat_tables(pending).combine_chunks()
            rel = f"{split}/part-{sum(1 for r in counts if r.startswith(split)):05d}.parquet"
            (staging / split).mkdir(exist_ok=True)
            write_shard(part, staging / rel)
            counts[rel] = part.num_rows
            pending.clear()

        for batch in generate(spec, batch_rows=250_000):
            t = pa.Table.from_batches([batch])
            t = t.append_column("label", t["clicked"].cast(pa.float32()))
            t = t.append_column("weight", pa.array(np.ones(t.num_rows, np.float32)))
            while t.num_rows:
                split = "train" if written < rows else "validation"
                room = SHARD_ROWS - sum(p.num_rows for p in pending)
                take = min(t.num_rows, room, rows - written if split == "train" else rows + validation_rows - written)
                pending.append(t.slice(0, take))
                t = t.slice(take)
                written += take
                if take == room or written == rows:
                    flush(split)
                if written == rows + validation_rows:
                    break
            if written == rows + validation_rows:
                break
        flush("validation")
        counts["train"] = rows
        counts["validation"] = written - rows
        manifest = Manifest(kind="sampleset", namespace=NS, name=name, version=version, row_counts=counts)
        return store.publish(staging, manifest)


# ---- phases (each in its own process) ---------------------------------------------------------
def phase_recplane_fit(store_dir: str, samples: str) -> dict[str, Any]:
    from recplane.data.steps import materialize_featureset

    store = LocalStore(store_dir)
    m = store.latest(NS, "sampleset", samples)
    assert m is not None
    spec = FeatureSetSpec(sample_set_ref={"name": samples}, features=criteo_features(min_count=MIN_COUNT))
    store.delete_all(NS, "featureset", f"{samples}-features")  # measure the work, not the idempotent re-run
    start, cpu = time.perf_counter(), time.process_time()
    fs = materialize_featureset(spec, store, NS, f"{samples}-features")
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    vocab = sum(1 for f in fs.status["features"] if "oovRate" in f)
    return {
        "rows": m.row_counts["train"],
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_mib": _peak_rss_mib(),
        "vocabularies": vocab,
    }


def phase_recplane_transform(store_dir: str, samples: str) -> dict[str, Any]:
    from recplane.data.features import FeatureProcessor
    from recplane.data.samples import iter_record_batches

    store = LocalStore(store_dir)
    m = store.latest(NS, "sampleset", samples)
    fs = store.latest(NS, "featureset", f"{samples}-features")
    assert m is not None and fs is not None
    processor = FeatureProcessor.from_store(store, fs)
    columns = [*processor.input_columns, "label", "weight"]
    start, cpu = time.perf_counter(), time.process_time()
    rows = ids = 0
    batches = iter_record_batches(store, m, "train", 131_072, columns=columns, dictionary_strings=True, exact=False)
    for batch in batches:
        out = processor.transform(batch)
        rows += out.batch_size
        ids += len(out.values)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"rows": rows, "seconds": seconds, "cpu_seconds": cpu, "peak_rss_mib": _peak_rss_mib(), "ids": ids}


def _pandas_frame(store_dir: str, samples: str) -> Any:
    import pandas as pd

    store = LocalStore(store_dir)
    m = store.latest(NS, "sampleset", samples)
    assert m is not None
    files = sorted(rel for rel in m.row_counts if rel.startswith("train/"))
    columns = [*CRITEO_SPARSE, *CRITEO_DENSE]
    return pd.concat([pd.read_parquet(store.fetch(m, rel), columns=columns) for rel in files], ignore_index=True)


def phase_pandas(store_dir: str, samples: str) -> dict[str, Any]:
    """The same fit and transform written the way a pandas user would: one column at a time."""
    import pandas as pd

    start, cpu = time.perf_counter(), time.process_time()
    df = _pandas_frame(store_dir, samples)
    read_s = time.perf_counter() - start
    # Fit: value counts -> vocabulary (min count, most frequent first); null rates; dense mean/std.
    vocab, stats = {}, {}
    for c in CRITEO_SPARSE:
        counts = df[c].value_counts()
        kept = counts[counts >= MIN_COUNT]
        vocab[c] = pd.Series(np.arange(2, len(kept) + 2), index=kept.index)
        stats[c] = {"cardinality": int(df[c].nunique()), "nullRate": float(df[c].isna().mean())}
    for c in CRITEO_DENSE:
        stats[c] = {
            "mean": float(df[c].mean()),
            "std": float(df[c].std(ddof=0)),
            "nullRate": float(df[c].isna().mean()),
        }
    fit_s = time.perf_counter() - start
    # Transform: ids (missing 0, OOV 1) and the log1p dense matrix.
    ids = {}
    for c in CRITEO_SPARSE:
        mapped = df[c].map(vocab[c]).fillna(1).astype("int64")
        mapped[df[c].isna()] = 0
        ids[c] = mapped.to_numpy()
    dense = np.column_stack(
        [(np.sign(df[c]) * np.log1p(df[c].abs())).fillna(0.0).to_numpy(np.float32) for c in CRITEO_DENSE]
    )
    total_s, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "cpu_seconds": cpu,
        "rows": len(df),
        "read_seconds": read_s,
        "fit_seconds": fit_s,
        "transform_seconds": total_s - fit_s,
        "seconds": total_s,
        "peak_rss_mib": _peak_rss_mib(),
        "dense_shape": list(dense.shape),
        "ids": sum(len(v) for v in ids.values()),
    }


PHASES = {"fit": phase_recplane_fit, "transform": phase_recplane_transform, "pandas": phase_pandas}


def _warm_up() -> None:
    # pyarrow imports pandas (when installed) on its first conversion from Python objects;
    # pay that one-time import before the clock starts, in every phase alike.
    pa.array(np.zeros(1))


def _run_phase(phase: str, store_dir: str, samples: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--phase", phase, "--store", store_dir, "--samples", samples],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"phase {phase} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000_000, help="training rows (default 5,000,000)")
    parser.add_argument("--store", help="store directory to reuse between runs (default: a temporary one)")
    parser.add_argument("--skip-pandas", action="store_true", help="measure recplane only")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--samples", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        _warm_up()
        print(json.dumps(PHASES[args.phase](args.store, args.samples)))
        return

    with tempfile.TemporaryDirectory(prefix="recplane-bench-") as tmp:
        store_dir = args.store or tmp
        store = LocalStore(store_dir)
        print(f"generating {args.rows:,} criteo-shaped events (26 sparse + 13 dense) ...", file=sys.stderr)
        small = max(100_000, args.rows // 5)
        write_samples(store, "criteo-small", small, args.rows)
        write_samples(store, "criteo", args.rows, args.rows)
        load_before = f"{os.getloadavg()[0]:.1f}"
        results = {
            "recplane fit (1/5 rows)": _run_phase("fit", store_dir, "criteo-small"),
            "recplane fit": _run_phase("fit", store_dir, "criteo"),
            "recplane transform": _run_phase("transform", store_dir, "criteo"),
        }
        if not args.skip_pandas:
            results["pandas fit+transform"] = _run_phase("pandas", store_dir, "criteo")
    print(f"load average during the run: {load_before} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'':28} {'rows':>11} {'wall s':>8} {'rows/s':>11} {'CPU s':>8} {'rows/CPU-s':>11} {'peak RSS MiB':>13}")
    for label, r in results.items():
        rate, cpu_rate = r["rows"] / r["seconds"], r["rows"] / r["cpu_seconds"]
        print(
            f"{label:28} {r['rows']:>11,} {r['seconds']:>8.2f} {rate:>11,.0f} {r['cpu_seconds']:>8.2f} "
            f"{cpu_rate:>11,.0f} {r['peak_rss_mib']:>13,.0f}"
        )
    if "pandas fit+transform" in results:
        p = results["pandas fit+transform"]
        ours = results["recplane fit"]["seconds"] + results["recplane transform"]["seconds"]
        print(
            f"\npandas: read {p['read_seconds']:.2f}s, fit {p['fit_seconds'] - p['read_seconds']:.2f}s, "
            f"transform {p['transform_seconds']:.2f}s"
        )
        ours_cpu = results["recplane fit"]["cpu_seconds"] + results["recplane transform"]["cpu_seconds"]
        print(
            f"recplane fit+transform vs pandas fit+transform: {p['seconds'] / ours:.1f}x faster "
            f"(wall), {p['cpu_seconds'] / ours_cpu:.1f}x less CPU"
        )
        print(f"recplane fit vs pandas read+fit: {p['fit_seconds'] / results['recplane fit']['seconds']:.1f}x faster")


if __name__ == "__main__":
    main()
