"""Start the operator: settings, handlers, peering, probes, then kopf's event loop."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import random
import sys
from dataclasses import dataclass

import kopf

from recplane.operator import handlers
from recplane.operator.config import OperatorConfig
from recplane.operator.peering import PEERING_NAME


@dataclass(frozen=True)
class RunOptions:
    namespaces: tuple[str, ...] = ()
    """Namespaces to serve; empty = all namespaces."""
    peering: str | None = PEERING_NAME
    """kopf peering object for leader election; None = standalone (a single replica)."""
    priority: int | None = None
    """Peering priority; None = random, so that one of several replicas wins."""
    peering_lifetime: int = 60
    """Seconds a replica that stopped renewing its peering entry (crashed) still counts as alive."""
    metrics_port: int | None = 9090
    liveness_endpoint: str | None = "http://0.0.0.0:8080/healthz"
    kubeconfig: str | None = None
    log_format: str = "json"
    verbose: bool = False


# Handlers that only route an event to a reconcile; their "succeeded" lines would drown the log.
_ROUTING_HANDLERS = ("Handler 'child-", "Handler 'dependents'", "Handler 'poll'")
# kopf logs each retry of a waiting resource as an error; the wait is expected and its transition
# is already logged once (recplane.operator), so the retries go to DEBUG. API errors stay errors.
_WAITING = "Handler 'reconcile' failed temporarily: "


def _quiet_kopf(record: logging.LogRecord) -> bool:
    msg = str(record.msg)
    verbose = logging.getLogger("kopf.objects").isEnabledFor(logging.DEBUG)
    if record.levelno <= logging.INFO and msg.startswith(_ROUTING_HANDLERS):
        return verbose
    if msg.startswith(_WAITING) and not msg.startswith(_WAITING + handlers.API_ERROR):
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return verbose
    return True


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread its own heap arena, and freed memory stays in them: with a dozen
    reconcile threads that is most of the resident set. Two arenas cost nothing measurable here."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl): nothing to tune
        return
    m_arena_max = -8
    libc.mallopt(m_arena_max, arenas)


def run(config: OperatorConfig, options: RunOptions) -> None:
    """Block running the operator until SIGTERM/SIGINT."""
    _limit_malloc_arenas()
    kopf.configure(
        verbose=options.verbose,
        log_format={"json": kopf.LogFormat.JSON, "full": kopf.LogFormat.FULL}.get(
            options.log_format, kopf.LogFormat.PLAIN
        ),
        log_prefix=True,
    )
    logging.getLogger("kopf.objects").addFilter(_quiet_kopf)
    if not options.verbose:
        # Probes hit /healthz every few seconds: neither the access line nor the probe's own success is news.
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
        logging.getLogger("kopf.activities.probe").setLevel(logging.WARNING)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, config)
    memo = handlers.new_memo(config, options.metrics_port, options.kubeconfig, options.peering_lifetime)
    clusterwide = not options.namespaces
    if options.kubeconfig:
        # kopf's own connection and the reconcilers' client both read KUBECONFIG.
        os.environ["KUBECONFIG"] = options.kubeconfig
    asyncio.run(
        kopf.operator(
            registry=registry,
            memo=memo,
            clusterwide=clusterwide,
            namespaces=list(options.namespaces),
            standalone=options.peering is None,
            peering_name=options.peering,
            priority=options.priority if options.priority is not None else random.randint(1, 1_000_000),
            liveness_endpoint=options.liveness_endpoint,
        )
    )


__all__ = ["RunOptions", "run"]
