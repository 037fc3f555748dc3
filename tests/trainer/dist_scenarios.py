"""Scenarios run under torchrun by the distributed tests: `torchrun ... dist_scenarios.py SCENARIO STORE OUT`.

Rank 0 writes what it saw to OUT (JSON) for the test to check.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))

import pipeline_data as pdx

from recplane.store import LocalStore
from recplane.trainer.dist import process_group
from recplane.trainer.loop import Trainer
from recplane.trainer.step import train_job

torch.set_num_threads(1)
PLANS = ("table_wise", "column_wise", "table_column_wise", "data_parallel")
GPU_PLANS = ("row_wise", "table_wise", "data_parallel")


class InjectedCrash(RuntimeError):
    pass


def crash_at(step: int) -> Any:
    """Make every rank fail when it reaches `step` (as a killed pod group would), after earlier checkpoints."""
    original = Trainer._check_finite

    def failing(self: Trainer, loss: torch.Tensor, s: int) -> float:
        if s == step:
            raise InjectedCrash(f"injected crash at step {s}")
        return original(self, loss, s)

    Trainer._check_finite = failing  # type: ignore[method-assign]
    return original


def main(scenario: str, store_root: str, out: str) -> None:
    store = LocalStore(store_root)
    results: dict[str, Any] = {}
    backend = "nccl" if scenario == "gpu_plans" else "gloo"
    with process_group(backend) as ctx:
        if scenario in ("plans", "gpu_plans"):
            for plan in GPU_PLANS if scenario == "gpu_plans" else PLANS:
                # SGD keeps no per-row state, so where a table's rows and columns live changes nothing numerically.
                doc = pdx.trainjob(
                    f"plan-{plan.replace('_', '-')}",
                    distributed={"sharding": plan, "backend": backend},
                    resources={"gpu": 1 if backend == "nccl" else 0},
                    optimization={
                        "sparseOptimizer": "sgd",
                        "sparseLearningRate": 1.0,
                        "maxSteps": 3,
                        "denseOptimizer": "sgd",
                        "learningRate": 0.1,
                    },
                )
                m = train_job(pdx.resource(doc), store)
                results[plan] = {"version": m.version, "uri": m.uri, "metrics": m.status["metrics"]}
        elif scenario in ("resume", "crash"):
            doc = pdx.trainjob("resumable", optimization={"maxSteps": 12}, model={"dropout": 0.2, "batchNorm": True})
            original = crash_at(7)
            try:
                train_job(pdx.resource(doc), store)
            except InjectedCrash as e:
                results["crashed"] = str(e)
            finally:
                Trainer._check_finite = original  # type: ignore[method-assign]
            if scenario == "resume":
                resumed = train_job(pdx.resource(doc), store)
                reference_doc = {**doc, "metadata": {"name": "uninterrupted"}}
                reference = train_job(pdx.resource(reference_doc), store)
                results["resumed"] = {"uri": resumed.uri, "metrics": resumed.status["metrics"]}
                results["uninterrupted"] = {"uri": reference.uri, "metrics": reference.status["metrics"]}
        else:
            raise SystemExit(f"unknown scenario {scenario}")
        if ctx.is_main:
            Path(out).write_text(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:4])
