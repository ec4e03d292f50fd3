"""Which orchestrator Claworc uses: the persisted choice, or detection (Kubernetes, then Docker).

Skeleton: the detection itself is being built (issue 5). The public API below is what the rest of
the code uses and stays stable:
  get_orchestrator() -> Orchestrator     (raises NoBackendAvailable)
  current_backend_name() -> "docker" | "kubernetes" | "none"
  override(orchestrator)                 context manager for tests (process-local)
"""

from __future__ import annotations

import contextlib
import threading

from .base import Orchestrator, TransientError

SETTING_KEY = "orchestrator_backend"
_local = threading.local()


class NoBackendAvailable(TransientError):
    """Neither Kubernetes nor Docker answered."""


@contextlib.contextmanager
def override(orchestrator: Orchestrator):
    previous = getattr(_local, "override", None)
    _local.override = orchestrator
    try:
        yield orchestrator
    finally:
        _local.override = previous


def get_orchestrator() -> Orchestrator:
    forced = getattr(_local, "override", None)
    if forced is not None:
        return forced
    raise NoBackendAvailable("backend detection is not built yet")


def current_backend_name() -> str:
    forced = getattr(_local, "override", None)
    if forced is not None:
        return forced.backend_name
    return "none"
