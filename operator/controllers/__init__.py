"""Controllers: for one resource, converge its children and compute its status.

Each is a function (context, resource, retry) -> (verdict, status fields); the
shared `base.reconcile` writes the status and posts an Event on each transition.
"""

from recplane.operator.controllers.base import Context, Controller, reconcile
from recplane.operator.controllers.serving import reconcile_serving
from recplane.operator.controllers.steps import reconcile_step
from recplane.operator.controllers.training import reconcile_training

CONTROLLERS: dict[str, Controller] = {
    "SampleSet": reconcile_step,
    "FeatureSet": reconcile_step,
    "TrainJob": reconcile_training,
    "ModelDeployment": reconcile_serving,
}

__all__ = ["CONTROLLERS", "Context", "Controller", "reconcile"]
