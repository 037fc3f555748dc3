"""Benchmark: recplane's DeepFM against DeepCTR-Torch's DeepFM on the same synthetic Criteo-shaped rows.

    .venv/bin/python bench/bench_train_deepctr.py [--events 2222223] [--workdir DIR]

Both train one epoch of DeepFM (26 sparse + 13 dense features, embedding dim 16,
MLP 400-400-400, batch 4096) on the same training rows and are scored on the same
validation rows:

* recplane: `recplane step train` under torchrun, 2 processes (gloo), one thread each,
  TorchRec sharded tables with the fused row-wise Adagrad, Adam for the dense part;
  rows are streamed from the store's Parquet shards and transformed batch by batch
  inside the measured time.
* DeepCTR-Torch: its DeepFM with the same sizes (L2 terms off, as recplane has none),
  Adam, one process with 2 threads, on the same ids already transformed in memory
  (its input preparation is not timed).

Goal: recplane at least 3x the peer's samples/s, validation AUC no lower than the
peer's minus 0.001. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from recplane.api.featureset import FeatureSetSpec
from recplane.api.sampleset import SampleSetSpec
from recplane.data.catalogs import criteo_features
from recplane.data.features import FeatureProcessor
from recplane.data.metrics import roc_auc
from recplane.data.samples import read_split
from recplane.data.steps import materialize_featureset, materialize_sampleset
from recplane.store import LocalStore, Manifest
from recplane.trainer.launch import run_torchrun

NS = "default"
EMBEDDING_DIM = 16
LAYERS = [400, 400, 400]
BATCH = 4096


def criteo_store(root: Path, events: int, seed: int = 11) -> tuple[LocalStore, Manifest, Manifest]:
    """Criteo-shaped events with no filtering strategies, 10% time-split validation (idempotent)."""
    store = LocalStore(root)
    spec = SampleSetSpec.model_validate(
        {
            "source": {"format": "synthetic", "synthetic": {"shape": "criteo", "events": events, "seed": seed}},
            "dedupe": {"enabled": False},
            "botFilter": {"enabled": False},
            "inactiveUsers": {"enabled": False},
            "split": {"validationFraction": 0.1},
        }
    )
    samples = materialize_sampleset(spec, store, NS, "criteo")
    features = materialize_featureset(
        FeatureSetSpec(sample_set_ref={"name": "criteo"}, features=criteo_features()), store, NS, "criteo-features"
    )
    return store, samples, features


def trainjob(name: str, precision: str = "fp32", nproc: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "recplane.io/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "featureSetRef": {"name": "criteo-features"},
            "model": {"type": "deepfm", "embeddingDim": EMBEDDING_DIM, "denseLayers": LAYERS},
            "optimization": {"batchSize": BATCH, "epochs": 1, "embeddingPrecision": precision},
            "distributed": {"workers": 1, "procsPerWorker": nproc, "sharding": "auto"},
            "checkpoint": {"everySteps": 100_000},
        },
    }


def run_recplane(store: LocalStore, workdir: Path, doc: dict[str, Any], nproc: int = 2) -> dict[str, Any]:
    spec = workdir / f"{doc['metadata']['name']}.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    started = time.perf_counter()
    manifest = run_torchrun(spec, nproc=nproc, env={"RECPLANE_STORE": str(store.root)}, log_path=workdir / "train.log")
    metrics = json.loads(store.fetch(manifest, "metrics.json").read_text())
    return {"manifest": manifest, "metrics": metrics, "wallSeconds": time.perf_counter() - started}


def _arrays(processor: FeatureProcessor, store: LocalStore, samples: Manifest, split: str) -> tuple[dict, np.ndarray]:
    columns = [*processor.input_columns, "label"]
    batch = processor.transform(read_split(store, samples, split, columns=columns))
    x: dict[str, np.ndarray] = {f.name: batch.ids(f.name)[0] for f in processor.sparse_features}
    for j, name in enumerate(processor.dense_features):
        x[name] = batch.dense[:, j]
    assert batch.labels is not None
    return x, batch.labels


def run_deepctr(store: LocalStore, samples: Manifest, features: Manifest, threads: int = 2) -> dict[str, Any]:
    from deepctr_torch.inputs import DenseFeat, SparseFeat
    from deepctr_torch.models import DeepFM

    torch.set_num_threads(threads)
    processor = FeatureProcessor.from_store(store, features)
    x_train, y_train = _arrays(processor, store, samples, "train")
    x_val, y_val = _arrays(processor, store, samples, "validation")
    columns = [
        SparseFeat(f.name, vocabulary_size=f.num_embeddings, embedding_dim=EMBEDDING_DIM)
        for f in processor.sparse_features
    ] + [DenseFeat(name, 1) for name in processor.dense_features]
    model = DeepFM(
        columns,
        columns,
        task="binary",
        dnn_hidden_units=tuple(LAYERS),
        l2_reg_linear=0.0,
        l2_reg_embedding=0.0,
        l2_reg_dnn=0.0,
        device="cpu",
        seed=0,
    )
    model.compile("adam", "binary_crossentropy")
    started = time.perf_counter()
    model.fit(x_train, y_train, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
    seconds = time.perf_counter() - started
    scores = model.predict(x_val, batch_size=BATCH).reshape(-1)
    return {
        "samplesPerSecond": len(y_train) / seconds,
        "trainSeconds": seconds,
        "auc": roc_auc(scores, y_val),
        "trainRows": len(y_train),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2_222_223, help="generated events (90%% become training rows)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the store here (reused when run again)")
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="recplane-bench-deepctr-"))
    workdir.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    store, samples, features = criteo_store(workdir / "store", args.events)
    print(
        f"data: {samples.status['trainRows']:,} training rows, {samples.status['validationRows']:,} validation rows "
        f"(prepared in {time.perf_counter() - t0:.0f}s)",
        flush=True,
    )

    ours = run_recplane(store, workdir, trainjob("criteo-deepfm", nproc=args.nproc), args.nproc)
    m = ours["metrics"]
    print(
        f"recplane: {m['samplesPerSecond']:,.0f} samples/s, AUC {m['auc']:.4f}, logloss {m['logloss']:.4f} "
        f"({m['trainSeconds']:.0f}s training, {ours['wallSeconds']:.0f}s with start-up, evaluation and export)",
        flush=True,
    )
    peer = run_deepctr(store, samples, features)
    print(
        f"DeepCTR-Torch: {peer['samplesPerSecond']:,.0f} samples/s, AUC {peer['auc']:.4f} "
        f"({peer['trainSeconds']:.0f}s training)",
        flush=True,
    )
    speedup = m["samplesPerSecond"] / peer["samplesPerSecond"]
    auc_delta = m["auc"] - peer["auc"]
    print()
    print("| | samples/s | validation AUC |")
    print("|---|---:|---:|")
    print(f"| recplane DeepFM ({args.nproc} processes, gloo) | {m['samplesPerSecond']:,.0f} | {m['auc']:.4f} |")
    print(f"| DeepCTR-Torch DeepFM (1 process, 2 threads) | {peer['samplesPerSecond']:,.0f} | {peer['auc']:.4f} |")
    print()
    print(f"speed-up {speedup:.2f}x (goal >= 3x): {'met' if speedup >= 3 else 'NOT met'}")
    print(f"AUC difference {auc_delta:+.4f} (goal >= -0.001): {'met' if auc_delta >= -0.001 else 'NOT met'}")
    print(json.dumps({"recplane": m, "deepctr": peer, "speedup": speedup, "aucDelta": auc_delta}, default=str))


if __name__ == "__main__":
    main()
