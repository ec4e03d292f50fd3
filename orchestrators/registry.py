"""Which orchestrator Claworc uses: the persisted choice, or detection (Kubernetes, then Docker).

The `orchestrator_backend` Setting wins when it names a backend (`docker`, `kubernetes`); then
no detection runs at all. Otherwise (`auto`, unset, or `none` from an earlier failed detection)
the registry tries Kubernetes, then Docker, and persists what it found, as the Docker backend
spec's "Backend Selection" describes.

Public API, used by the rest of the code (which never branches on the backend itself):
  get_orchestrator() -> Orchestrator     (raises NoBackendAvailable, a TransientError)
  current_backend_name() -> "docker" | "kubernetes" | "none"   (no network, one small query)
  detect(persist=True) -> Detection      (what `manage.py detect_backend` prints)
  check(timeout) -> Check                (what `GET /health` reports)
  override(orchestrator)                 context manager for tests (thread-local)

Database access happens only in the calling thread; backend probes run in short-lived daemon
threads with a deadline, so a dead daemon or cluster costs seconds, never minutes, and a hung
socket cannot hold a request or a worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from django.conf import settings

from .base import VOLUME_MOUNTS, HostCapacity, Orchestrator, OrchestratorError, TransientError

logger = logging.getLogger(__name__)

SETTING_KEY = "orchestrator_backend"
DOCKER = "docker"
KUBERNETES = "kubernetes"
NONE = "none"
AUTO = "auto"
#: Detection order, as the spec lists it.
BACKENDS: tuple[str, ...] = (KUBERNETES, DOCKER)
#: Seconds one backend probe (load config, then one cheap call) may take during detection.
PROBE_TIMEOUT = 5.0
#: After a detection that found nothing, get_orchestrator() answers from memory this long, so
#: a burst of tasks or health checks does not probe a dead daemon once each.
NEGATIVE_TTL = 10.0

_local = threading.local()
_lock = threading.Lock()
_cache: dict[tuple, Orchestrator] = {}
_cache_pid = os.getpid()
_last_failure: tuple[tuple, float, str] | None = None
_last_name: str = NONE

T = TypeVar("T")


class NoBackendAvailable(TransientError):
    """Neither Kubernetes nor Docker answered (or the configured backend cannot be used)."""


@dataclass(frozen=True)
class Probe:
    """One backend tried during detection, and why it is or is not usable."""

    backend: str
    usable: bool
    reason: str

    def line(self) -> str:
        return f"{self.backend}: {self.reason}"


@dataclass
class Detection:
    """The outcome of `detect()`.

    `backend` is the chosen name ("none" when nothing is usable); `source` is "setting" when a
    stored choice was honoured without detection, "detected" otherwise.
    """

    backend: str
    source: str
    probes: list[Probe] = field(default_factory=list)
    persisted: bool = False
    orchestrator: Orchestrator | None = field(default=None, repr=False, compare=False)

    @property
    def usable(self) -> bool:
        return self.orchestrator is not None

    def lines(self) -> list[str]:
        return [p.line() for p in self.probes]

    def as_dict(self) -> dict:
        return {
            "orchestrator_backend": self.backend,
            "usable": self.usable,
            "source": self.source,
            "persisted": self.persisted,
            "tried": [
                {"backend": p.backend, "usable": p.usable, "reason": p.reason}
                for p in self.probes
            ],
        }


@dataclass(frozen=True)
class Check:
    """Whether the orchestrator in use answers right now (for /health)."""

    backend: str
    reachable: bool
    detail: str


# --- helpers ----------------------------------------------------------------------------------


def call_with_timeout(fn: Callable[[], T], timeout: float, what: str) -> T:
    """Run `fn` in a daemon thread and wait at most `timeout` seconds for it.

    Raises TransientError when it does not finish in time; `fn`'s own exception otherwise.
    The thread is a daemon so a socket that never answers cannot keep the process alive; it
    ends on its client's own timeout. `fn` must not touch the database (other thread).
    """
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller below
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"claworc-{what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TransientError(f"{what} did not answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _factory(name: str) -> Callable[[], Orchestrator]:
    if name == DOCKER:
        from .docker import DockerOrchestrator

        return DockerOrchestrator.from_settings
    if name == KUBERNETES:
        from .kubernetes import KubernetesOrchestrator, import_client

        # The client's API modules take seconds to import on a loaded machine: load them here,
        # outside the probe's deadline, which is meant for the network.
        import_client()
        return KubernetesOrchestrator.from_settings
    raise ValueError(f"unknown orchestrator backend {name!r}")


_FINGERPRINT_SETTINGS = (
    "CLAWORC_DOCKER_HOST", "CLAWORC_DOCKER_CONFIG_DIR", "CLAWORC_DOCKER_HOST_CONFIG_DIR",
    "CLAWORC_DOCKER_PRIVILEGED",
    "CLAWORC_DOCKER_INIT", "CLAWORC_K8S_NAMESPACE", "CLAWORC_K8S_PRIVILEGED", "CLAWORC_NODE_IP",
    "CLAWORC_DESKTOP_ACCESS", "CLAWORC_DOCKER_NETWORK", "CLAWORC_DESKTOP_UPSTREAM_HOST",
    "CLAWORC_K8S_STORAGE_CLASS", "CLAWORC_K8S_SEED_VOLUMES", "CLAWORC_PORT_START",
    "CLAWORC_PORT_END",
)
_FINGERPRINT_ENV = ("DOCKER_HOST", "KUBECONFIG", "KUBERNETES_SERVICE_HOST")


def _fingerprint() -> tuple:
    """What a cached client depends on: a changed setting or environment builds a new one."""
    return (
        os.getpid(),
        *(getattr(settings, name, None) for name in _FINGERPRINT_SETTINGS),
        *(os.environ.get(name) for name in _FINGERPRINT_ENV),
    )


def _cached(name: str) -> Orchestrator | None:
    with _lock:
        return _cache.get((name, _fingerprint()))


def _remember(name: str, orchestrator: Orchestrator) -> None:
    global _last_failure, _cache_pid
    with _lock:
        if _cache_pid != os.getpid():
            # A forked worker must not share its parent's sockets.
            _cache.clear()
            _cache_pid = os.getpid()
        _cache[(name, _fingerprint())] = orchestrator
        _last_failure = None


def _remember_name(name: str) -> None:
    global _last_name
    _last_name = name


def clear_cache() -> None:
    """Forget every built client and remembered failure (tests; after changing settings)."""
    global _last_failure, _last_name
    with _lock:
        _cache.clear()
        _last_failure = None
        _last_name = NONE


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, OrchestratorError):
        return str(exc)
    if isinstance(exc, ImportError):
        return f"backend not installed ({exc})"
    # Unexpected library errors: the type tells a person where to look; no traceback.
    return f"{type(exc).__name__}: {exc}"


def probe(name: str, *, timeout: float = PROBE_TIMEOUT) -> tuple[Probe, Orchestrator | None]:
    """Build one backend from settings and ping it, within `timeout` seconds. No database."""
    try:
        build = _factory(name)
    except ImportError as exc:
        return Probe(name, False, _describe_error(exc)), None

    def attempt():
        orchestrator = build()
        return orchestrator, orchestrator.ping()

    try:
        orchestrator, answer = call_with_timeout(attempt, timeout, f"{name} probe")
    except Exception as exc:  # noqa: BLE001 - every failure is a reason to report
        return Probe(name, False, _describe_error(exc)), None
    return Probe(name, True, answer), orchestrator


# --- the persisted choice ---------------------------------------------------------------------


def _stored_choice(raw: str | None = None) -> str:
    """The Setting's value (`raw`, when already read), normalised: "docker", "kubernetes",
    "auto" or "none"."""
    from instances.models import Setting

    raw = (Setting.get_str(SETTING_KEY, "") if raw is None else raw).strip().lower()
    if raw in (DOCKER, KUBERNETES, NONE):
        return raw
    if raw not in ("", AUTO):
        logger.warning("%s holds %r, which names no backend; detecting instead", SETTING_KEY, raw)
    return AUTO


#: The Setting holding what the backend lets instances use together (HostCapacity as JSON with
#: the backend's name and when it was read), read from it at detection and by reconcile_all
#: when due: forms and the admission of a start read it without calling the backend in a
#: request.
CAPACITY_KEY = "host_capacity"


def record_capacity(orchestrator: Orchestrator, *, timeout: float = PROBE_TIMEOUT) -> bool:
    """Read the backend's capacity now and store it; False (the last record kept) when it does
    not answer. A backend that sets no bound clears the record."""
    name = orchestrator.backend_name
    try:
        found = call_with_timeout(orchestrator.host_capacity, timeout, f"{name} capacity")
    except Exception as exc:  # noqa: BLE001 - the budget keeps its last numbers meanwhile
        logger.info("could not read the capacity of %s: %s", name, _describe_error(exc))
        return False
    store_capacity(name, found)
    return True


def store_capacity(backend: str, capacity: HostCapacity | None) -> None:
    """Store what `backend` lets instances use (None: no bound), and when it was read."""
    import json

    from django.utils import timezone

    from instances.models import Setting

    Setting.set(CAPACITY_KEY, json.dumps({
        "backend": backend, **(capacity.as_json() if capacity else {}),
        "read_at": timezone.now().isoformat()}))


def capacity_read_due(backend: str, every: float) -> bool:
    """Whether `backend`'s capacity was last read more than `every` seconds ago (or never)."""
    import json

    from django.utils import timezone
    from django.utils.dateparse import parse_datetime

    from instances.models import Setting

    try:
        data = json.loads(Setting.get_str(CAPACITY_KEY, "") or "{}")
        read_at = parse_datetime(data.get("read_at") or "")
    except (ValueError, TypeError, AttributeError):
        return True
    if data.get("backend") != backend or read_at is None:
        return True
    return (timezone.now() - read_at).total_seconds() >= every


def recorded_capacity(raw: str | None = None) -> HostCapacity | None:
    """The capacity last read from the backend in use (`raw`: the Setting's value, if already
    read); None when unknown or read from another backend."""
    if raw is None:
        return backend_and_capacity()[1]
    return _capacity_of(raw, current_backend_name())


def backend_and_capacity() -> tuple[str, HostCapacity | None]:
    """current_backend_name() and recorded_capacity(), both rows read in one query: pages show
    the backend and the budget on every load."""
    from instances.models import Setting

    found = dict(Setting.objects.filter(key__in=[CAPACITY_KEY, SETTING_KEY])
                 .values_list("key", "value"))
    backend = _backend_name(found.get(SETTING_KEY, ""))
    return backend, _capacity_of(found.get(CAPACITY_KEY, ""), backend)


def _capacity_of(raw: str, backend: str) -> HostCapacity | None:
    import json

    try:
        data = json.loads(raw) if raw else None
        if not data or data.get("backend") != backend:
            return None
        return HostCapacity.from_json(data)
    except (ValueError, TypeError, AttributeError, ArithmeticError):
        logger.warning("%s holds an unreadable value; no budget until the next read",
                       CAPACITY_KEY)
        return None


def host_cpus() -> int | None:
    """The CPU count of the host that runs instances (Docker), as last read; None if unknown."""
    found = recorded_capacity()
    if found is None or not found.host or "cpu" not in found.per_instance_max:
        return None
    return int(found.per_instance_max["cpu"])


def store_choice(value: str) -> None:
    """Persist a backend name, "auto" or "none" in the Setting table."""
    from instances.models import Setting

    if value not in (DOCKER, KUBERNETES, AUTO, NONE):
        raise ValueError(f"{SETTING_KEY} must be docker, kubernetes or auto, not {value!r}")
    Setting.set(SETTING_KEY, value)


def detect(
    *, persist: bool = True, redetect: bool = False, timeout: float = PROBE_TIMEOUT
) -> Detection:
    """Resolve the backend and say why, for each backend tried.

    A stored choice naming a backend is honoured without trying the others (only that backend
    is probed, to report whether it answers) unless `redetect`. Otherwise Kubernetes, then
    Docker, are probed in turn; the first that answers wins, and the result ("none" included)
    is saved in the Setting table when `persist`.
    """
    stored = _stored_choice()
    if stored in BACKENDS and not redetect:
        result, orchestrator = probe(stored, timeout=timeout)
        if orchestrator is not None:
            _remember(stored, orchestrator)
            if persist:
                record_capacity(orchestrator)
        _remember_name(stored)
        return Detection(stored, "setting", [result], orchestrator=orchestrator)

    probes: list[Probe] = []
    chosen, found = NONE, None
    for name in BACKENDS:
        result, orchestrator = probe(name, timeout=timeout)
        probes.append(result)
        if orchestrator is not None:
            chosen, found = name, orchestrator
            break
    if found is not None:
        _remember(chosen, found)
        if persist:
            record_capacity(found)
    else:
        _note_failure("; ".join(p.line() for p in probes))
    _remember_name(chosen)
    if persist:
        store_choice(chosen)
    logger.info("orchestrator backend detected: %s (%s)", chosen,
                "; ".join(p.line() for p in probes))
    return Detection(chosen, "detected", probes, persisted=persist, orchestrator=found)


def _note_failure(message: str) -> None:
    global _last_failure
    with _lock:
        _last_failure = (_fingerprint(), time.monotonic(), message)


def _recent_failure() -> str | None:
    with _lock:
        if _last_failure is None:
            return None
        fingerprint, at, message = _last_failure
    if fingerprint == _fingerprint() and time.monotonic() - at < NEGATIVE_TTL:
        return message
    return None


# --- public API -------------------------------------------------------------------------------


@contextlib.contextmanager
def override(orchestrator: Orchestrator):
    """Make get_orchestrator() return `orchestrator` in this thread (tests)."""
    previous = getattr(_local, "override", None)
    _local.override = orchestrator
    try:
        yield orchestrator
    finally:
        _local.override = previous


def get_orchestrator(*, detect_if_needed: bool = True, timeout: float = PROBE_TIMEOUT,
                     persist: bool = True) -> Orchestrator:
    """The orchestrator to use now.

    A stored backend name is built from settings (no network) and cached per process until the
    Setting or the settings it depends on change. Without one, detection runs (bounded by
    `timeout` per backend) unless `detect_if_needed` is false, and its result is stored unless
    `persist` is false (web requests never store it). Raises NoBackendAvailable, with the
    reasons, when nothing can be used.
    """
    forced = getattr(_local, "override", None)
    if forced is not None:
        return forced
    stored = _stored_choice()
    if stored in BACKENDS:
        _remember_name(stored)
        cached = _cached(stored)
        if cached is not None:
            return cached
        try:
            orchestrator = _factory(stored)()
        except (OrchestratorError, ImportError) as exc:
            raise NoBackendAvailable(
                f"{SETTING_KEY} is set to {stored}, but it cannot be used: "
                f"{_describe_error(exc)}"
            ) from None
        _remember(stored, orchestrator)
        return orchestrator

    if not detect_if_needed:
        raise NoBackendAvailable(
            "no orchestrator backend chosen yet; run `manage.py detect_backend`"
        )
    if not persist and _last_name in BACKENDS:
        # Detected earlier in this process but not stored (a web request): reuse that client.
        cached = _cached(_last_name)
        if cached is not None:
            return cached
    recent = _recent_failure()
    if recent is not None:
        raise NoBackendAvailable(f"no orchestrator backend available ({recent})")
    found = detect(persist=persist, timeout=timeout)
    if found.orchestrator is None:
        raise NoBackendAvailable(
            f"no orchestrator backend available ({'; '.join(found.lines())})"
        )
    return found.orchestrator


def current_backend_name() -> str:
    """"docker", "kubernetes" or "none": the stored or last detected choice. Never probes."""
    return _backend_name(None)


def _backend_name(raw: str | None) -> str:
    forced = getattr(_local, "override", None)
    if forced is not None:
        return forced.backend_name
    stored = _stored_choice(raw)
    if stored in BACKENDS:
        return stored
    return _last_name if stored == AUTO else NONE


def last_known_backend_name() -> str:
    """The name this process last resolved, without touching the database (it may be down)."""
    forced = getattr(_local, "override", None)
    if forced is not None:
        return forced.backend_name
    return _last_name


def check(*, timeout: float = 2.0, persist: bool = True) -> Check:
    """Resolve the orchestrator and ping it; a dead backend costs about `timeout` seconds.

    Detection, when it must run, gets half the budget per backend so the whole check stays
    within about `timeout`; its result is stored only when `persist`.
    """
    try:
        orchestrator = get_orchestrator(timeout=timeout / 2, persist=persist)
    except NoBackendAvailable as exc:
        return Check(current_backend_name(), False, str(exc))
    try:
        answer = call_with_timeout(orchestrator.ping, timeout, f"{orchestrator.backend_name} ping")
    except Exception as exc:  # noqa: BLE001 - reported, never raised, by /health
        return Check(orchestrator.backend_name, False, _describe_error(exc))
    return Check(orchestrator.backend_name, True, answer)


def volume_names(instance_name: str, backend: str | None = None) -> list[tuple[str, str, str]]:
    """(suffix, volume name as the backend calls it, mount path) for each of the four volumes.

    Docker volumes are `claworc-<name>-<suffix>`, Kubernetes PVCs `<name>-<suffix>`; each
    backend's own pure naming function decides. With no backend the Docker names are given.
    """
    backend = backend or current_backend_name()
    if backend == KUBERNETES:
        from .kubernetes import pvc_name

        return [(suffix, pvc_name(instance_name, suffix), path)
                for suffix, path in VOLUME_MOUNTS.items()]
    from .docker import volume_names as docker_volume_names

    names = docker_volume_names(instance_name)
    return [(suffix, names[suffix], path) for suffix, path in VOLUME_MOUNTS.items()]
