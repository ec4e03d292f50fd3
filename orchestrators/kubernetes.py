"""Kubernetes backend: one Deployment per instance, with its PVCs, Secret, ConfigMap and Service.

Manifests are built by the pure `build_*` functions below (plain dicts in the API's JSON shape),
and observed state is read from Pods by the pure `observe` function; the orchestrator only moves
them over the official client. Responses are taken as raw JSON (`_preload_content=False`), so
what is compared and mapped is exactly what the API server sent.

Names (ARCHITECTURE.md, "Names and resources"), for instance `bot-mybot` in the namespace:
Deployment `bot-mybot`, PVCs `bot-mybot-{clawdbot,homebrew,clawd,chrome}`, Secret `bot-mybot-keys`,
ConfigMap `bot-mybot-config` (key `clawdbot.json`), Service `bot-mybot-vnc`.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .base import (
    CHROME_VNC_PORT,
    CONFIG_FILENAME,
    CONFIG_MOUNT_PATH,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    MANAGED_BY_VALUE,
    TERMINAL_VNC_PORT,
    VOLUME_MOUNTS,
    DesktopAccess,
    FinalError,
    InstanceSpec,
    Observed,
    Orchestrator,
    OrchestratorError,
    PortConflict,
    Status,
    TransientError,
    Usage,
)
from .quantity import parse_bytes, parse_cpu

log = logging.getLogger(__name__)

LABEL_APP = "app"
CONTAINER_NAME = "agent"
CONFIG_VOLUME = "config"
#: Changing this pod-template annotation makes the Deployment replace its Pod (a restart).
RESTARTED_AT_ANNOTATION = "claworc/restartedAt"
CHROME_CONTAINER_PORT_NAME = "novnc-chrome"
TERMINAL_CONTAINER_PORT_NAME = "novnc-term"
CHROME_SERVICE_PORT_NAME = "chrome"
TERMINAL_SERVICE_PORT_NAME = "terminal"
MERGE_PATCH = "application/merge-patch+json"
#: A waiting container with one of these reasons will not come up by waiting: report an error.
ERROR_WAITING_REASONS = frozenset({
    "CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "ErrImageNeverPull",
    "InvalidImageName", "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
})
PING_TIMEOUT = 5.0
#: What the API server says when a Service asks for a NodePort another Service holds.
_NODE_PORT_TAKEN_RE = re.compile(r"provided port is already allocated", re.IGNORECASE)
_NODE_PORT_RE = re.compile(r"nodePort: Invalid value: (\d+)")


# --- names -------------------------------------------------------------------------------------

def pvc_name(name: str, volume: str) -> str:
    return f"{name}-{volume}"


def secret_name(name: str) -> str:
    return f"{name}-keys"


def config_map_name(name: str) -> str:
    return f"{name}-config"


def service_name(name: str) -> str:
    return f"{name}-vnc"


def labels(name: str) -> dict[str, str]:
    return {LABEL_APP: name, LABEL_MANAGED_BY: MANAGED_BY_VALUE, LABEL_INSTANCE: name}


def selector(name: str) -> dict[str, str]:
    """Pods of the Deployment and endpoints of the Service (immutable once created)."""
    return {LABEL_APP: name}


# --- manifests (pure) --------------------------------------------------------------------------

def _meta(name: str, instance: str, namespace: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": labels(instance)}


def config_json(config: Mapping[str, Any]) -> str:
    return json.dumps(dict(config), indent=2, sort_keys=True) + "\n"


def build_pvcs(spec: InstanceSpec, *, namespace: str) -> list[dict[str, Any]]:
    """The four PVCs, in VOLUME_MOUNTS order, ReadWriteOnce, sized from the spec."""
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": _meta(pvc_name(spec.name, volume), spec.name, namespace),
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": getattr(spec.storage, volume)}},
            },
        }
        for volume in VOLUME_MOUNTS
    ]


def build_secret(spec: InstanceSpec, *, namespace: str) -> dict[str, Any]:
    """The API keys as `data` (base64), read by the container through envFrom."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(secret_name(spec.name), spec.name, namespace),
        "type": "Opaque",
        "data": {key: _b64(value) for key, value in spec.env.items()},
    }


def build_config_map(spec: InstanceSpec, *, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(config_map_name(spec.name), spec.name, namespace),
        "data": {CONFIG_FILENAME: config_json(spec.config)},
    }


def build_deployment(spec: InstanceSpec, *, namespace: str, replicas: int = 1) -> dict[str, Any]:
    """One privileged (per spec) agent container; Recreate, since RWO volumes cannot be shared."""
    name = spec.name
    resources = spec.resources
    container = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "envFrom": [{"secretRef": {"name": secret_name(name)}}],
        "ports": [
            {"name": CHROME_CONTAINER_PORT_NAME, "containerPort": CHROME_VNC_PORT,
             "protocol": "TCP"},
            {"name": TERMINAL_CONTAINER_PORT_NAME, "containerPort": TERMINAL_VNC_PORT,
             "protocol": "TCP"},
        ],
        "volumeMounts": [
            *({"name": volume, "mountPath": path} for volume, path in VOLUME_MOUNTS.items()),
            {"name": CONFIG_VOLUME, "mountPath": CONFIG_MOUNT_PATH, "subPath": CONFIG_FILENAME,
             "readOnly": True},
        ],
        "resources": {
            "requests": {"cpu": resources.cpu_request, "memory": resources.memory_request},
            "limits": {"cpu": resources.cpu_limit, "memory": resources.memory_limit},
        },
        "securityContext": {"privileged": spec.privileged},
        # The agent boots an init system, then Chrome: give it time before restarting it.
        "livenessProbe": {
            "tcpSocket": {"port": CHROME_VNC_PORT},
            "initialDelaySeconds": 30, "periodSeconds": 10, "failureThreshold": 6,
        },
        "readinessProbe": {
            "httpGet": {"path": "/", "port": CHROME_VNC_PORT},
            "initialDelaySeconds": 5, "periodSeconds": 5,
        },
    }
    volumes = [
        *({"name": volume, "persistentVolumeClaim": {"claimName": pvc_name(name, volume)}}
          for volume in VOLUME_MOUNTS),
        {"name": CONFIG_VOLUME, "configMap": {"name": config_map_name(name)}},
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, name, namespace),
        "spec": {
            "replicas": replicas,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector(name)},
            "template": {
                "metadata": {"labels": labels(name)},
                "spec": {"containers": [container], "volumes": volumes},
            },
        },
    }


def build_service(spec: InstanceSpec, *, namespace: str,
                  desktop_access: DesktopAccess = DesktopAccess.PORTS) -> dict[str, Any]:
    """NodePort: the allocated even port to Chrome VNC, the odd one to the terminal. In proxy
    mode a ClusterIP Service instead: the desktops are reached only through the dashboard."""
    chrome = {"name": CHROME_SERVICE_PORT_NAME, "protocol": "TCP", "port": CHROME_VNC_PORT,
              "targetPort": CHROME_VNC_PORT}
    terminal = {"name": TERMINAL_SERVICE_PORT_NAME, "protocol": "TCP",
                "port": TERMINAL_VNC_PORT, "targetPort": TERMINAL_VNC_PORT}
    if DesktopAccess(desktop_access).published:
        chrome["nodePort"] = spec.port_chrome
        terminal["nodePort"] = spec.port_terminal
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(service_name(spec.name), spec.name, namespace),
        "spec": {
            "type": "NodePort" if DesktopAccess(desktop_access).published else "ClusterIP",
            "selector": selector(spec.name),
            "ports": [chrome, terminal],
        },
    }


def restart_patch(now: datetime.datetime | None = None) -> dict[str, Any]:
    """Merge patch that runs the Deployment with one fresh Pod (also when it was scaled to 0)."""
    stamp = (now or datetime.datetime.now(tz=datetime.UTC)).isoformat()
    return {"spec": {"replicas": 1,
                     "template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: stamp}}}}}


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


# --- comparing desired with what the server holds (pure) ---------------------------------------

def _same_quantity(a: Any, b: Any) -> bool:
    for parse in (parse_cpu, parse_bytes):
        try:
            return parse(str(a)) == parse(str(b))
        except ValueError:
            continue
    return False


def covers(actual: Any, desired: Any, *, quantities: bool = False) -> bool:
    """Whether `actual` already has every field `desired` sets (the server adds defaults).

    Lists must match item by item; under `resources`, "2000m" and "2" are the same quantity.
    """
    if isinstance(desired, Mapping):
        if not isinstance(actual, Mapping):
            return False
        return all(
            key in actual and covers(actual[key], value,
                                     quantities=quantities or key == "resources")
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(actual) != len(desired):
            return False
        pairs = zip(actual, desired, strict=True)
        return all(covers(a, d, quantities=quantities) for a, d in pairs)
    if actual == desired:
        return True
    return quantities and _same_quantity(actual, desired)


def data_patch(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any] | None:
    """Patch for a Secret's or ConfigMap's `data`: changed keys, and null for removed ones."""
    existing = existing or {}
    if dict(existing) == dict(desired):
        return None
    return {**desired, **{key: None for key in existing if key not in desired}}


def _storage_bytes(pvc: Mapping[str, Any]) -> int:
    return parse_bytes(pvc["spec"]["resources"]["requests"]["storage"])


# --- observing (pure) --------------------------------------------------------------------------

def _container_status(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        if status.get("name") == CONTAINER_NAME:
            return status
    return statuses[0] if statuses else {}


def _condition(pod: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition
    return {}


def _join(*parts: Any) -> str:
    return ": ".join(str(p) for p in parts if p)


def observe_pod(name: str, pod: Mapping[str, Any]) -> Observed:
    """One Pod's state: Running and Ready → running; Pending or a waiting container → creating;
    Failed/Unknown, CrashLoopBackOff (or another reason in ERROR_WAITING_REASONS) → error."""
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    pod_name = (pod.get("metadata") or {}).get("name", "")
    container = _container_status(pod)
    state = container.get("state") or {}
    last_exit = ((container.get("lastState") or {}).get("terminated") or {}).get("exitCode")

    if phase in ("Failed", "Unknown"):
        terminated = state.get("terminated") or {}
        return Observed(name, Status.ERROR,
                        _join(f"pod {pod_name} {phase}", status.get("reason"),
                              status.get("message") or terminated.get("message")),
                        exit_code=terminated.get("exitCode", last_exit))
    waiting = state.get("waiting")
    if waiting is not None:
        reason = waiting.get("reason") or "Waiting"
        if reason in ERROR_WAITING_REASONS:
            message = _join(reason, waiting.get("message"))
            if last_exit is not None:
                message += f" (last exit code {last_exit})"
            return Observed(name, Status.ERROR, message, exit_code=last_exit)
        return Observed(name, Status.CREATING, _join(reason, waiting.get("message")))
    if phase == "Pending":
        scheduled = _condition(pod, "PodScheduled")
        if scheduled.get("status") == "False":
            return Observed(name, Status.CREATING,
                            _join("Pending", scheduled.get("reason"), scheduled.get("message")))
        return Observed(name, Status.CREATING, f"pod {pod_name} Pending")
    terminated = state.get("terminated")
    if terminated is not None:
        # Between a crash and the kubelet's next restart the container shows as terminated.
        return Observed(name, Status.ERROR,
                        _join("container exited", terminated.get("reason"),
                              terminated.get("message")) +
                        f" (exit code {terminated.get('exitCode')})",
                        exit_code=terminated.get("exitCode"))
    if phase == "Running" and _condition(pod, "Ready").get("status") == "True":
        return Observed(name, Status.RUNNING, f"pod {pod_name} running")
    return Observed(name, Status.CREATING, f"pod {pod_name} {phase}, not ready yet")


def _live_first(pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Pods not being deleted first, newest first (during a Recreate rollout both exist)."""
    def key(pod):
        meta = pod.get("metadata") or {}
        return (meta.get("deletionTimestamp") is None, meta.get("creationTimestamp") or "")
    return sorted(pods, key=key, reverse=True)


def observe(name: str, deployment: Mapping[str, Any] | None,
            pods: Iterable[Mapping[str, Any]]) -> Observed:
    """The instance's state from its Deployment (None when missing) and its Pods."""
    if deployment is None:
        return Observed(name, Status.STOPPED, "no Deployment", exists=False)
    replicas = (deployment.get("spec") or {}).get("replicas", 1)
    pods = _live_first(pods)
    if replicas == 0:
        message = "scaled to 0"
        if pods:
            message += f"; {len(pods)} pod(s) still terminating"
        return Observed(name, Status.STOPPED, message)
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    if not live:
        return Observed(name, Status.CREATING, "waiting for the Deployment to create a pod")
    return observe_pod(name, live[0])


def pods_of(name: str, pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Filter here: a label selector is a request the server may not honour."""
    return [p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(
        LABEL_INSTANCE) == name]


def is_managed(obj: Mapping[str, Any]) -> bool:
    found = (obj.get("metadata") or {}).get("labels") or {}
    return found.get(LABEL_MANAGED_BY) == MANAGED_BY_VALUE and bool(found.get(LABEL_INSTANCE))


_METRIC_CPU_UNITS = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0}


def metric_cpu_cores(value: str) -> float | None:
    """A metrics.k8s.io CPU quantity ("12345678n", "250m", "1") in cores; None if unreadable."""
    value = str(value or "")
    unit = value[-1:] if value[-1:] in "num" else ""
    try:
        return float(value[: len(value) - len(unit)]) * _METRIC_CPU_UNITS[unit]
    except ValueError:
        return None


def usage_from_pod_metrics(items: Iterable[Mapping[str, Any]]) -> dict[str, Usage]:
    """Usage by instance from metrics.k8s.io PodMetrics items (the agent container's)."""
    result = {}
    for item in items:
        instance = ((item.get("metadata") or {}).get("labels") or {}).get(LABEL_INSTANCE)
        if not instance:
            continue
        for container in item.get("containers") or []:
            if container.get("name") != CONTAINER_NAME:
                continue
            use = container.get("usage") or {}
            try:
                memory = parse_bytes(use["memory"]) if use.get("memory") else None
            except ValueError:
                memory = None
            result[instance] = Usage(name=instance, cpu_cores=metric_cpu_cores(use.get("cpu")),
                                     memory_bytes=memory)
    return result


class _Named:
    """What `_call` needs of a kind when it has no typed API (a custom resource)."""

    def __init__(self, label: str):
        self.label = label


# --- the orchestrator --------------------------------------------------------------------------

@dataclass(frozen=True)
class Refused:
    """An HTTP error status the caller expected and handles (404 gone, 409 exists...)."""

    status: int


class _Kind:
    """How to read, create, patch and delete one kind of object with the client."""

    def __init__(self, label: str, api: Any, suffix: str):
        self.label = label
        self.read: Callable = getattr(api, f"read_namespaced_{suffix}")
        self.create: Callable = getattr(api, f"create_namespaced_{suffix}")
        self.patch: Callable = getattr(api, f"patch_namespaced_{suffix}")
        self.delete: Callable = getattr(api, f"delete_namespaced_{suffix}")
        self.list: Callable = getattr(api, f"list_namespaced_{suffix}")


class KubernetesOrchestrator(Orchestrator):
    """Runs each instance as a Deployment in one namespace (CLAWORC_K8S_NAMESPACE)."""

    backend_name = "kubernetes"

    def __init__(self, *, api_client, namespace: str, privileged: bool = True,
                 timeout: float = 10, desktop_access: str = DesktopAccess.PORTS,
                 node_host: str = "127.0.0.1"):
        from kubernetes import client

        self.api_client = api_client
        self.namespace = namespace
        self.privileged = privileged
        self.desktop_access = DesktopAccess(desktop_access)
        self.node_host = node_host
        self.timeout = timeout
        core = client.CoreV1Api(api_client)
        apps = client.AppsV1Api(api_client)
        self._core = core
        self._pvc = _Kind("PersistentVolumeClaim", core, "persistent_volume_claim")
        self._secret = _Kind("Secret", core, "secret")
        self._config_map = _Kind("ConfigMap", core, "config_map")
        self._service = _Kind("Service", core, "service")
        self._deployment = _Kind("Deployment", apps, "deployment")
        self._pod = _Kind("Pod", core, "pod")

    @classmethod
    def from_settings(cls) -> KubernetesOrchestrator:
        """In-cluster config, else the kubeconfig (KUBECONFIG or ~/.kube/config). No network."""
        from django.conf import settings
        from kubernetes import client, config

        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            # The config module reads KUBECONFIG once at import; read it now instead.
            path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
            paths = [p for p in path.split(os.pathsep) if p]
            if not any(os.path.exists(p) for p in paths):
                raise TransientError(
                    f"no in-cluster config, no kubeconfig at {path}") from None
            try:
                config.load_kube_config(config_file=path, client_configuration=configuration)
            except Exception as exc:  # noqa: BLE001 - any loader failure: report it, not crash
                raise TransientError(
                    f"no in-cluster config, kubeconfig at {path} unusable: {exc}") from None
        return cls(api_client=client.ApiClient(configuration),
                   namespace=settings.CLAWORC_K8S_NAMESPACE,
                   privileged=settings.CLAWORC_K8S_PRIVILEGED,
                   desktop_access=getattr(settings, "CLAWORC_DESKTOP_ACCESS", "ports"),
                   node_host=settings.CLAWORC_NODE_IP)

    # --- calling the API -----------------------------------------------------------------------
    def _call(self, verb: str, kind: _Kind, name: str, fn: Callable, *args,
              secrets: Iterable[str] = (), expect: tuple[int, ...] = (404, 409),
              ports: tuple[int, int] | None = None, **kwargs) -> Any:
        """Call the API; return the JSON answer (text with as_json=False), or a `Refused` with
        an HTTP status in `expect`, which the caller knows the meaning of.

        Other failures raise TransientError or FinalError, outside the except block: the
        client's exception (its text holds the whole response) is not kept as their context.
        """
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        as_json = kwargs.pop("as_json", True)
        kwargs.setdefault("_request_timeout", self.timeout)
        error: OrchestratorError | None = None
        try:
            response = fn(*args, _preload_content=False, **kwargs)
        except ApiException as exc:
            if exc.status in expect:
                return Refused(exc.status)
            error = self._api_error(exc, verb, kind.label, name, secrets, ports)
        except (HTTPError, OSError) as exc:
            error = TransientError(
                f"Kubernetes API at {self.api_client.configuration.host} did not answer while "
                f"trying to {verb} {kind.label} {name} ({type(exc).__name__}); retrying later")
        if error is not None:
            raise error
        if not as_json:
            return response.data.decode("utf-8", errors="replace")
        return json.loads(response.data or b"null")

    def _api_error(self, exc, verb: str, kind: str, name: str, secrets: Iterable[str],
                   ports: tuple[int, int] | None = None) -> OrchestratorError:
        try:
            detail = json.loads(exc.body or "{}").get("message") or ""
        except (ValueError, AttributeError):
            detail = ""
        for secret in secrets:
            if secret:
                detail = detail.replace(secret, "***")
        status = exc.status or 0
        what = f"{verb} {kind} {name} in namespace {self.namespace}"
        head = f"Kubernetes answered {status} {exc.reason or ''}".rstrip()
        message = f"{head} to {what}" + (f": {detail}" if detail else "")
        # 409 here is a conflict with a concurrent writer (resourceVersion), not "exists".
        if status >= 500 or status in (0, 409, 429):
            return TransientError(message + "; retrying later")
        if status == 422 and ports and _NODE_PORT_TAKEN_RE.search(detail):
            return self._port_conflict(detail, ports)
        if status in (401, 403):
            message += ("; give the account Claworc uses get/list/create/patch/delete on "
                        "deployments, pods, pods/log, services, secrets, configmaps and "
                        f"persistentvolumeclaims in namespace {self.namespace}")
        return FinalError(message)

    def _port_conflict(self, detail: str, ports: tuple[int, int]) -> PortConflict:
        taken = [int(p) for p in _NODE_PORT_RE.findall(detail) if int(p) in ports]
        named = " and ".join(str(p) for p in taken or ports)
        log.warning("NodePort %s taken by another Service in the cluster", named)
        return PortConflict(
            f"NodePort {named} is already allocated to another Service in the cluster "
            "(NodePorts are cluster-wide: another install, or Kubernetes' own automatic "
            "assignment in the same range, may hold it); the instance needs another port "
            "pair, or change CLAWORC_PORT_START/CLAWORC_PORT_END to a range no other Service "
            "uses.", ports=ports)

    def _read(self, kind: _Kind, name: str) -> dict | None:
        """The object, None when missing; FinalError when it is someone else's."""
        found = self._call("read", kind, name, kind.read, name, self.namespace, expect=(404,))
        if isinstance(found, Refused):
            return None
        if not is_managed(found):
            raise FinalError(
                f"A {kind.label} named {name} exists in namespace {self.namespace} but is not "
                "managed by Claworc (no managed-by=claworc label); rename or remove it, or "
                "give the instance another name.")
        return found

    def _list(self, kind: _Kind, label_selector: str) -> list[dict]:
        listed = self._call("list", kind, label_selector, kind.list, self.namespace,
                            label_selector=label_selector, expect=())
        return listed.get("items") or []

    def _patch(self, kind: _Kind, name: str, body: dict, *, merge: bool = False,
               secrets: Iterable[str] = (), ports: tuple[int, int] | None = None) -> None:
        extra = {"_content_type": MERGE_PATCH} if merge else {}
        answer = self._call("patch", kind, name, kind.patch, name, self.namespace, body,
                            secrets=secrets, ports=ports, **extra)
        if isinstance(answer, Refused):
            what = "disappeared" if answer.status == 404 else "was changed concurrently"
            raise TransientError(f"{kind.label} {name} {what} while being updated; "
                                 "retrying later")

    def _delete(self, kind: _Kind, name: str) -> bool:
        """Delete; False when it was already gone."""
        answer = self._call("delete", kind, name, kind.delete, name, self.namespace,
                            propagation_policy="Background", expect=(404,))
        return not isinstance(answer, Refused)

    def _apply(self, kind: _Kind, desired: dict,
               diff: Callable[[dict, dict], tuple[dict, bool] | None], *,
               secrets: Iterable[str] = (), ports: tuple[int, int] | None = None) -> str:
        """Create `desired`, or patch the existing object with what `diff` says differs.

        Returns "created", "patched" or "unchanged". A 409 on create means someone else created
        it first: read it and converge, like a repeated call would.
        """
        name = desired["metadata"]["name"]
        for _ in range(2):
            existing = self._read(kind, name)
            if existing is None:
                answer = self._call("create", kind, name, kind.create, self.namespace, desired,
                                    secrets=secrets, ports=ports)
                if answer == Refused(409):
                    continue
                if answer == Refused(404):
                    raise FinalError(
                        f"namespace {self.namespace} does not exist: create it (kubectl "
                        f"create namespace {self.namespace}) or set CLAWORC_K8S_NAMESPACE")
                log.info("created %s %s for instance %s", kind.label, name,
                         desired["metadata"]["labels"][LABEL_INSTANCE])
                return "created"
            change = diff(existing, desired)
            if change is None:
                return "unchanged"
            body, merge = change
            self._patch(kind, name, body, merge=merge, secrets=secrets, ports=ports)
            log.info("updated %s %s for instance %s", kind.label, name,
                     desired["metadata"]["labels"][LABEL_INSTANCE])
            return "patched"
        raise TransientError(f"{kind.label} {name} keeps changing concurrently; retrying later")

    # --- diffs: what to patch when the server's object differs --------------------------------
    @staticmethod
    def _labels_patch(existing: dict, desired: dict) -> dict:
        if covers(existing.get("metadata", {}).get("labels") or {}, desired["metadata"]["labels"]):
            return {}
        return {"metadata": {"labels": desired["metadata"]["labels"]}}

    def _diff_data(self, existing: dict, desired: dict):
        data = data_patch(existing.get("data") or {}, desired["data"])
        body = self._labels_patch(existing, desired)
        if data is not None:
            body["data"] = data
        return (body, False) if body else None

    def _diff_pvc(self, existing: dict, desired: dict):
        name = desired["metadata"]["name"]
        try:
            have = _storage_bytes(existing)
        except (KeyError, TypeError, ValueError):
            have = None
        want = _storage_bytes(desired)
        if have is not None and want < have:
            # A PVC cannot shrink: keep the data and say so.
            log.warning("PVC %s is larger than the instance asks for; keeping its size", name)
        body = self._labels_patch(existing, desired)
        if have is not None and want > have:
            body["spec"] = {"resources": {"requests": {
                "storage": desired["spec"]["resources"]["requests"]["storage"]}}}
        return (body, False) if body else None

    def _diff_spec(self, existing: dict, desired: dict, immutable: Iterable[str] = ()):
        spec = {k: v for k, v in desired["spec"].items() if k not in immutable}
        if covers(existing.get("spec") or {}, spec) and not self._labels_patch(existing, desired):
            return None
        # A merge patch replaces lists (containers, ports, volumes) wholesale: they end up
        # exactly as built, where a strategic merge would keep stray items.
        return ({"metadata": {"labels": desired["metadata"]["labels"]}, "spec": spec}, True)

    def _diff_deployment(self, existing: dict, desired: dict):
        return self._diff_spec(existing, desired, immutable=("selector",))

    def _diff_service(self, existing: dict, desired: dict):
        return self._diff_spec(existing, desired)

    def desktop_address(self, name: str, container_port: int, node_port: int) -> tuple[str, int]:
        """The Service's cluster DNS name in proxy mode (the dashboard runs in the cluster);
        otherwise the node port on CLAWORC_NODE_IP. No API call."""
        if self.desktop_access.published:
            return self.node_host, node_port
        return f"{service_name(name)}.{self.namespace}.svc", container_port

    # --- operations ----------------------------------------------------------------------------
    def ping(self) -> str:
        host = self.api_client.configuration.host
        self._call("list", self._config_map, "(ping)", self._core.list_namespaced_config_map,
                   self.namespace, limit=1, expect=(),
                   _request_timeout=min(self.timeout, PING_TIMEOUT))
        return f"API ok at {host}, namespace {self.namespace}"

    def _converge(self, spec: InstanceSpec, *, restart: bool) -> Observed:
        secrets = _secret_forms(spec)
        ns = self.namespace
        for pvc in build_pvcs(spec, namespace=ns):
            self._apply(self._pvc, pvc, self._diff_pvc)
        keys = self._apply(self._secret, build_secret(spec, namespace=ns), self._diff_data,
                           secrets=secrets)
        config = self._apply(self._config_map, build_config_map(spec, namespace=ns),
                             self._diff_data)
        # The Service before the Deployment: a NodePort taken elsewhere fails before any Pod.
        self._apply(self._service, build_service(spec, namespace=ns,
                                                   desktop_access=self.desktop_access),
                    self._diff_service, ports=(spec.port_chrome, spec.port_terminal))
        workload = self._apply(self._deployment, build_deployment(spec, namespace=ns),
                               self._diff_deployment)
        # Pods read envFrom and subPath mounts only when they start.
        if workload != "created" and (restart or "patched" in (keys, config)):
            self._patch(self._deployment, spec.name, restart_patch(), merge=True)
            log.info("restarting instance %s to apply its keys and config", spec.name)
        return self.status(spec.name)

    def ensure(self, spec: InstanceSpec) -> Observed:
        return self._converge(spec, restart=False)

    def recreate(self, spec: InstanceSpec) -> Observed:
        return self._converge(spec, restart=True)

    def _scale_or_restart(self, name: str, body: dict, verb: str) -> Observed:
        if self._read(self._deployment, name) is None:
            raise FinalError(f"instance {name} has no Deployment in namespace {self.namespace} "
                             f"to {verb}; create it first")
        self._patch(self._deployment, name, body, merge=True)
        log.info("%sed instance %s", verb, name)
        return self.status(name)

    def start(self, name: str) -> Observed:
        return self._scale_or_restart(name, {"spec": {"replicas": 1}}, "start")

    def stop(self, name: str) -> Observed:
        deployment = self._read(self._deployment, name)
        if deployment is not None and (deployment.get("spec") or {}).get("replicas") != 0:
            answer = self._call("scale", self._deployment, name, self._deployment.patch, name,
                                self.namespace, {"spec": {"replicas": 0}}, expect=(404,),
                                _content_type=MERGE_PATCH)
            if not isinstance(answer, Refused):
                log.info("stopped instance %s", name)
        return self.status(name)

    def restart(self, name: str) -> Observed:
        return self._scale_or_restart(name, restart_patch(), "restart")

    def delete(self, name: str, *, purge_volumes: bool = False) -> None:
        kinds = [(self._deployment, name), (self._service, service_name(name)),
                 (self._secret, secret_name(name)), (self._config_map, config_map_name(name))]
        if purge_volumes:
            kinds += [(self._pvc, pvc_name(name, volume)) for volume in VOLUME_MOUNTS]
        # Read all first: an object of that name that is not ours stops it before any delete.
        present = [(kind, object_name) for kind, object_name in kinds
                   if self._read(kind, object_name) is not None]
        for kind, object_name in present:
            if self._delete(kind, object_name):
                log.info("deleted %s %s of instance %s", kind.label, object_name, name)

    def _pods(self, name: str) -> list[dict]:
        return pods_of(name, self._list(self._pod, f"{LABEL_INSTANCE}={name}"))

    def status(self, name: str) -> Observed:
        try:
            deployment = self._read(self._deployment, name)
        except FinalError as exc:  # a foreign Deployment holds the name
            return Observed(name, Status.ERROR, str(exc))
        if deployment is None:
            return observe(name, None, [])
        observed = observe(name, deployment, self._pods(name))
        if observed.status is Status.ERROR:
            tail = self._log_tail(name, 20, previous=observed.exit_code is not None)
            if tail:
                observed = Observed(observed.name, observed.status, observed.message,
                                    exit_code=observed.exit_code, log_tail=tail)
        return observed

    def status_all(self) -> dict[str, Observed]:
        """Two list calls, Deployments then Pods, both by the managed-by label.

        Pods alone cannot tell a stopped instance (scaled to 0, no Pods) from none at all.
        """
        managed = f"{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}"
        deployments = [d for d in self._list(self._deployment, managed) if is_managed(d)]
        pods = [p for p in self._list(self._pod, managed) if is_managed(p)]
        by_instance: dict[str, list[dict]] = {}
        for pod in pods:
            by_instance.setdefault(pod["metadata"]["labels"][LABEL_INSTANCE], []).append(pod)
        result = {}
        for deployment in deployments:
            name = deployment["metadata"]["labels"][LABEL_INSTANCE]
            result[name] = observe(name, deployment, by_instance.get(name, []))
        return result

    def volumes_all(self) -> dict[str, list[str]]:
        """Every PVC labeled managed-by=claworc, by instance, from ONE list call."""
        managed = f"{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}"
        by_instance: dict[str, list[str]] = {}
        for pvc in self._list(self._pvc, managed):
            if is_managed(pvc):  # the server may ignore the selector: filter here too
                name = pvc["metadata"]["labels"][LABEL_INSTANCE]
                by_instance.setdefault(name, []).append(pvc["metadata"]["name"])
        return {name: sorted(volumes) for name, volumes in by_instance.items()}

    def _log_tail(self, name: str, lines: int, *, previous: bool = False) -> str:
        pods = _live_first(self._pods(name))
        if not pods:
            return ""
        pod_name = pods[0]["metadata"]["name"]
        kwargs = {"previous": True} if previous else {}
        text = self._call("read logs of", self._pod, pod_name,
                          self._core.read_namespaced_pod_log, pod_name, self.namespace,
                          container=CONTAINER_NAME, tail_lines=lines, as_json=False,
                          expect=(400, 404), **kwargs)
        # 404: the pod is gone; 400: its container has not started, so there is no log yet.
        return "" if isinstance(text, Refused) else text

    def logs(self, name: str, lines: int = 100) -> str:
        return self._log_tail(name, lines)

    #: usage(): one list of PodMetrics, whatever the number of names.
    usage_fixed_calls = 1

    def usage(self, names: Sequence[str]) -> dict[str, Usage]:
        """From metrics.k8s.io (metrics-server) in ONE list call; "not available" when the
        cluster does not serve it."""
        from kubernetes import client

        api = client.CustomObjectsApi(self.api_client)
        listed = self._call("list", _Named("PodMetrics"), self.namespace,
                            api.list_namespaced_custom_object, "metrics.k8s.io", "v1beta1",
                            self.namespace, "pods", expect=(404, 503))
        if isinstance(listed, Refused):
            why = ("not available: the cluster serves no metrics.k8s.io API (install "
                   "metrics-server)")
            return {name: Usage(name=name, available=False, message=why) for name in names}
        wanted = set(names)
        found = usage_from_pod_metrics((listed or {}).get("items") or [])
        return {name: usage for name, usage in found.items() if name in wanted}


def _secret_forms(spec: InstanceSpec) -> list[str]:
    """Every form an API key could take in a server message: as given and base64-encoded."""
    values = [v for v in spec.env.values() if v]
    return [*values, *(_b64(v) for v in values)]
