"""The Docker backend: one container, four named volumes and a bind-mounted config file per
instance, on one Docker daemon (docs/docker-backend.md maps it to the user's spec).

Docker arguments are built by pure functions (`volume_names`, `config_path`,
`container_create_kwargs`, `map_status`) so tests can read them without a daemon.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import docker.errors
import requests.exceptions
from docker.types import Mount

from .base import (
    CHROME_VNC_PORT,
    CONFIG_FILENAME,
    CONFIG_MOUNT_PATH,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_SITE,
    MANAGED_BY_VALUE,
    TERMINAL_VNC_PORT,
    VOLUME_MOUNTS,
    DesktopAccess,
    FinalError,
    HostCapacity,
    InstanceSpec,
    Observed,
    Orchestrator,
    OrchestratorError,
    PortConflict,
    PullError,
    PullProgress,
    RegistryAuth,
    Status,
    TransientError,
    Usage,
    foreign_site_error,
    is_crash,
)
from .quantity import parse_bytes, parse_cpu
from .streams import bounded_stream

logger = logging.getLogger(__name__)

#: Label holding a digest of everything the container was created with: a different digest
#: means the container must be recreated. A digest, so no secret is readable from it.
LABEL_SPEC_HASH = "claworc.spec-hash"
PING_TIMEOUT = 5
#: Seconds between SIGTERM and SIGKILL when stopping (Docker's own default).
STOP_TIMEOUT = 10
LOG_TAIL_LINES = 50
PRIVILEGED_HINT = (
    "The agent image requires --privileged mode. Ensure Docker Desktop has not disabled "
    "privileged containers (set CLAWORC_DOCKER_PRIVILEGED=false only where the kernel refuses it)."
)
# Same rule as instance names (ARCHITECTURE.md): also keeps names safe as a directory name.
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PORT_IN_USE_RE = re.compile(
    r"port is already allocated|address already in use", re.IGNORECASE
)
_PORT_NUMBER_RE = re.compile(r":(\d{1,5})(?:\s|:|$| failed)")
_EXIT_CODE_RE = re.compile(r"^(?:Exited|Restarting) \((-?\d+)\)")
_PRIVILEGED_RE = re.compile(
    r"unable to apply caps|privileged|operation not permitted", re.IGNORECASE
)
#: What the daemon says when a bind mount's source is gone: at create or start ("bind source
#: path does not exist"), when a restart policy restarts it (runc's "error mounting … no such
#: file or directory"), or for a plain bind ("error while creating mount source path").
_MOUNT_MISSING_RE = re.compile(
    r"bind source path does not exist|error while creating mount source path|"
    r"error mounting \S+ to rootfs.*no such file or directory", re.IGNORECASE | re.DOTALL
)


# --- pure builders ------------------------------------------------------------------------------


def volume_names(name: str) -> dict[str, str]:
    """Volume name per suffix, in the seed's order: {"clawdbot": "claworc-<name>-clawdbot", …}."""
    return {suffix: f"claworc-{name}-{suffix}" for suffix in VOLUME_MOUNTS}


def config_dir_for(config_dir: str, name: str) -> str:
    return os.path.join(config_dir, name)


def config_path(config_dir: str, name: str) -> str:
    """`{config_dir}/{name}/clawdbot.json`, as the seed names it."""
    return os.path.join(config_dir, name, CONFIG_FILENAME)


def config_bytes(config: Any) -> bytes:
    # Sorted keys: a database that reorders JSON keys must not look like a config change.
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()


def config_digest_of(data: bytes) -> str:
    """The digest status_all reports for a config file holding `data`."""
    return hashlib.sha256(data).hexdigest()


def mount_missing_message(name: str, explanation: str) -> str | None:
    """A person-facing message when the daemon's error says a mount's source is missing."""
    if not _MOUNT_MISSING_RE.search(explanation or ""):
        return None
    return (
        f"Container {name} cannot start: a file it mounts is missing on the Docker host "
        f"({explanation.strip()}). Claworc writes the config file again at the next converge; "
        "if this persists, make sure CLAWORC_DOCKER_CONFIG_DIR is the same path on the host and "
        "in the dashboard's container (docs/docker-backend.md, \"Config file not visible in "
        "container\")."
    )


def check_name(name: str) -> None:
    if not _NAME_RE.match(name or "") or len(name) > 59:
        raise FinalError(
            f"{name!r} is not a valid instance name (lowercase letters, digits and '-', "
            "at most 59 characters)"
        )


def desktop_ports(
    spec: InstanceSpec, desktop_access: DesktopAccess, network: str | None
) -> dict[str, Any] | None:
    """The `ports` argument: published on every address (ports, both), or in proxy mode bound to
    127.0.0.1 for a dashboard on the host, or not at all when a shared network carries them."""
    pairs = ((CHROME_VNC_PORT, spec.port_chrome), (TERMINAL_VNC_PORT, spec.port_terminal))
    if DesktopAccess(desktop_access).published:
        return {f"{port}/tcp": host_port for port, host_port in pairs}
    if network:
        return None
    return {f"{port}/tcp": ("127.0.0.1", host_port) for port, host_port in pairs}


def container_create_kwargs(
    spec: InstanceSpec, host_config_file: str, *, privileged: bool, init: bool,
    desktop_access: DesktopAccess = DesktopAccess.PORTS, network: str | None = None,
    site: str = "",
) -> dict[str, Any]:
    """Keyword arguments for `DockerClient.containers.create()` for this spec.

    `host_config_file` is the config file's path as the daemon sees it. Raises ValueError for
    a resource quantity Docker cannot take. `network`: a Docker network the dashboard shares
    with the bots, which the container joins.
    """
    check_name(spec.name)
    res = spec.resources
    mem_limit = parse_bytes(res.memory_limit)
    mem_reservation = parse_bytes(res.memory_request)
    if mem_reservation > mem_limit:
        raise ValueError(
            f"memory request {res.memory_request} is more than the memory limit {res.memory_limit}"
        )
    mounts = [
        Mount(target=path, source=volume, type="volume")
        for (suffix, path), volume in zip(
            VOLUME_MOUNTS.items(), volume_names(spec.name).values(), strict=True
        )
    ]
    # A Mount (not a bind in `volumes`): a missing source file is an error, where a bind would
    # silently create an empty directory in its place.
    mounts.append(Mount(target=CONFIG_MOUNT_PATH, source=host_config_file, type="bind",
                        read_only=True))
    kwargs: dict[str, Any] = {
        "name": spec.name,
        "image": spec.image,
        "environment": dict(spec.env),
        "labels": spec.labels(),
        "mounts": mounts,
        "privileged": privileged,
        "init": init,
        "restart_policy": {"Name": "unless-stopped"},
        "nano_cpus": int(parse_cpu(res.cpu_limit) * 10**9),
        # The CPU request becomes a relative weight under contention, as on Kubernetes.
        "cpu_shares": max(2, int(parse_cpu(res.cpu_request) * 1024)),
        "mem_limit": mem_limit,
        "mem_reservation": mem_reservation,
    }
    ports = desktop_ports(spec, desktop_access, network)
    if ports is not None:
        kwargs["ports"] = ports
    if network:
        kwargs["network"] = network
    if site:
        kwargs["labels"][LABEL_SITE] = site
    kwargs["labels"][LABEL_SPEC_HASH] = spec_hash(kwargs)
    return kwargs


def spec_hash(kwargs: dict[str, Any]) -> str:
    """Digest of the create arguments (without the hash label itself)."""
    material = dict(kwargs)
    material["labels"] = {k: v for k, v in kwargs["labels"].items() if k != LABEL_SPEC_HASH}
    blob = json.dumps(material, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def map_status(state: str, health: str | None) -> Status:
    """Docker state (+ health status) to Status, exactly as issue 3 maps them."""
    if state == "running":
        if health == "starting":
            return Status.CREATING
        if health == "unhealthy":
            return Status.ERROR
        return Status.RUNNING
    if state in {"created", "restarting"}:
        return Status.CREATING
    # exited, dead, paused, removing
    return Status.STOPPED


def health_from_list_status(text: str) -> str | None:
    """The health part of `docker ps`'s Status column ("Up 3 minutes (healthy)")."""
    if "(unhealthy)" in text:
        return "unhealthy"
    if "(health: starting)" in text:
        return "starting"
    if "(healthy)" in text:
        return "healthy"
    return None


def observed_from_list(entry: dict[str, Any]) -> Observed:
    """Observed state from one entry of a container list (no extra API call)."""
    labels = entry.get("Labels") or {}
    name = labels.get(LABEL_INSTANCE) or (entry.get("Names") or ["/?"])[0].lstrip("/")
    state = entry.get("State", "")
    text = entry.get("Status", "")
    if state == "running" and "(Paused)" in text:
        state = "paused"
    exit_code = None
    match = _EXIT_CODE_RE.match(text)
    if match and state in {"exited", "restarting"}:
        exit_code = int(match.group(1))
    return Observed(
        name=name,
        status=map_status(state, health_from_list_status(text)),
        message=text or state,
        exit_code=exit_code,
    )


def _inspect_state(attrs: dict[str, Any]) -> tuple[str, str | None]:
    state = attrs.get("State") or {}
    status = state.get("Status", "")
    if status == "running" and state.get("Paused"):
        status = "paused"
    health = (state.get("Health") or {}).get("Status")
    return status, health


def observed_from_inspect(name: str, attrs: dict[str, Any], log_tail: str = "") -> Observed:
    state = attrs.get("State") or {}
    docker_state, health = _inspect_state(attrs)
    status = map_status(docker_state, health)
    exit_code = state.get("ExitCode") if docker_state in {"exited", "dead", "restarting"} else None
    if docker_state == "running" and health == "unhealthy":
        checks = (state.get("Health") or {}).get("Log") or []
        last = (checks[-1].get("Output") or "").strip() if checks else ""
        message = "health check failing" + (f": {last[:200]}" if last else "")
    elif docker_state in {"exited", "dead"}:
        message = f"{docker_state} with code {exit_code}"
        if state.get("Error") and _MOUNT_MISSING_RE.search(state["Error"]):
            # Its process never ran, so its log is empty: the cause is the daemon's.
            message += (": it could not be started again because a file it mounts is missing "
                        f"on the Docker host ({state['Error']})")
        elif state.get("Error"):
            message += f": {state['Error']}"
    elif health:
        message = f"{docker_state} ({health})"
    else:
        message = docker_state
    return Observed(name=name, status=status, message=message, exit_code=exit_code,
                    log_tail=log_tail)


def _timestamp_ns(value: str) -> int:
    """Docker's RFC 3339 timestamp with nanoseconds, as integer nanoseconds since the epoch."""
    match = re.match(r"^(.*?T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", value or "")
    if not match:
        return 0
    base, frac, zone = match.groups()
    seconds = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone)).timestamp()
    return int(seconds) * 10**9 + int(((frac or "") + "000000000")[:9])


def write_atomically(path: str, data: bytes, mode: int = 0o644) -> bool:
    """Write `data` to `path` unless it already holds exactly that; True when it wrote.

    A temporary file in the same directory replaced over the target: a container starting at
    any moment mounts either the old file or the new one, never a half-written one. No fsync:
    the file is derived from the database, and a file emptied by a power cut differs from the
    spec, so the next ensure rewrites it and restarts the container.
    """
    directory = os.path.dirname(path)
    # The directory keeps other host users out (the config may hold tokens); the file itself
    # stays readable for whichever user the agent runs as inside the container.
    os.makedirs(directory, mode=0o700, exist_ok=True)
    try:
        with open(path, "rb") as current:
            if current.read() == data:
                return False
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(prefix=".clawdbot-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return True


def port_in_use_message(explanation: str, spec_ports: tuple[int, int]) -> str | None:
    """A person-facing message when Docker's error says a host port is taken, else None."""
    if not _PORT_IN_USE_RE.search(explanation or ""):
        return None
    ports = [int(p) for p in _PORT_NUMBER_RE.findall(explanation) if int(p) in spec_ports]
    named = ports[0] if ports else " and ".join(str(p) for p in spec_ports)
    return (
        f"Port {named} is already in use on the Docker host; free it or change "
        "CLAWORC_PORT_START/CLAWORC_PORT_END so the dashboard allocates a free range."
    )


# --- image pulls -------------------------------------------------------------------------------

#: Ordered: the first pattern found in the daemon's message names the cause.
_PULL_CAUSES: list[tuple[str, re.Pattern[str], str]] = [
    ("disk_full", re.compile(r"no space left on device", re.IGNORECASE),
     "the Docker host's disk is full: free space (e.g. `docker image prune`) and try again"),
    ("unauthorized", re.compile(
        r"unauthorized|authentication required|no basic auth credentials|incorrect username",
        re.IGNORECASE),
     "the registry refused the credentials (or wants some): set them for this registry"),
    ("not_found", re.compile(
        r"manifest unknown|not found|does not exist|pull access denied|name unknown",
        re.IGNORECASE),
     "the registry has no such image or tag: check the image name and tag"),
    ("unreachable", re.compile(
        r"connection refused|no such host|i/o timeout|dial tcp|network is unreachable|"
        r"timeout exceeded|TLS handshake|connection reset|EOF|no route to host",
        re.IGNORECASE),
     "the registry is unreachable from the Docker host: check the registry address and the "
     "host's network"),
]


def pull_error(image: str, detail: str) -> PullError:
    """The daemon's pull error as a PullError whose message names the cause."""
    detail = (detail or "").strip() or "no reason given"
    for cause, pattern, advice in _PULL_CAUSES:
        if pattern.search(detail):
            return PullError(f"Could not pull {image}: {advice} (Docker said: {detail}).",
                             cause=cause)
    return PullError(f"Could not pull {image}: {detail}.", cause="failed")


class PullTally:
    """Sums a pull stream's per-layer events into one PullProgress.

    Docker reports each layer separately ("Pulling fs layer", "Downloading" with current and
    total bytes, "Download complete", "Pull complete", or "Already exists" for a layer the host
    holds). A layer's size is known once it starts downloading, so the total grows at first.
    """

    _DONE = {"Download complete", "Verifying Checksum", "Extracting", "Pull complete"}

    def __init__(self) -> None:
        self.layers: dict[str, tuple[int, int, bool]] = {}  # id -> (current, total, done)
        self.phase = ""
        self.digest = ""
        self.error = ""

    def feed(self, event: dict[str, Any]) -> None:
        if event.get("error") or event.get("errorDetail"):
            self.error = (event.get("errorDetail") or {}).get("message") or event.get("error")
            return
        status = event.get("status") or ""
        layer = event.get("id")
        if status.startswith("Digest: "):
            self.digest = status.removeprefix("Digest: ").strip()
            return
        if not layer or status.startswith("Pulling from"):
            self.phase = status or self.phase
            return
        current, total, done = self.layers.get(layer, (0, 0, False))
        detail = event.get("progressDetail") or {}
        if status == "Downloading":
            current, total = int(detail.get("current") or 0), int(detail.get("total") or total)
        elif status in self._DONE:
            current, done = total, status == "Pull complete" or done
        elif status == "Already exists":
            done = True
        self.layers[layer] = (current, total, done)
        self.phase = status

    def progress(self) -> PullProgress:
        values = self.layers.values()
        return PullProgress(
            bytes_done=sum(min(c, t) if t else c for c, t, _ in values),
            bytes_total=sum(t for _, t, _ in values),
            layers_done=sum(1 for _, _, d in values if d),
            layers_total=len(self.layers),
            phase=self.phase,
        )


# --- resource usage and followed logs ------------------------------------------------------------

def usage_from_stats(name: str, stats: dict[str, Any]) -> Usage | None:
    """Usage from one `docker stats --no-stream` answer; None when the container is not running
    (Docker then answers zeros)."""
    cpu = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    memory = stats.get("memory_stats") or {}
    if not cpu and not memory.get("usage"):
        return None
    used = memory.get("usage")
    detail = memory.get("stats") or {}
    # What `docker stats` shows: the page cache is reclaimable, so not counted as used (cgroup
    # v2 calls it inactive_file, v1 total_inactive_file).
    for key in ("inactive_file", "total_inactive_file"):
        if used is not None and key in detail:
            used = max(0, used - detail[key])
            break
    return Usage(
        name=name,
        cpu_seconds_total=cpu / 1e9 if cpu is not None else None,
        memory_bytes=used,
        memory_limit_bytes=memory.get("limit"),
    )


# --- the backend --------------------------------------------------------------------------------


class DockerOrchestrator(Orchestrator):
    """Instances as containers on one Docker daemon.

    The client is made on first use (constructing never touches the network) and again after
    a fork, so one object can be built at import time and used from prefork workers.
    """

    backend_name = "docker"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        config_dir: str,
        host_config_dir: str | None = None,
        privileged: bool = True,
        init: bool = False,
        timeout: int = 30,
        client=None,
        desktop_access: str = DesktopAccess.PORTS,
        network: str | None = None,
        desktop_host: str = "127.0.0.1",
        site: str = "",
    ) -> None:
        self.base_url = base_url
        self.site = site
        self.desktop_access = DesktopAccess(desktop_access)
        self.network = network or None
        self.desktop_host = desktop_host
        self.config_dir = config_dir
        self._host_config_dir = host_config_dir
        self.privileged = privileged
        self.init = init
        self.timeout = timeout
        self._client = client
        self._owns_client = client is None
        self._client_pid = os.getpid()
        self._lock = threading.Lock()
        self._config_digests: dict[str, tuple[tuple[int, int, int], str]] = {}

    @classmethod
    def from_settings(cls, **overrides: Any) -> DockerOrchestrator:
        """Built from CLAWORC_DOCKER_* settings; keyword arguments override them."""
        from django.conf import settings

        kwargs: dict[str, Any] = {
            "base_url": settings.CLAWORC_DOCKER_HOST,
            "config_dir": settings.CLAWORC_DOCKER_CONFIG_DIR,
            "host_config_dir": getattr(settings, "CLAWORC_DOCKER_HOST_CONFIG_DIR", "") or None,
            "privileged": settings.CLAWORC_DOCKER_PRIVILEGED,
            "init": settings.CLAWORC_DOCKER_INIT,
            "desktop_access": getattr(settings, "CLAWORC_DESKTOP_ACCESS", "ports"),
            "network": getattr(settings, "CLAWORC_DOCKER_NETWORK", "") or None,
            "desktop_host": getattr(settings, "CLAWORC_DESKTOP_UPSTREAM_HOST", "127.0.0.1"),
            "site": getattr(settings, "CLAWORC_SITE_ID", ""),
        }
        kwargs.update(overrides)
        orchestrator = cls(**kwargs)
        orchestrator.pull_timeout = getattr(settings, "CLAWORC_PULL_TIMEOUT", cls.pull_timeout)
        return orchestrator

    def __repr__(self) -> str:
        return f"DockerOrchestrator(base_url={self.base_url!r}, config_dir={self.config_dir!r})"

    # -- client and errors -------------------------------------------------------------------

    @property
    def client(self) -> docker.DockerClient:
        """The Docker client, made on first use (docker.errors.DockerException when the daemon
        does not answer; the operations below turn that into TransientError)."""
        if self._client is not None and (not self._owns_client or self._client_pid == os.getpid()):
            return self._client
        with self._lock:
            if self._client is None or (self._owns_client and self._client_pid != os.getpid()):
                # Version negotiation is the first request: keep it short like ping.
                short = min(self.timeout, PING_TIMEOUT)
                if self.base_url:
                    client = docker.DockerClient(base_url=self.base_url, timeout=short)
                else:
                    client = docker.from_env(timeout=short)
                client.api.timeout = self.timeout
                self._client, self._client_pid = client, os.getpid()
        return self._client

    @property
    def host_config_dir(self) -> str:
        """Where the daemon sees config_dir: as given, else found once from the daemon.

        On the host that is config_dir itself; in a dashboard container it is derived from the
        mount holding config_dir (orchestrators/docker_host.py; ConfigDirNotShared, a
        FinalError, when it lies on none).
        """
        return self._daemon_config_dir("")

    def _daemon_config_dir(self, name: str) -> str:
        if self._host_config_dir is None:
            from . import docker_host

            with self._translate(name, "find the config directory for"):
                self._host_config_dir = docker_host.host_config_dir(self.config_dir, self.client)
        return self._host_config_dir

    def _unavailable(self, name: str, action: str, exc: BaseException) -> TransientError:
        reason = str(exc) or type(exc).__name__
        logger.warning("Docker not available (%s %s): %s", action, name or "-", reason)
        return TransientError(f"Docker not available: {reason}")

    @contextlib.contextmanager
    def _translate(self, name: str, action: str) -> Iterator[None]:
        """Turn client exceptions into TransientError / FinalError with a message for people."""
        try:
            yield
        except OrchestratorError:
            raise
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise self._unavailable(name, action, exc) from exc
        except docker.errors.APIError as exc:
            explanation = exc.explanation or str(exc)
            if exc.status_code is not None and exc.status_code >= 500:
                logger.warning("Docker could not %s %s: %s", action, name, explanation)
                raise TransientError(f"Docker could not {action} {name}: {explanation}") from exc
            raise FinalError(f"Docker refused to {action} {name}: {explanation}") from exc
        except docker.errors.DockerException as exc:
            # Raised by the client itself: bad DOCKER_HOST, TLS files, version negotiation.
            raise self._unavailable(name, action, exc) from exc

    def _inspect(self, name: str) -> dict[str, Any] | None:
        """The container's inspect data; None when missing; FinalError when not ours."""
        with self._translate(name, "inspect"):
            try:
                attrs = self.client.api.inspect_container(name)
            except docker.errors.NotFound:
                return None
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        if labels.get(LABEL_MANAGED_BY) != MANAGED_BY_VALUE:
            raise FinalError(
                f"A container named {name} exists but is not managed by Claworc; rename or "
                "remove it, or give the instance another name."
            )
        self._refuse_foreign(name, "container", labels)
        return attrs

    # -- sites: several Claworc installations on one daemon ------------------------------------

    def _ours(self, labels: dict[str, str] | None) -> bool:
        """Made by this site, or unlabelled (made before sites existed: adopted)."""
        return (labels or {}).get(LABEL_SITE) in (None, "", self.site) or not self.site

    def _refuse_foreign(self, name: str, what: str, labels: dict[str, str] | None) -> None:
        if not self._ours(labels):
            raise foreign_site_error(what, name, "on this Docker host", labels[LABEL_SITE],
                                     self.site)

    def _labels(self, spec: InstanceSpec) -> dict[str, str]:
        labels = spec.labels()
        if self.site:
            labels[LABEL_SITE] = self.site
        return labels

    def _logs(self, name: str, lines: int) -> str:
        with self._translate(name, "read the logs of"):
            try:
                raw = self.client.api.logs(name, stdout=True, stderr=True, tail=lines)
            except docker.errors.NotFound:
                return ""
        return raw.decode("utf-8", "replace")

    def _observe(self, name: str, attrs: dict[str, Any] | None = None) -> Observed:
        if attrs is None:
            attrs = self._inspect(name)
        if attrs is None:
            return Observed(name=name, status=Status.STOPPED, message="no container",
                            exists=False)
        observed = observed_from_inspect(name, attrs)
        # A stop (exit 143 or 137) is not a crash: no log request for it. An OOM kill is.
        crashed = is_crash(observed.exit_code) or bool(
            observed.exit_code and (attrs.get("State") or {}).get("OOMKilled"))
        if observed.status == Status.ERROR or crashed:
            observed = observed_from_inspect(name, attrs, self._logs(name, LOG_TAIL_LINES))
        return observed

    # -- pieces of ensure ----------------------------------------------------------------------

    def cpu_capacity(self) -> int | None:
        """The daemon's CPU count (`docker info` NCPU), read once per client."""
        if getattr(self, "_ncpu", None) is None:
            with self._translate("", "read the host's CPU count"):
                self._ncpu = int(self.client.info().get("NCPU") or 0) or None
        return self._ncpu

    def host_capacity(self) -> HostCapacity | None:
        """The daemon's CPUs and memory (`docker info` NCPU, MemTotal), read now: the budget
        bounds the sum of CPU requests and of memory limits; one instance's CPU limit may not
        exceed the CPUs (Docker refuses such a container)."""
        with self._translate("", "read the host's CPUs and memory"):
            info = self.client.info()
        cpus = int(info.get("NCPU") or 0)
        memory = int(info.get("MemTotal") or 0)
        if cpus:
            self._ncpu = cpus
        totals = {}
        if cpus:
            totals["requests.cpu"] = Decimal(cpus)
        if memory:
            totals["limits.memory"] = Decimal(memory)
        if not totals:
            return None
        return HostCapacity(totals=totals, host=True, source="docker info",
                            per_instance_max={"cpu": Decimal(cpus)} if cpus else {})

    def _create_kwargs(self, spec: InstanceSpec) -> dict[str, Any]:
        cpus = self.cpu_capacity()
        with contextlib.suppress(ValueError):  # a bad quantity is reported just below
            if cpus and parse_cpu(spec.resources.cpu_limit) > cpus:
                # Docker would refuse at create time, after the old container was removed.
                raise FinalError(
                    f"Instance {spec.name}: CPU limit {spec.resources.cpu_limit} is more than "
                    f"the Docker host has ({cpus} CPU{'s' if cpus != 1 else ''}); lower it.")
        try:
            return container_create_kwargs(
                spec,
                config_path(self._daemon_config_dir(spec.name), spec.name),
                privileged=self.privileged and spec.privileged,
                init=self.init,
                desktop_access=self.desktop_access,
                network=self.network,
                site=self.site,
            )
        except ValueError as exc:
            raise FinalError(f"Instance {spec.name}: {exc}") from exc

    def _write_config(self, spec: InstanceSpec) -> bool:
        path = config_path(self.config_dir, spec.name)
        try:
            changed = write_atomically(path, config_bytes(spec.config))
        except OSError as exc:
            raise FinalError(
                f"Cannot write the config file {path} for {spec.name}: {exc.strerror or exc}; "
                "check CLAWORC_DOCKER_CONFIG_DIR exists and is writable."
            ) from exc
        if changed:
            logger.info("wrote config file for %s", spec.name)
        return changed

    def config_digest(self, config: Any) -> str:
        return config_digest_of(config_bytes(config))

    def _config_file_digest(self, name: str) -> str | None:
        """Digest of the config file on disk, "" when it is missing, None when unreadable.

        Kept per (inode, size, mtime): at fleet scale a beat costs one stat per instance and a
        read only of the files that changed since the last look.
        """
        if not _NAME_RE.match(name):
            return None  # a label no instance can have: never a path outside config_dir
        path = config_path(self.config_dir, name)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return ""
        except OSError:
            return None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._config_digests.get(name)
        if cached and cached[0] == key:
            return cached[1]
        try:
            with open(path, "rb") as f:
                digest = config_digest_of(f.read())
        except (FileNotFoundError, NotADirectoryError):
            return ""
        except OSError:
            return None
        self._config_digests[name] = (key, digest)
        return digest

    def _config_mtime_ns(self, name: str) -> int:
        try:
            return os.stat(config_path(self.config_dir, name)).st_mtime_ns
        except FileNotFoundError:
            return 0

    def _ensure_volumes(self, spec: InstanceSpec) -> list[str]:
        """Create the missing volumes; return the names this call created."""
        created = []
        with self._translate(spec.name, "create the volumes of"):
            missing = []
            for volume in volume_names(spec.name).values():
                # An inspect by name costs the same at any fleet size, where a filtered list is
                # evaluated over every volume on the daemon. Knowing which existed lets a failed
                # first create remove only what it made, never a volume holding data.
                try:
                    found = self.client.api.inspect_volume(volume)
                except docker.errors.NotFound:
                    missing.append(volume)
                    continue
                # Another site's data is never mounted, and nothing is made before that is known.
                self._refuse_foreign(volume, "volume", found.get("Labels"))
            for volume in missing:
                # Creating an existing volume returns it unchanged: a concurrent create is fine.
                self.client.api.create_volume(name=volume, labels=self._labels(spec))
                created.append(volume)
        return created

    def _discard(self, name: str, volumes: list[str], *, config: bool) -> None:
        """Undo a failed first create: what it made, nothing else (best effort)."""
        for volume in volumes:
            with contextlib.suppress(docker.errors.DockerException,
                                     requests.exceptions.RequestException):
                self.client.api.remove_volume(volume)
        if config:
            shutil.rmtree(config_dir_for(self.config_dir, name), ignore_errors=True)

    def _ensure_network(self, name: str) -> None:
        """Create the shared desktop network when it is missing (a concurrent create is fine)."""
        with self._translate(name, "create the network of"):
            if self.client.api.networks(names=[self.network]):
                return
            try:
                self.client.api.create_network(
                    self.network, labels={LABEL_MANAGED_BY: MANAGED_BY_VALUE})
                logger.info("created network %s for %s", self.network, name)
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise

    def _create(self, spec: InstanceSpec, kwargs: dict[str, Any]) -> bool:
        """Create the container (pulling the image if missing). False when the name is taken."""
        if self.network:
            self._ensure_network(spec.name)
        with self._translate(spec.name, "create the container of"):
            try:
                self.client.containers.create(**kwargs)
                return True
            except docker.errors.ImageNotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code == 409:
                    return False  # created concurrently: the caller converges onto it
                self._raise_if_mount_missing(spec, exc)
                raise
        self._pull(spec)
        with self._translate(spec.name, "create the container of"):
            try:
                self.client.containers.create(**kwargs)
            except docker.errors.ImageNotFound as exc:
                raise self._image_error(spec, exc.explanation) from exc
            except docker.errors.APIError as exc:
                if exc.status_code == 409:
                    return False
                self._raise_if_mount_missing(spec, exc)
                raise
        return True

    def _raise_if_mount_missing(self, spec: InstanceSpec, exc: docker.errors.APIError) -> None:
        message = mount_missing_message(spec.name, str(exc.explanation or exc))
        if message:
            raise FinalError(message) from exc

    def _image_error(self, spec: InstanceSpec, reason: Any) -> FinalError:
        logger.warning("image %s for %s cannot be had: %s", spec.image, spec.name, reason)
        return FinalError(
            f"Image {spec.image} is not on the Docker host and could not be pulled: {reason}. "
            "Check CLAWORC_AGENT_IMAGE (or the instance's image) and that the registry is "
            "reachable, or load the image with `docker load`."
        )

    def _pull(self, spec: InstanceSpec) -> None:
        # A fallback only: the control flow pulls first (pull()), with progress and its own time
        # limit; this covers an image removed from the host between that pull and the create.
        logger.info("pulling image %s for %s", spec.image, spec.name)
        try:
            self.pull(spec.image)
        except PullError as exc:
            raise self._image_error(spec, exc) from exc
    def _start_error(self, spec: InstanceSpec, exc: docker.errors.APIError) -> OrchestratorError:
        explanation = str(exc.explanation or exc)
        mount_message = mount_missing_message(spec.name, explanation)
        if mount_message:
            logger.warning("cannot start %s: a mount source is missing (%s)", spec.name,
                           explanation)
            return FinalError(mount_message)
        port_message = port_in_use_message(explanation, (spec.port_chrome, spec.port_terminal))
        if port_message:
            logger.warning("cannot start %s: host port in use (%s)", spec.name, explanation)
            return PortConflict(port_message, ports=(spec.port_chrome, spec.port_terminal))
        if self.privileged and spec.privileged and _PRIVILEGED_RE.search(explanation):
            logger.warning("cannot start %s privileged: %s", spec.name, explanation)
            return FinalError(f"Container {spec.name} failed to start: {explanation}. "
                              + PRIVILEGED_HINT)
        logger.warning("cannot start %s: %s", spec.name, explanation)
        return FinalError(
            f"Container {spec.name} failed to start: {explanation}. "
            f"Check `docker logs {spec.name}`."
        )

    def _start_or_remove(self, spec: InstanceSpec) -> None:
        """Start the container; if that fails, remove it so no half-made workload stays."""
        try:
            with self._translate(spec.name, "start"):
                try:
                    self.client.api.start(spec.name)
                except docker.errors.NotFound:
                    raise TransientError(
                        f"Container {spec.name} was removed while starting; retry."
                    ) from None
                except docker.errors.APIError as exc:
                    raise self._start_error(spec, exc) from exc
        except FinalError:
            self._remove_container(spec.name)
            raise

    def _remove_container(self, name: str, *, stop_first: bool = False) -> None:
        with self._translate(name, "remove the container of"):
            if stop_first:
                with contextlib.suppress(docker.errors.NotFound):
                    self.client.api.stop(name, timeout=STOP_TIMEOUT)
            try:
                self.client.api.remove_container(name, force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                # "removal … already in progress": someone else is doing it.
                if exc.status_code != 409:
                    raise

    # -- the interface -------------------------------------------------------------------------

    def desktop_address(self, name: str, container_port: int, node_port: int) -> tuple[str, int]:
        """On a shared network: the container's address on it (one inspect, a few seconds at
        most), reachable from a dashboard container on that network and from the host itself.
        Otherwise the published port on CLAWORC_DESKTOP_UPSTREAM_HOST."""
        if not self.network:
            return self.desktop_host, node_port
        check_name(name)
        with self._translate(name, "find the desktop address of"):
            api = self.client.api
            try:
                attrs = api._result(api._get(api._url("/containers/{0}/json", name),
                                             timeout=PING_TIMEOUT), json=True)
            except docker.errors.NotFound:
                raise TransientError(f"Container {name} does not exist (yet).") from None
        networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
        address = (networks.get(self.network) or {}).get("IPAddress")
        if not (attrs.get("State") or {}).get("Running") or not address:
            raise TransientError(f"Container {name} is not running on network {self.network}.")
        return address, container_port

    def ping(self) -> str:
        """Ask the daemon its version within a few seconds: "ping ok, server 20.10.24"."""
        with self._translate("", "ping"):
            api = self.client.api
            # The public version() has no per-call timeout; ping must answer fast.
            info = api._result(api._get(api._url("/version"), timeout=PING_TIMEOUT), json=True)
        return f"ping ok, server {info.get('Version', '?')} (API {info.get('ApiVersion', '?')})"

    def ensure(self, spec: InstanceSpec) -> Observed:
        """Create what is missing and converge what differs, then make the container run.

        Same spec twice: nothing changes (same container id). A different image, env,
        resources, ports, privileged or init: the container is recreated (stop, remove, create,
        start) on the same volumes. A different config: the file is replaced atomically and
        the container restarted (a single-file bind mount shows the new file only after a
        restart). A port in use or an image that cannot be had: FinalError, no container left.
        """
        kwargs = self._create_kwargs(spec)
        wanted = kwargs["labels"][LABEL_SPEC_HASH]
        attrs = self._inspect(spec.name)  # the daemon answers before anything is written
        had_config_dir = os.path.isdir(config_dir_for(self.config_dir, spec.name))
        self._write_config(spec)
        for attempt in range(6):
            if attempt:
                attrs = self._inspect(spec.name)
            if attrs is None:
                try:
                    new_volumes = self._ensure_volumes(spec)
                except FinalError:  # another site's volumes: nothing of ours is left behind
                    self._discard(spec.name, [], config=not had_config_dir)
                    raise
                try:
                    if not self._create(spec, kwargs):
                        # Someone else's create holds the name; on a busy daemon it can stay
                        # uninspectable for a while, so give it time before looking again.
                        time.sleep(0.2 * 2 ** attempt)
                        continue
                    logger.info("created container %s", spec.name)
                    self._start_or_remove(spec)
                except FinalError:
                    self._discard(spec.name, new_volumes, config=not had_config_dir)
                    raise
                return self._observe(spec.name)
            labels = attrs["Config"].get("Labels") or {}
            if labels.get(LABEL_SPEC_HASH) != wanted:
                logger.info("recreating container %s: its spec changed", spec.name)
                self._remove_container(spec.name, stop_first=True)
                continue
            state = attrs["State"]
            if state.get("Dead"):
                self._remove_container(spec.name)
                continue
            if state.get("Paused"):
                with self._translate(spec.name, "unpause"):
                    self.client.api.unpause(spec.name)
                return self._observe(spec.name)
            if state.get("Running") or state.get("Restarting"):
                started = _timestamp_ns(state.get("StartedAt", ""))
                # Compared to the start time, not to "did we write it just now": a worker that
                # died between writing and restarting is caught up by the next ensure.
                if self._config_mtime_ns(spec.name) > started:
                    logger.info("restarting %s to load its new config", spec.name)
                    self._restart(spec)
                    return self._observe(spec.name)
                return self._observe(spec.name, attrs)
            self._start_or_remove(spec)
            logger.info("started container %s", spec.name)
            return self._observe(spec.name)
        raise TransientError(
            f"Container {spec.name} kept changing under a concurrent operation; retry."
        )

    def _restart(self, spec: InstanceSpec) -> None:
        with self._translate(spec.name, "restart"):
            try:
                self.client.api.restart(spec.name, timeout=STOP_TIMEOUT)
            except docker.errors.NotFound:
                raise FinalError(f"No container {spec.name}; create it first.") from None
            except docker.errors.APIError as exc:
                raise self._start_error(spec, exc) from exc

    def _spec_stub(self, name: str, attrs: dict[str, Any]) -> InstanceSpec:
        """Enough of a spec to word start errors (ports) for an existing container."""
        ports = [0, 0]
        bindings = (attrs.get("HostConfig") or {}).get("PortBindings") or {}
        for index, port in enumerate((CHROME_VNC_PORT, TERMINAL_VNC_PORT)):
            with contextlib.suppress(KeyError, IndexError, TypeError, ValueError):
                ports[index] = int(bindings[f"{port}/tcp"][0]["HostPort"])
        return InstanceSpec(name=name, image="", port_chrome=ports[0], port_terminal=ports[1],
                            privileged=bool((attrs.get("HostConfig") or {}).get("Privileged")))

    def start(self, name: str) -> Observed:
        """Start the existing container. FinalError when there is none (call ensure)."""
        attrs = self._inspect(name)
        if attrs is None:
            raise FinalError(f"No container {name}; create the instance first.")
        if not attrs["State"].get("Running"):
            spec = self._spec_stub(name, attrs)
            with self._translate(name, "start"):
                try:
                    self.client.api.start(name)
                except docker.errors.APIError as exc:
                    raise self._start_error(spec, exc) from exc
            logger.info("started container %s", name)
        elif attrs["State"].get("Paused"):
            with self._translate(name, "unpause"):
                self.client.api.unpause(name)
        return self._observe(name)

    def stop(self, name: str) -> Observed:
        """Stop the container (SIGTERM, then SIGKILL after STOP_TIMEOUT). Gone is success."""
        attrs = self._inspect(name)
        if attrs is not None and attrs["State"].get("Running"):
            with self._translate(name, "stop"):
                with contextlib.suppress(docker.errors.NotFound):
                    self.client.api.stop(name, timeout=STOP_TIMEOUT)
            logger.info("stopped container %s", name)
        return self._observe(name)

    def restart(self, name: str) -> Observed:
        """Restart the container (starts it when stopped). FinalError when there is none."""
        attrs = self._inspect(name)
        if attrs is None:
            raise FinalError(f"No container {name}; create the instance first.")
        self._restart(self._spec_stub(name, attrs))
        logger.info("restarted container %s", name)
        return self._observe(name)

    def recreate(self, spec: InstanceSpec) -> Observed:
        """Stop, remove, create, start with the spec's env and config; volumes persist."""
        self._create_kwargs(spec)  # a spec Docker cannot take fails before anything is removed
        self._inspect(spec.name)  # refuses a foreign container of that name
        logger.info("recreating container %s", spec.name)
        self._remove_container(spec.name, stop_first=True)
        return self.ensure(spec)

    def delete(self, name: str, *, purge_volumes: bool = False) -> None:
        """Remove the container and `{config_dir}/{name}`; the volumes too when purging."""
        check_name(name)
        self._inspect(name)  # refuses a foreign container of that name
        self._remove_container(name)
        shutil.rmtree(config_dir_for(self.config_dir, name), ignore_errors=True)
        if purge_volumes:
            with self._translate(name, "remove the volumes of"):
                for volume in volume_names(name).values():
                    try:
                        if not self._ours(self.client.api.inspect_volume(volume).get("Labels")):
                            logger.warning("kept volume %s: it belongs to another site", volume)
                            continue
                        self.client.api.remove_volume(volume)
                    except docker.errors.NotFound:
                        pass
                    except docker.errors.APIError as exc:
                        if exc.status_code == 409:
                            raise TransientError(
                                f"Volume {volume} of {name} is still in use; retry later."
                            ) from exc
                        raise
        logger.info("deleted %s%s", name, " and its volumes" if purge_volumes else "")

    def status(self, name: str) -> Observed:
        """Observed state; exit code for exited containers; last log lines for errors/crashes."""
        check_name(name)
        try:
            return self._observe(name)
        except FinalError as exc:  # a foreign container holds the name
            return Observed(name=name, status=Status.ERROR, message=str(exc))

    def status_all(self) -> dict[str, Observed]:
        """Every container labeled managed-by=claworc, from ONE list call (no log tails)."""
        with self._translate("", "list the containers"):
            entries = self.client.api.containers(
                all=True, filters={"label": f"{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}"}
            )
        # Filtered here, not by the daemon: unlabelled workloads of older versions are ours too.
        observed = (observed_from_list(e) for e in entries if self._ours(e.get("Labels")))
        # The config file is observed state too: deleted or edited on the host, it differs from
        # the spec's and the caller has it rewritten (one stat per instance, no API call).
        found = {item.name: dataclasses.replace(
                     item, config_digest=self._config_file_digest(item.name))
                 for item in observed}
        for gone in set(self._config_digests) - set(found):  # deleted instances: forgotten
            self._config_digests.pop(gone, None)
        return found

    def volumes_all(self) -> dict[str, list[str]]:
        """Every volume labeled managed-by=claworc, by instance, from ONE list call."""
        with self._translate("", "list the volumes"):
            listed = self.client.api.volumes(
                filters={"label": f"{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}"}
            )
        by_instance: dict[str, list[str]] = {}
        for volume in listed.get("Volumes") or []:
            instance = (volume.get("Labels") or {}).get(LABEL_INSTANCE)
            if instance and self._ours(volume.get("Labels")):
                by_instance.setdefault(instance, []).append(volume["Name"])
        return {name: sorted(volumes) for name, volumes in by_instance.items()}

    def logs(self, name: str, lines: int = 100) -> str:
        """The container's last `lines` lines (stdout and stderr); "" when there is none."""
        return self._logs(name, lines)

    # -- images --------------------------------------------------------------------------------

    pulls_images = True

    def local_image(self, image: str) -> str | None:
        """None when the host has no `image`; else its repository digest, from RepoDigests."""
        repository, _ = docker.utils.parse_repository_tag(image)
        with self._translate(image, "inspect the image"):
            try:
                attrs = self.client.api.inspect_image(image)
            except docker.errors.NotFound:  # ImageNotFound is one
                return None
        for entry in attrs.get("RepoDigests") or []:
            name, _, digest = entry.partition("@")
            if name == repository:
                return digest
        return ""

    def resolve_digest(self, image: str, *, auth: RegistryAuth | None = None) -> str:
        """The digest the registry has for the tag now (the daemon asks the registry)."""
        with self._translate(image, "resolve the digest of"):
            try:
                found = self.client.api.inspect_distribution(
                    image, auth_config=self._auth_config(auth))
            except docker.errors.APIError as exc:
                raise pull_error(image, str(exc.explanation or exc)) from exc
        return (found.get("Descriptor") or {}).get("digest", "")

    #: Seconds a pull keeper holds a pull open at most (CLAWORC_PULL_TIMEOUT in the site).
    pull_timeout: int = 3600

    def _pull_keeper(self, repository: str, tag: str,
                     auth: RegistryAuth | None) -> subprocess.Popen:
        """Start orchestrators/pull_keeper.py, which pulls and outlives us if we die."""
        job = {"image": repository, "tag": tag, "base_url": self.base_url,
               "auth": self._auth_config(auth), "timeout": self.pull_timeout}
        try:
            keeper = subprocess.Popen(
                [sys.executable, "-m", "orchestrators.pull_keeper"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            keeper.stdin.write((json.dumps(job) + "\n").encode())
            keeper.stdin.close()
        except OSError as exc:
            raise FinalError(f"Could not start the pull of {repository}:{tag}: {exc}") from exc
        return keeper

    @staticmethod
    def _auth_config(auth: RegistryAuth | None) -> dict[str, str] | None:
        if auth is None:
            return None
        return {"username": auth.username, "password": auth.password}

    def pull(self, image: str, *, auth: RegistryAuth | None = None,
             on_progress=None) -> str:
        """Pull `image` through the daemon, reporting progress summed over layers.

        The pull runs in a pull keeper process (orchestrators/pull_keeper.py) whose events we
        read: a worker that dies leaves it pulling, and pulling again joins that download where
        it is. Stopping on purpose (time limit, error) stops it. Returns the repository digest.
        """
        repository, tag = docker.utils.parse_repository_tag(image)
        tally = PullTally()
        logger.info("pulling image %s", image)
        keeper = self._pull_keeper(repository, tag or "latest", auth)
        try:
            for line in keeper.stdout:
                event = json.loads(line)
                if "refused" in event:  # before the stream began: a registry error
                    raise pull_error(image, event["refused"])
                if "unavailable" in event:
                    raise self._unavailable(image, "pull", RuntimeError(event["unavailable"]))
                tally.feed(event)
                if tally.error:
                    break
                if on_progress is not None:
                    on_progress(tally.progress())
        except BaseException:
            # We stop on purpose (time limit, an error): so does the pull. A worker that dies
            # instead leaves the keeper pulling.
            keeper.kill()
            raise
        finally:
            keeper.stdout.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                keeper.wait(timeout=30)
        if tally.error:
            logger.warning("pull of %s failed: %s", image, tally.error)
            raise pull_error(image, tally.error)
        logger.info("pulled image %s (%s)", image, tally.digest or "no digest")
        return tally.digest or self.image_digest(image)

    #: usage(): one `stats` call per name, nothing else.
    usage_calls_per_name = 1
    usage_fixed_calls = 0

    def usage(self, names: Sequence[str]) -> dict[str, Usage]:
        """One one-shot `docker stats` call per name (no 1-second wait, no stream)."""
        result = {}
        for name in names:
            check_name(name)
            with self._translate(name, "read the usage of"):
                try:
                    stats = self.client.api.stats(name, stream=False, one_shot=True)
                except docker.errors.NotFound:
                    continue
            usage = usage_from_stats(name, stats or {})
            if usage is not None:
                result[name] = usage
        return result

    def volume_sizes(self) -> dict[str, dict[str, int]]:
        """Sizes of the managed volumes from ONE `docker system df` call."""
        with self._translate("", "read the disk usage"):
            data = self.client.api.df()
        sizes: dict[str, dict[str, int]] = {}
        for volume in data.get("Volumes") or []:
            labels = volume.get("Labels") or {}
            if labels.get(LABEL_MANAGED_BY) != MANAGED_BY_VALUE or not labels.get(LABEL_INSTANCE):
                continue
            size = (volume.get("UsageData") or {}).get("Size")
            if size is not None and size >= 0:  # -1: Docker could not tell
                sizes.setdefault(labels[LABEL_INSTANCE], {})[volume["Name"]] = size
        return sizes

    def follow_logs(self, name: str, *, lines: int, seconds: float) -> Iterator[str]:
        """`docker logs --follow --tail lines`, closed after `seconds`."""
        check_name(name)
        with self._translate(name, "follow the logs of"):
            try:
                stream = self.client.api.logs(name, stdout=True, stderr=True, stream=True,
                                              follow=True, tail=lines)
            except docker.errors.NotFound:
                return iter([])
        return bounded_stream(stream, seconds)
