"""Where the dashboard reaches an instance's noVNC: asks the orchestrator in use, briefly cached.

A page of noVNC is some thirty files plus a websocket: without the cache a Docker backend on a
shared network would inspect the container for each of them.
"""

from __future__ import annotations

import threading
import time

from orchestrators import registry
from orchestrators.base import TransientError

from .models import Desktop
from .selectors import CONTAINER_PORTS

CACHE_SECONDS = 10.0
_cache: dict[tuple[str, str], tuple[float, tuple[str, int]]] = {}
_lock = threading.Lock()


def node_port(instance, desktop: str) -> int:
    ports = instance.ports
    return ports.port_chrome if desktop == Desktop.CHROME else ports.port_terminal


def desktop_address(instance, desktop: str) -> tuple[str, int]:
    """(host, port) of the instance's `desktop` noVNC server; TransientError when unreachable.

    Reads the database (the instance's ports, the stored backend): call it from a thread that
    may, with `instance.ports` loaded.
    """
    key = (instance.name, desktop)
    now = time.monotonic()
    with _lock:
        hit = _cache.get(key)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    try:
        orchestrator = registry.get_orchestrator(detect_if_needed=False)
    except TransientError as exc:
        raise TransientError(f"No orchestrator to reach {instance.name}'s desktop: {exc}") from exc
    address = orchestrator.desktop_address(instance.name, CONTAINER_PORTS[Desktop(desktop)],
                                           node_port(instance, desktop))
    with _lock:
        _cache[key] = (now, address)
    return address


def forget(name: str | None = None) -> None:
    """Drop cached addresses (of one instance, or all): after a failure, in tests."""
    with _lock:
        for key in [k for k in _cache if name is None or k[0] == name]:
            del _cache[key]
