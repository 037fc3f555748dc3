"""Pure builders: a recplane resource (+ operator config) in, desired Kubernetes objects out.

Nothing here talks to the API server, so every object the operator creates can be
checked without a cluster (tests/operator/).
"""

from recplane.operator.builders.serving import ModelRef, ServingPlan, build_serving
from recplane.operator.builders.steps import StepRun, build_step
from recplane.operator.builders.training import TrainingRun, build_training, build_workers_service, worker_count

__all__ = [
    "ModelRef",
    "ServingPlan",
    "StepRun",
    "TrainingRun",
    "build_serving",
    "build_step",
    "build_training",
    "build_workers_service",
    "worker_count",
]
