"""Benchmark: embedding tables stored in fp32 vs fp16 (and the int8 serving variant): bytes and AUC.

    .venv/bin/python bench/bench_embedding_precision.py [--events 2222223] [--workdir DIR]

Trains recplane's DeepFM of `bench_train_deepctr.py` (same Criteo-shaped data, dim 16,
MLP 400-400-400, batch 4096, one epoch, 2 processes) twice: embedding storage fp32 and
fp16 (FBGEMM keeps fp16 rows, the optimiser state in fp32). Each version also exports
a row-wise int8 copy for serving. Pass the same --workdir as the DeepCTR benchmark to
reuse its data and its fp32 run (versions are content-addressed, so it is not trained
again). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench_train_deepctr import criteo_store, run_recplane, trainjob


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2_222_223)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the store here (reused when run again)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="recplane-bench-precision-"))
    workdir.mkdir(parents=True, exist_ok=True)
    store, samples, _ = criteo_store(workdir / "store", args.events)
    print(f"data: {samples.status['trainRows']:,} training rows", flush=True)

    rows = []
    for precision in ("fp32", "fp16"):
        name = "criteo-deepfm" if precision == "fp32" else "criteo-deepfm-fp16"
        run = run_recplane(store, workdir, trainjob(name, precision))
        m = run["metrics"]
        size = m["embeddingBytes"]
        rows.append((precision, size["trained"], m["auc"], m["logloss"], m["samplesPerSecond"]))
        if precision == "fp32":
            rows.append(("int8 (serving copy)", size["int8"], m["aucInt8"], m["loglossInt8"], None))
        print(f"{precision}: {size['trained']:,} bytes of embedding tables, AUC {m['auc']:.4f}", flush=True)

    base = rows[0][1]
    print()
    print("| embedding storage | table bytes | vs fp32 | validation AUC | logloss | training samples/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, size, auc, logloss, sps in rows:
        speed = f"{sps:,.0f}" if sps else "–"
        print(f"| {label} | {size:,} | {size / base:.2f}x | {auc:.4f} | {logloss:.4f} | {speed} |")
    print(
        json.dumps(
            [dict(zip(("storage", "bytes", "auc", "logloss", "samplesPerSecond"), r, strict=True)) for r in rows]
        )
    )


if __name__ == "__main__":
    main()
