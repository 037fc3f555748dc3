"""Operator settings: images, the store Secret, back-off and history limits.

One frozen value built once at start-up (from CLI options and the environment)
and handed to every builder and controller, so builders stay pure functions of
(resource, config).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version


def _package_version() -> str:
    try:
        return version("recplane")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0"


VERSION = _package_version()

# Keys the store Secret may hold; each becomes the environment variable of the same
# name in every pod (see recplane.store.open_store). Only RECPLANE_STORE is required.
STORE_ENV_KEYS = (
    "RECPLANE_STORE",
    "RECPLANE_S3_ENDPOINT",
    "RECPLANE_S3_ACCESS_KEY",
    "RECPLANE_S3_SECRET_KEY",
    "RECPLANE_S3_SECURE",
)
REQUIRED_STORE_KEYS = ("RECPLANE_STORE",)


@dataclass(frozen=True)
class OperatorConfig:
    """Everything the builders need besides the resource itself."""

    trainer_image: str = f"recplane/trainer:{VERSION}"
    """Runs the data steps and the torchrun workers unless a TrainJob names its own image."""
    serving_image: str = f"recplane/serving:{VERSION}"
    image_pull_policy: str = "IfNotPresent"
    store_secret: str = "recplane-store"
    """Secret in each workload namespace whose keys are STORE_ENV_KEYS."""
    step_retries: int = 2
    """Job backoffLimit of the SampleSet/FeatureSet steps."""
    restart_backoff_seconds: float = 10.0
    """First delay before a TrainJob's worker group restarts; doubles per restart."""
    max_backoff_seconds: float = 300.0
    job_history: int = 2
    """Finished Jobs of superseded runs kept per resource (for their logs)."""
    master_port: int = 29500
    serving_port: int = 3000
    poll_seconds: float = 15.0
    """How often a resource is reconciled while no event announces its next change: a continuous
    TrainJob (new versions and metrics from rank 0), a restart back-off, a missing store Secret."""
    workers: int = 4
    """Reconciles that run at the same time, for event-driven reconciles and for kopf's change handlers
    each. More do not reconcile a burst sooner once the API server is busy: they wait in its queues
    instead of the operator's, and every reconcile takes longer (200 TrainJobs and 200
    ModelDeployments at once on two cores: p99 1.0 s with 4, 3.5 s with 8, 4.7 s with 16, all
    done in 45-59 s each time; BENCHMARKS.md)."""
    extra_labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> OperatorConfig:
        """Defaults, then RECPLANE_* environment variables, then explicit overrides (CLI options)."""
        env = dict(os.environ if env is None else env)
        values: dict[str, object] = {}
        for key, name, conv in (
            ("RECPLANE_TRAINER_IMAGE", "trainer_image", str),
            ("RECPLANE_SERVING_IMAGE", "serving_image", str),
            ("RECPLANE_IMAGE_PULL_POLICY", "image_pull_policy", str),
            ("RECPLANE_STORE_SECRET", "store_secret", str),
            ("RECPLANE_STEP_RETRIES", "step_retries", int),
            ("RECPLANE_RESTART_BACKOFF_SECONDS", "restart_backoff_seconds", float),
            ("RECPLANE_POLL_SECONDS", "poll_seconds", float),
            ("RECPLANE_OPERATOR_WORKERS", "workers", int),
        ):
            if env.get(key):
                try:
                    values[name] = conv(env[key])
                except ValueError:
                    raise ValueError(f"{key}={env[key]!r} is not a valid {conv.__name__}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def backoff(self, attempt: int, base: float | None = None) -> float:
        """Exponential back-off: base, 2*base, 4*base, ... capped at max_backoff_seconds."""
        first = self.restart_backoff_seconds if base is None else base
        return float(min(first * (2 ** max(attempt, 0)), self.max_backoff_seconds))
