"""The orchestrator interface that every backend (Docker, Kubernetes) implements.

Backends know nothing of Django models: they take an `InstanceSpec` and return `Observed`
state. Every operation is idempotent: "already exists" and "already gone" are success, so a
redelivered or repeated task converges instead of failing or duplicating.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

# Names shared by every backend (ARCHITECTURE.md, "Names and resources").
LABEL_MANAGED_BY = "managed-by"
MANAGED_BY_VALUE = "claworc"
LABEL_INSTANCE = "claworc.instance"
#: The installation (CLAWORC_SITE_ID) a workload belongs to: sites sharing a daemon or a
#: namespace never list, adopt or delete each other's. Absent on workloads made before it
#: existed, which count as the site's own and are labelled at their next converge.
LABEL_SITE = "claworc.site"
CHROME_VNC_PORT = 6081
TERMINAL_VNC_PORT = 6082
CONFIG_MOUNT_PATH = "/etc/clawdbot/clawdbot.json"
CONFIG_FILENAME = "clawdbot.json"
# Order matters: it is the order the seed lists the volumes in.
VOLUME_MOUNTS: dict[str, str] = {
    "clawdbot": "/root/.clawdbot",
    "homebrew": "/home/linuxbrew/.linuxbrew",
    "clawd": "/root/clawd",
    "chrome": "/root/.config/google-chrome",
}


#: Exit codes of a workload stopped on purpose: 0, and SIGKILL / SIGTERM (`docker stop`, a
#: scale-down). Any other non-zero code is a crash, worth its log tail.
STOP_EXIT_CODES = frozenset({0, 128 + 9, 128 + 15})


def is_crash(exit_code: int | None) -> bool:
    """Whether a workload that exited with `exit_code` (None: still running) crashed."""
    return exit_code is not None and exit_code not in STOP_EXIT_CODES


class DesktopAccess(enum.StrEnum):
    """How people reach an instance's desktops (CLAWORC_DESKTOP_ACCESS)."""

    PORTS = "ports"  # published on the node, no login: the seed's behaviour
    BOTH = "both"  # published, and through the dashboard's proxy
    PROXY = "proxy"  # only through the dashboard: nothing published on the node

    @property
    def published(self) -> bool:
        return self is not DesktopAccess.PROXY

    @property
    def proxied(self) -> bool:
        return self is not DesktopAccess.PORTS


class Status(enum.StrEnum):
    """Observed state of an instance's workload."""

    CREATING = "creating"
    RUNNING = "running"
    STOPPED = "stopped"
    ERROR = "error"


@dataclass(frozen=True)
class Resources:
    """Kubernetes quantities: cpu like "500m" or "2", memory like "1Gi"."""

    cpu_request: str = "500m"
    cpu_limit: str = "2000m"
    memory_request: str = "1Gi"
    memory_limit: str = "4Gi"


@dataclass(frozen=True)
class Storage:
    """Volume sizes as Kubernetes quantities (Docker volumes have no size)."""

    clawdbot: str = "5Gi"
    homebrew: str = "10Gi"
    clawd: str = "5Gi"
    chrome: str = "5Gi"


@dataclass(frozen=True)
class InstanceSpec:
    """Everything a backend needs to run one instance.

    `env` holds API keys: it is kept out of repr() so a logged or raised spec leaks nothing.
    """

    name: str
    image: str
    port_chrome: int
    port_terminal: int
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    config: Mapping[str, Any] = field(default_factory=dict, repr=False)
    resources: Resources = field(default_factory=Resources)
    storage: Storage = field(default_factory=Storage)
    privileged: bool = True

    def labels(self) -> dict[str, str]:
        return {LABEL_MANAGED_BY: MANAGED_BY_VALUE, LABEL_INSTANCE: self.name}


#: The resources a budget can bound, named as a Kubernetes ResourceQuota names them.
CAPACITY_RESOURCES = ("requests.cpu", "limits.cpu", "requests.memory", "limits.memory", "pods")


@dataclass(frozen=True)
class HostCapacity:
    """What the instances of one backend may use together, as read from the backend.

    `totals`: per resource of CAPACITY_RESOURCES, the most all instances may hold (CPU in
    cores, memory in bytes, pods as a count); a resource not listed is not bounded.
    `others`: what workloads that are not Claworc's instances already hold of it (a namespace
    shared with other pods). `per_instance_max`: the most one instance may ask for ("cpu",
    "memory"; a LimitRange's max). `host`: the totals are a machine's own CPUs and memory, which
    the overcommit factors may stretch; a quota is a hard limit they never stretch.
    """

    totals: Mapping[str, Decimal] = field(default_factory=dict)
    others: Mapping[str, Decimal] = field(default_factory=dict)
    per_instance_max: Mapping[str, Decimal] = field(default_factory=dict)
    host: bool = False
    #: Where the numbers come from, for people: "docker info", "ResourceQuota compute".
    source: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"totals": {k: str(v) for k, v in self.totals.items()},
                "others": {k: str(v) for k, v in self.others.items()},
                "per_instance_max": {k: str(v) for k, v in self.per_instance_max.items()},
                "host": self.host, "source": self.source}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HostCapacity:
        def numbers(key):
            return {k: Decimal(v) for k, v in (data.get(key) or {}).items()}

        return cls(totals=numbers("totals"), others=numbers("others"),
                   per_instance_max=numbers("per_instance_max"), host=bool(data.get("host")),
                   source=str(data.get("source") or ""))


@dataclass(frozen=True)
class Observed:
    """What a backend saw of one instance at one moment."""

    name: str
    status: Status
    message: str = ""
    exit_code: int | None = None
    log_tail: str = ""
    exists: bool = True
    #: Stable remarks for people, whatever the status (e.g. a volume resize the cluster
    #: refused while the instance runs on): shown with the status, never an error by themselves.
    notes: tuple[str, ...] = ()
    #: Digest of the config the backend holds for the workload (the Docker host's file, the
    #: ConfigMap), comparable with `Orchestrator.config_digest(spec.config)`; "" when it is
    #: missing, None when this observation did not look.
    config_digest: str | None = None


@dataclass(frozen=True)
class Usage:
    """Resource use of one running workload at one moment.

    A backend fills what it can tell: Docker a cumulative CPU time (the caller makes a rate of
    two samples), Kubernetes' metrics API a rate directly. `available` False with a `message`
    says why nothing could be told ("metrics.k8s.io is not served by this cluster").
    """

    name: str
    cpu_seconds_total: float | None = None
    cpu_cores: float | None = None
    memory_bytes: int | None = None
    memory_limit_bytes: int | None = None
    available: bool = True
    message: str = ""


@dataclass(frozen=True)
class VolumeSize:
    """One volume's size in bytes, as far as the backend can tell (None: it cannot).

    Docker knows what a volume uses and has no size limit; a Kubernetes PVC has the size asked
    for (`requested`) and the size provisioned (`capacity`), and what it uses only through the
    kubelet's stats. `note` says why `used` is missing, for people.
    """

    used: int | None = None
    requested: int | None = None
    capacity: int | None = None
    note: str = ""


@dataclass(frozen=True)
class VolumeReport:
    """Sizes of the managed volumes, {instance: {volume name: VolumeSize}}, and the number of
    daemon or API calls it took."""

    sizes: dict[str, dict[str, VolumeSize]]
    calls: int


class OrchestratorError(Exception):
    """Base of backend errors. The message is for a person: it says what to do."""

    transient: ClassVar[bool] = False


class TransientError(OrchestratorError):
    """Retry later: daemon or API unreachable, timeout, conflict with a concurrent change."""

    transient = True


class FinalError(OrchestratorError):
    """A person must act (port taken, bad image, privileged refused); retrying will not help."""


def foreign_site_error(what: str, name: str, where: str, theirs: str, ours: str) -> FinalError:
    """The refusal to take over another site's object of the same name, said the same way by
    every backend: `where` is "on this Docker host", "in namespace claworc"..."""
    return FinalError(
        f"A {what} named {name} belongs to another Claworc installation {where} (site {theirs}; "
        f"this one is {ours}); Claworc will not take it over. Give the instance another name.")


class PullError(FinalError):
    """An image could not be pulled. `cause` names why, for code; the message says it for people.

    Causes: "unreachable" (no answer from the registry), "not_found" (no such repository or
    tag), "unauthorized" (credentials missing or refused), "disk_full" (no space left on the
    host), "timeout" (CLAWORC_PULL_TIMEOUT ran out), "failed" (anything else the daemon said).
    """

    def __init__(self, message: str, *, cause: str = "failed"):
        super().__init__(message)
        self.cause = cause


def registry_of(image: str) -> str:
    """The registry host of an image reference ("docker.io" for Docker Hub names)."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for one registry; the password is kept out of repr()."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class PullProgress:
    """How far a pull has got, summed over the image's layers."""

    bytes_done: int = 0
    bytes_total: int = 0
    layers_done: int = 0
    layers_total: int = 0
    #: The daemon's last word on the pull ("Downloading", "Extracting", "Pull complete").
    phase: str = ""

    @property
    def percent(self) -> int | None:
        """0-100 from the bytes, or None while no layer has said its size yet."""
        if not self.bytes_total:
            return None
        return min(100, int(100 * self.bytes_done / self.bytes_total))


class PortConflict(FinalError):
    """The instance's port pair is taken outside Claworc (a host port, a cluster NodePort).

    Retrying on the same pair will not help; moving the instance to a free pair may.
    `ports` is the (chrome, terminal) pair the backend was asked for.
    """

    def __init__(self, message: str, *, ports: tuple[int, int]):
        super().__init__(message)
        self.ports = tuple(ports)

    @property
    def port_chrome(self) -> int:
        return self.ports[0]

    @property
    def port_terminal(self) -> int:
        return self.ports[1]


class Orchestrator(abc.ABC):
    """One backend. Implementations must be safe to call from several worker processes."""

    backend_name: ClassVar[str]
    #: Whether workloads run privileged; from the backend's own setting, copied into specs.
    privileged: bool = True
    #: Whether desktop ports are published on the node, reached through the dashboard, or both.
    desktop_access: DesktopAccess = DesktopAccess.PORTS

    def desktop_address(self, name: str, container_port: int, node_port: int) -> tuple[str, int]:
        """Where the dashboard reaches the instance's noVNC `container_port` (6081 or 6082):
        (host, port). `node_port` is the instance's allocated port for it.

        May ask the backend (a few seconds at most); TransientError when the workload is not
        reachable now (not running, no address yet).
        """
        raise FinalError(f"The {self.backend_name} backend cannot proxy desktops.")

    def cpu_capacity(self) -> int | None:
        """The most CPUs one workload may be given, or None when the backend sets no such bound
        (a cluster schedules pods onto nodes). May call the backend; implementations cache."""
        return None

    def host_capacity(self) -> HostCapacity | None:
        """What all instances may use together, read from the backend now (one or two calls);
        None when the backend gives no bound. Docker: the daemon's CPUs and memory; Kubernetes:
        the namespace's ResourceQuota and LimitRange. Raises TransientError when it does not
        answer."""
        return None

    @abc.abstractmethod
    def ping(self) -> str:
        """Check the backend answers; return a short description (e.g. "server 20.10.24").

        Raises TransientError when it does not.
        """

    @abc.abstractmethod
    def ensure(self, spec: InstanceSpec) -> Observed:
        """Create what is missing and converge what differs, then make the workload run.

        Repeating it with the same spec changes nothing (same container/deployment). A changed
        env, image, resources or ports is applied, recreating the workload where the backend
        needs to; volumes are never lost. A host port in use or an image that cannot be had is
        a FinalError and leaves no half-made workload behind.
        """

    @abc.abstractmethod
    def start(self, name: str) -> Observed:
        """Run an existing, stopped workload. FinalError when it does not exist (call ensure)."""

    @abc.abstractmethod
    def stop(self, name: str) -> Observed:
        """Stop the workload, keeping it and its volumes. Already stopped or gone is success."""

    @abc.abstractmethod
    def restart(self, name: str) -> Observed:
        """Restart the running workload (start it when stopped)."""

    @abc.abstractmethod
    def recreate(self, spec: InstanceSpec) -> Observed:
        """Replace the workload so it runs with the spec's env and config; volumes persist."""

    @abc.abstractmethod
    def delete(self, name: str, *, purge_volumes: bool = False) -> None:
        """Remove the workload and config; volumes too when purge_volumes. Gone is success."""

    @abc.abstractmethod
    def status(self, name: str) -> Observed:
        """Observed state of one instance; a missing workload is STOPPED with exists=False."""

    @abc.abstractmethod
    def status_all(self) -> dict[str, Observed]:
        """Observed state of every managed instance, keyed by name, in ONE list call.

        Includes managed workloads that have no Instance row: the caller reports those.
        """

    @abc.abstractmethod
    def volumes_all(self) -> dict[str, list[str]]:
        """Every managed volume (Docker volume, PVC) by instance name, in ONE list call.

        Volumes outlive their workload on purpose (delete keeping volumes); the caller reports
        those whose instance is gone.
        """

    def config_digest(self, config: Mapping[str, Any]) -> str | None:
        """The `Observed.config_digest` of a workload whose config is exactly `config`; None
        when the backend's list call does not observe configs (the caller compares nothing)."""
        return None

    @abc.abstractmethod
    def logs(self, name: str, lines: int = 100) -> str:
        """The last `lines` lines of the workload's log ("" when there is none)."""

    # -- images: a backend whose host pulls for it (Docker) says so with `pulls_images` -------

    #: True when Claworc pulls images itself before creating a workload (Docker); False when
    #: the cluster does (Kubernetes: the kubelet pulls, and `pull_events` reports it).
    pulls_images: ClassVar[bool] = False

    def local_image(self, image: str) -> str | None:
        """What the host holds of `image`, from one look: None when it is not there (a pull is
        needed first), else its repository digest ("" when it has none, as a locally built
        image). Backends that do not pull (pulls_images False) answer ""."""
        return ""

    def pull(self, image: str, *, auth: RegistryAuth | None = None,
             on_progress: Callable[[PullProgress], None] | None = None) -> str:
        """Pull `image` onto the host; return its repository digest ("" when it has none).

        `on_progress` is called as the daemon reports, with progress summed over layers.
        What was downloaded before an interrupted pull is kept by the host, so pulling again
        resumes. PullError names the cause; TransientError when the host itself is unreachable.
        """
        raise FinalError(f"The {self.backend_name} backend does not pull images itself.")

    def image_digest(self, image: str) -> str:
        """The repository digest the host holds for `image` ("" when it holds none)."""
        return self.local_image(image) or ""

    def resolve_digest(self, image: str, *, auth: RegistryAuth | None = None) -> str:
        """The digest `image`'s tag points at in its registry now. PullError when unknowable."""
        raise FinalError(f"The {self.backend_name} backend does not resolve image digests.")

    def pull_events(self, name: str) -> list[str]:
        """What the cluster said about pulling the workload's image (newest last); [] if none."""
        return []
    #: A `usage()` call for n names makes at most n * usage_calls_per_name + usage_fixed_calls
    #: daemon or API calls: callers size n to stay within their budget.
    usage_calls_per_name: ClassVar[int] = 0
    usage_fixed_calls: ClassVar[int] = 0

    def usage(self, names: Sequence[str]) -> dict[str, Usage]:
        """CPU and memory of the named workloads, for those it could tell.

        Bounded: at most one daemon/API call per name plus `usage_fixed_calls`, never a
        stream; the caller chooses how many names to pass. Names whose workload is not running
        are left out. The default knows nothing: every name "not available".
        """
        return {name: Usage(name=name, available=False,
                            message=f"{self.backend_name} reports no resource usage")
                for name in names}

    def volume_sizes(self) -> dict[str, dict[str, int]] | None:
        """Bytes used per managed volume, {instance: {volume name: bytes}}, in ONE call; None
        when the backend cannot tell."""
        return None

    def volume_report(self, max_calls: int) -> VolumeReport | None:
        """Sizes of the managed volumes in at most `max_calls` calls; None when the backend
        cannot tell any. The default: what volume_sizes() says, in its one call."""
        if max_calls < 1:
            return None
        sizes = self.volume_sizes()
        if sizes is None:
            return None
        return VolumeReport(sizes={name: {volume: VolumeSize(used=used)
                                          for volume, used in volumes.items()}
                                   for name, volumes in sizes.items()}, calls=1)

    def follow_logs(self, name: str, *, lines: int, seconds: float) -> Iterator[str]:
        """The last `lines` lines, then new lines as they are written, for at most `seconds`.

        Errors reaching the backend are raised by this call, before anything is streamed; the
        iterator then yields chunks of text and ends at the deadline or when the workload goes
        away. The default gives the tail only: backends that can stream override it.
        """
        text = self.logs(name, lines=lines)
        return iter([text] if text else [])
