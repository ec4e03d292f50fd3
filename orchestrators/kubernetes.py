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
import contextlib
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .base import (
    CAPACITY_RESOURCES,
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
    Status,
    TransientError,
    Usage,
    VolumeReport,
    VolumeSize,
    foreign_site_error,
)
from .quantity import parse_bytes, parse_cpu
from .streams import FollowedLog

log = logging.getLogger(__name__)

LABEL_APP = "app"
CONTAINER_NAME = "agent"
CONFIG_VOLUME = "config"
#: Changing this pod-template annotation makes the Deployment replace its Pod (a restart).
RESTARTED_AT_ANNOTATION = "claworc/restartedAt"
#: A hash of the Secret's and ConfigMap's data on the pod template: Pods read envFrom and
#: subPath files only when they start, so a key or config change must roll the Pod, and any
#: later ensure must finish a roll an earlier one could not (the template still differs).
CHECKSUM_ANNOTATION = "claworc/config-checksum"
SEED_CONTAINER_NAME = "seed-volumes"
#: Where the seed init container mounts each PVC, beside the image's own directory.
SEED_MOUNT_ROOT = "/claworc-seed"
#: Left in a volume's root once it has been seeded, so it is seeded once, never again.
SEED_MARKER = ".claworc-seeded"
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
#: kube-apiserver's default --service-node-port-range.
DEFAULT_NODE_PORT_RANGE = (30000, 32767)
#: What the API server says when a Service asks for a NodePort another Service holds.
_NODE_PORT_TAKEN_RE = re.compile(r"provided port is already allocated", re.IGNORECASE)
_NODE_PORT_RE = re.compile(r"nodePort: Invalid value: (\d+)")


def import_client() -> None:
    """Import the client's API classes now (they load lazily, and slowly)."""
    from kubernetes import client

    client.CoreV1Api, client.AppsV1Api  # noqa: B018 - the attribute access is the import


# --- names -------------------------------------------------------------------------------------

def pvc_name(name: str, volume: str) -> str:
    return f"{name}-{volume}"


def secret_name(name: str) -> str:
    return f"{name}-keys"


def config_map_name(name: str) -> str:
    return f"{name}-config"


def service_name(name: str) -> str:
    return f"{name}-vnc"


def labels(name: str, site: str = "") -> dict[str, str]:
    """Every object's labels; `site` (CLAWORC_SITE_ID) tells installations sharing a namespace
    apart."""
    found = {LABEL_APP: name, LABEL_MANAGED_BY: MANAGED_BY_VALUE, LABEL_INSTANCE: name}
    if site:
        found[LABEL_SITE] = site
    return found


def selector(name: str) -> dict[str, str]:
    """Pods of the Deployment and endpoints of the Service (immutable once created).

    Never the site: a Deployment's selector cannot change on a live object, and names are
    unique in a namespace, so `app=<name>` already selects only the one Deployment's Pods."""
    return {LABEL_APP: name}


def managed_selector(site: str = "") -> str:
    """The label selector of every list: Claworc's objects, of this site when it has one."""
    found = f"{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}"
    return f"{found},{LABEL_SITE}={site}" if site else found


# --- cluster options ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ClusterOptions:
    """What a real cluster may need beyond the spec (settings CLAWORC_K8S_*)."""

    #: PVC storageClassName; "" = the cluster's default class.
    storage_class: str = ""
    #: Names of Secrets (type kubernetes.io/dockerconfigjson) in the namespace to pull with.
    image_pull_secrets: tuple[str, ...] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    #: Pod tolerations, in the API's JSON shape.
    tolerations: tuple[Mapping[str, Any], ...] = ()
    #: Copy the image's files into each new, empty PVC before the agent starts (as Docker does
    #: for named volumes).
    seed_volumes: bool = True
    #: This installation's CLAWORC_SITE_ID, a label on every object ("" labels none).
    site: str = ""

    @classmethod
    def from_settings(cls) -> ClusterOptions:
        from django.conf import settings

        return cls(storage_class=settings.CLAWORC_K8S_STORAGE_CLASS,
                   image_pull_secrets=tuple(settings.CLAWORC_K8S_IMAGE_PULL_SECRETS),
                   node_selector=dict(settings.CLAWORC_K8S_NODE_SELECTOR),
                   tolerations=tuple(settings.CLAWORC_K8S_TOLERATIONS),
                   seed_volumes=settings.CLAWORC_K8S_SEED_VOLUMES,
                   site=getattr(settings, "CLAWORC_SITE_ID", ""))


DEFAULT_OPTIONS = ClusterOptions()


def build_all(spec: InstanceSpec, *, namespace: str, options: ClusterOptions = DEFAULT_OPTIONS,
              desktop_access: DesktopAccess = DesktopAccess.PORTS) -> list[dict[str, Any]]:
    """Every object of the instance, in the order ensure applies them."""
    return [
        *build_pvcs(spec, namespace=namespace, options=options),
        build_secret(spec, namespace=namespace, options=options),
        build_config_map(spec, namespace=namespace, options=options),
        build_service(spec, namespace=namespace, desktop_access=desktop_access, options=options),
        build_deployment(spec, namespace=namespace, options=options),
    ]


# --- manifests (pure) --------------------------------------------------------------------------

def _meta(name: str, instance: str, namespace: str, site: str = "") -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": labels(instance, site)}


def config_json(config: Mapping[str, Any]) -> str:
    return json.dumps(dict(config), indent=2, sort_keys=True) + "\n"


def config_digest_of(text: str) -> str:
    """The digest status_all reports for a ConfigMap whose clawdbot.json is `text` ("" when
    the key is gone)."""
    return hashlib.sha256(text.encode()).hexdigest() if text else ""


def build_pvcs(spec: InstanceSpec, *, namespace: str,
               options: ClusterOptions = DEFAULT_OPTIONS) -> list[dict[str, Any]]:
    """The four PVCs, in VOLUME_MOUNTS order, ReadWriteOnce, sized from the spec."""
    pvcs = []
    for volume in VOLUME_MOUNTS:
        pvc_spec: dict[str, Any] = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": getattr(spec.storage, volume)}},
        }
        if options.storage_class:
            pvc_spec["storageClassName"] = options.storage_class
        pvcs.append({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": _meta(pvc_name(spec.name, volume), spec.name, namespace, options.site),
            "spec": pvc_spec,
        })
    return pvcs


def build_secret(spec: InstanceSpec, *, namespace: str,
                 options: ClusterOptions = DEFAULT_OPTIONS) -> dict[str, Any]:
    """The API keys as `data` (base64), read by the container through envFrom."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(secret_name(spec.name), spec.name, namespace, options.site),
        "type": "Opaque",
        "data": {key: _b64(value) for key, value in spec.env.items()},
    }


def build_config_map(spec: InstanceSpec, *, namespace: str,
                     options: ClusterOptions = DEFAULT_OPTIONS) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(config_map_name(spec.name), spec.name, namespace, options.site),
        "data": {CONFIG_FILENAME: config_json(spec.config)},
    }


def config_checksum(spec: InstanceSpec) -> str:
    """sha256 of the Secret's and ConfigMap's data as built: changes exactly when they do."""
    data = {"secret": build_secret(spec, namespace="")["data"],
            "configmap": build_config_map(spec, namespace="")["data"]}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def seed_script(pairs: Iterable[tuple[str, str]]) -> str:
    """Shell that copies each image directory `src` into its volume `dst`, once.

    Only a volume that is empty (a new filesystem's lost+found aside) is filled; the copy keeps
    owners and modes, and the volume's root takes the directory's. A marker file then says it is
    done, so files a person deletes later are not brought back.
    """
    lines = [
        "set -e",
        "seed() {",
        f'  [ -e "$2/{SEED_MARKER}" ] && return 0',
        '  if [ -d "$1" ] && [ -z "$(ls -A "$2" | grep -v \'^lost+found$\' || true)" ]; then',
        '    cp -a "$1/." "$2/"',
        '    chown "$(stat -c %u:%g "$1")" "$2"',
        '    chmod "$(stat -c %a "$1")" "$2"',
        "  fi",
        f'  touch "$2/{SEED_MARKER}"',
        "}",
    ]
    lines += [f"seed '{src}' '{dst}'" for src, dst in pairs]
    return "\n".join(lines) + "\n"


def _seed_container(spec: InstanceSpec, resources: dict[str, Any]) -> dict[str, Any]:
    pairs = [(path, f"{SEED_MOUNT_ROOT}/{volume}") for volume, path in VOLUME_MOUNTS.items()]
    return {
        "name": SEED_CONTAINER_NAME,
        "image": spec.image,
        "command": ["/bin/sh", "-c", seed_script(pairs)],
        "volumeMounts": [{"name": volume, "mountPath": f"{SEED_MOUNT_ROOT}/{volume}"}
                         for volume in VOLUME_MOUNTS],
        # Same as the agent's: a ResourceQuota or LimitRange then accepts it as it does the pod.
        "resources": resources,
    }


def build_deployment(spec: InstanceSpec, *, namespace: str, replicas: int = 1,
                     options: ClusterOptions = DEFAULT_OPTIONS) -> dict[str, Any]:
    """One privileged (per spec) agent container; Recreate, since RWO volumes cannot be shared."""
    name = spec.name
    resources = spec.resources
    container_resources = {
        "requests": {"cpu": resources.cpu_request, "memory": resources.memory_request},
        "limits": {"cpu": resources.cpu_limit, "memory": resources.memory_limit},
    }
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
        "resources": container_resources,
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
    pod_spec: dict[str, Any] = {
        # Agents run privileged code and need no API access: without this, a Role ever bound
        # to the namespace's default account would let every agent read every instance's keys.
        "automountServiceAccountToken": False,
        "containers": [container],
        "volumes": volumes,
    }
    if options.seed_volumes:
        pod_spec["initContainers"] = [_seed_container(spec, container_resources)]
    if options.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in options.image_pull_secrets]
    if options.node_selector:
        pod_spec["nodeSelector"] = dict(options.node_selector)
    if options.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in options.tolerations]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, name, namespace, options.site),
        "spec": {
            "replicas": replicas,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector(name)},
            "template": {
                "metadata": {"labels": labels(name, options.site),
                             "annotations": {CHECKSUM_ANNOTATION: config_checksum(spec)}},
                "spec": pod_spec,
            },
        },
    }


def build_service(spec: InstanceSpec, *, namespace: str,
                  desktop_access: DesktopAccess = DesktopAccess.PORTS,
                  options: ClusterOptions = DEFAULT_OPTIONS) -> dict[str, Any]:
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
        "metadata": _meta(service_name(spec.name), spec.name, namespace, options.site),
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


def check_resources(spec: InstanceSpec) -> None:
    """FinalError, before anything is made, for what the API server would refuse."""
    res = spec.resources
    problems = []
    for what, request, limit, parse in (("CPU", res.cpu_request, res.cpu_limit, parse_cpu),
                                        ("memory", res.memory_request, res.memory_limit,
                                         parse_bytes)):
        try:
            if parse(request) > parse(limit):
                problems.append(f"the {what} request {request} is above its limit {limit}")
        except ValueError as exc:
            problems.append(f"{what}: {exc}")
    for volume in VOLUME_MOUNTS:
        size = getattr(spec.storage, volume)
        try:
            parse_bytes(size)
        except ValueError:
            problems.append(f"the {volume} volume size {size!r} is not a quantity")
    if problems:
        raise FinalError(f"Instance {spec.name} cannot run on Kubernetes: "
                         + "; ".join(problems) + ".")


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


def _memory_limit(pod: Mapping[str, Any]) -> str:
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") == CONTAINER_NAME:
            return ((container.get("resources") or {}).get("limits") or {}).get("memory", "")
    return ""


def _oom_note(pod: Mapping[str, Any], *terminated: Mapping[str, Any] | None) -> str:
    """Name an out-of-memory kill, which an exit code (137) alone does not say."""
    if not any((t or {}).get("reason") == "OOMKilled" for t in terminated):
        return ""
    limit = _memory_limit(pod)
    return (" The container was killed for running out of memory (OOMKilled"
            + (f", memory limit {limit}" if limit else "")
            + "): raise the instance's memory limit.")


def observe_pod(name: str, pod: Mapping[str, Any],
                events: Iterable[Mapping[str, Any]] = ()) -> Observed:
    """One Pod's state: Running and Ready → running; Pending or a waiting container → creating;
    Failed/Unknown, CrashLoopBackOff (or another reason in ERROR_WAITING_REASONS) → error.

    `events` are the namespace's Warning events: the Pod's newest one explains a Pod that stays
    Pending or creating (FailedScheduling, FailedMount…)."""
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    pod_name = (pod.get("metadata") or {}).get("name", "")
    container = _container_status(pod)
    state = container.get("state") or {}
    last_terminated = (container.get("lastState") or {}).get("terminated") or {}
    last_exit = last_terminated.get("exitCode")
    oom = _oom_note(pod, last_terminated, state.get("terminated"))

    if phase in ("Failed", "Unknown"):
        terminated = state.get("terminated") or {}
        return Observed(name, Status.ERROR,
                        _join(f"pod {pod_name} {phase}", status.get("reason"),
                              status.get("message") or terminated.get("message")) + oom,
                        exit_code=terminated.get("exitCode", last_exit))
    waiting = state.get("waiting")
    if waiting is not None:
        reason = waiting.get("reason") or "Waiting"
        if reason in ERROR_WAITING_REASONS:
            message = _join(reason, waiting.get("message"))
            if last_exit is not None:
                message += f" (last exit code {last_exit})"
            return Observed(name, Status.ERROR, message + oom, exit_code=last_exit)
        event = _newest_event(events, "Pod", lambda n: n == pod_name)
        return Observed(name, Status.CREATING,
                        _join(reason, waiting.get("message") or _event_text(event)))
    if phase == "Pending":
        scheduled = _condition(pod, "PodScheduled")
        event = _newest_event(events, "Pod", lambda n: n == pod_name)
        if scheduled.get("status") == "False":
            return Observed(name, Status.CREATING, unschedulable_message(
                pod, scheduled.get("message") or "") or _join(
                "Pending", scheduled.get("reason"), scheduled.get("message")))
        if event is not None and event.get("reason") == "FailedScheduling":
            waiting_for = unschedulable_message(pod, event.get("message") or "")
            if waiting_for:
                return Observed(name, Status.CREATING, waiting_for)
        return Observed(name, Status.CREATING,
                        _join(f"pod {pod_name} Pending", _event_text(event)))
    terminated = state.get("terminated")
    if terminated is not None:
        # Between a crash and the kubelet's next restart the container shows as terminated.
        return Observed(name, Status.ERROR,
                        _join("container exited", terminated.get("reason"),
                              terminated.get("message")) +
                        f" (exit code {terminated.get('exitCode')})" + oom,
                        exit_code=terminated.get("exitCode"))
    if phase == "Running" and _condition(pod, "Ready").get("status") == "True":
        return Observed(name, Status.RUNNING, f"pod {pod_name} running")
    return Observed(name, Status.CREATING, f"pod {pod_name} {phase}, not ready yet")


_EPOCH = datetime.datetime.min.replace(tzinfo=datetime.UTC)


def _parse_time(text: str | None) -> datetime.datetime:
    """An API timestamp ("2026-01-02T03:04:05Z", with or without fractions); the epoch if none."""
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return _EPOCH


def _event_time(event: Mapping[str, Any]) -> datetime.datetime:
    return _parse_time(event.get("lastTimestamp") or event.get("eventTime")
                       or (event.get("metadata") or {}).get("creationTimestamp"))


def _newest_event(events: Iterable[Mapping[str, Any]], kind: str,
                  matches: Callable[[str], bool]) -> Mapping[str, Any] | None:
    """The newest Warning event about an object of `kind` whose name `matches`."""
    found = [e for e in events
             if e.get("type") == "Warning"
             and (e.get("involvedObject") or {}).get("kind") == kind
             and matches((e.get("involvedObject") or {}).get("name") or "")]
    return max(found, key=_event_time) if found else None


def _event_text(event: Mapping[str, Any] | None) -> str:
    return _join(event.get("reason"), event.get("message")) if event else ""


#: What the kubelet records about pulling a Pod's image ("Failed" only when about the image).
PULL_EVENT_REASONS = {"Pulling", "Pulled", "Failed", "BackOff", "ErrImagePull",
                      "ImagePullBackOff", "ErrImageNeverPull", "InspectFailed"}


def pull_event_lines(events: Iterable[Mapping[str, Any]], pod_names: Iterable[str],
                     limit: int = 10) -> list[str]:
    """The image-pull events of these Pods, oldest first: "12:00:03 Pulling: Pulling image …"."""
    pods = set(pod_names)
    found = [e for e in events
             if (e.get("involvedObject") or {}).get("kind") == "Pod"
             and (e.get("involvedObject") or {}).get("name") in pods
             and e.get("reason") in PULL_EVENT_REASONS
             and (e.get("reason") != "Failed" or "image" in (e.get("message") or "").lower())]
    found.sort(key=_event_time)
    return [f"{_clock(e)} {_event_text(e)}".strip() for e in found[-limit:]]


def _clock(event: Mapping[str, Any]) -> str:
    when = _event_time(event)
    return "" if when == _EPOCH else when.strftime("%H:%M:%S")


def refusal_hint(message: str, namespace: str) -> str:
    """What to do about the usual reasons a cluster refuses to create a Pod."""
    if "PodSecurity" in message:
        return (f" The namespace {namespace} must allow privileged pods: kubectl label "
                f"namespace {namespace} pod-security.kubernetes.io/enforce=privileged "
                "(or set CLAWORC_K8S_PRIVILEGED=false where the agent can run without it).")
    if "exceeded quota" in message or "must specify" in message:
        return (f" A ResourceQuota in namespace {namespace} refuses it: raise the quota, or "
                "lower the instance's CPU/memory or stop another instance.")
    if "admission webhook" in message:
        return " An admission webhook refuses it: ask the cluster's administrators."
    return ""


def _live_first(pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Pods not being deleted first, newest first (during a Recreate rollout both exist)."""
    def key(pod):
        meta = pod.get("metadata") or {}
        return (meta.get("deletionTimestamp") is None, meta.get("creationTimestamp") or "")
    return sorted(pods, key=key, reverse=True)


def _deployment_condition(deployment: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition
    return {}


def refused(name: str, deployment: Mapping[str, Any],
            events: Iterable[Mapping[str, Any]] = (), *, namespace: str = "") -> str:
    """Why the cluster will not create the Deployment's Pod, or "" when nothing says so.

    Admission refusals (Pod Security, a ResourceQuota, a webhook) never make a Pod: the
    ReplicaSet's ReplicaFailure condition (which the Deployment copies) and its FailedCreate
    events are the only trace. A rollout past its deadline says so on the Deployment.
    """
    failure = _deployment_condition(deployment, "ReplicaFailure")
    if failure.get("status") == "True" and failure.get("message"):
        message = failure["message"]
    else:
        # ReplicaSets are named <deployment>-<pod-template-hash>; events live an hour, so one
        # from an earlier Deployment of the same name must not count.
        born = _parse_time((deployment.get("metadata") or {}).get("creationTimestamp"))
        event = _newest_event([e for e in events if _event_time(e) >= born], "ReplicaSet",
                              lambda n: n.startswith(f"{name}-") and "-" not in n[len(name) + 1:])
        if event is not None and event.get("reason") == "FailedCreate":
            message = event.get("message") or ""
        else:
            progressing = _deployment_condition(deployment, "Progressing")
            if progressing.get("reason") != "ProgressDeadlineExceeded":
                return ""
            message = progressing.get("message") or "ProgressDeadlineExceeded"
    message = message.removeprefix("Error creating: ")
    return (f"Kubernetes refused to create the pod: {message}."
            + refusal_hint(message, namespace or "of the instance"))


def needs_events(deployment: Mapping[str, Any] | None,
                 pods: Iterable[Mapping[str, Any]]) -> bool:
    """Whether a running-wanted instance has no ready Pod, so its Warning events may say why."""
    if deployment is None or (deployment.get("spec") or {}).get("replicas", 1) == 0:
        return False
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    return not live or observe_pod("", live[0]).status is Status.CREATING


def observe(name: str, deployment: Mapping[str, Any] | None,
            pods: Iterable[Mapping[str, Any]], events: Iterable[Mapping[str, Any]] = (), *,
            namespace: str = "") -> Observed:
    """The instance's state from its Deployment (None when missing), its Pods and the
    namespace's Warning events (only read when there is no ready Pod; see needs_events)."""
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
        reason = refused(name, deployment, events, namespace=namespace)
        if reason:
            return Observed(name, Status.ERROR, reason)
        return Observed(name, Status.CREATING, "waiting for the Deployment to create a pod")
    return observe_pod(name, live[0], events)


def pods_of(name: str, pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Filter here: a label selector is a request the server may not honour."""
    return [p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(
        LABEL_INSTANCE) == name]


def is_managed(obj: Mapping[str, Any]) -> bool:
    found = (obj.get("metadata") or {}).get("labels") or {}
    return found.get(LABEL_MANAGED_BY) == MANAGED_BY_VALUE and bool(found.get(LABEL_INSTANCE))


def site_of(obj: Mapping[str, Any]) -> str:
    """The site label of an object; "" on one made before sites existed."""
    return ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_SITE) or ""


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


# --- capacity (pure) -----------------------------------------------------------------------------

#: ResourceQuota names that mean the same as the budget's ("cpu" is requests.cpu).
_QUOTA_ALIASES = {"cpu": "requests.cpu", "memory": "requests.memory"}


def quantity(resource: str, value: Any) -> Decimal | None:
    """A quota quantity as a number: cores for CPU, bytes for memory, a count for pods; None
    when it cannot be read (a form this code does not know is left unbounded, not guessed)."""
    text = str(value if value is not None else "").strip()
    if text in ("0", "0m", "0.0"):
        return Decimal(0)
    try:
        if resource.endswith("cpu"):
            return parse_cpu(text)
        if resource.endswith("memory"):
            return Decimal(parse_bytes(text))
        return Decimal(int(text))
    except (ValueError, ArithmeticError):
        return None


def pod_resources(pod: Mapping[str, Any]) -> dict[str, Decimal]:
    """What one Pod holds of a quota's resources (its containers' requests and limits)."""
    held = {"pods": Decimal(1)}
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        for kind in ("requests", "limits"):
            for what in ("cpu", "memory"):
                value = quantity(what, (resources.get(kind) or {}).get(what))
                if value:
                    held[f"{kind}.{what}"] = held.get(f"{kind}.{what}", Decimal(0)) + value
    return held


def capacity_from_quotas(quotas: Iterable[Mapping[str, Any]],
                         limit_ranges: Iterable[Mapping[str, Any]] = (),
                         managed_pods: Iterable[Mapping[str, Any]] = (), *,
                         namespace: str = "") -> HostCapacity | None:
    """The budget a namespace's ResourceQuotas and LimitRanges allow Claworc.

    Per resource, the quota with the least left (hard − used) binds. What it counts as used
    beyond Claworc's own Pods (`managed_pods`) is held by other workloads (`others`): Claworc
    counts its own instances itself, from what it was asked to run, so that one started a
    moment ago and not yet a Pod is counted too. A LimitRange's Container max bounds one
    instance. None when the namespace sets neither.
    """
    ours: dict[str, Decimal] = {}
    for pod in managed_pods:
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue  # a finished Pod holds no quota
        for key, value in pod_resources(pod).items():
            ours[key] = ours.get(key, Decimal(0)) + value
    totals: dict[str, Decimal] = {}
    others: dict[str, Decimal] = {}
    left: dict[str, Decimal] = {}
    names = []
    for quota in quotas:
        status = quota.get("status") or {}
        hard = status.get("hard") or (quota.get("spec") or {}).get("hard") or {}
        used = status.get("used") or {}
        counted = False
        for raw_key, raw_hard in hard.items():
            key = _QUOTA_ALIASES.get(raw_key, raw_key)
            if key not in CAPACITY_RESOURCES:
                continue
            limit = quantity(key, raw_hard)
            if limit is None:
                continue
            in_use = quantity(key, used.get(raw_key, "0")) or Decimal(0)
            if key in left and limit - in_use >= left[key]:
                continue
            counted = True
            left[key] = limit - in_use
            totals[key] = limit
            others[key] = max(Decimal(0), in_use - ours.get(key, Decimal(0)))
        if counted:
            names.append((quota.get("metadata") or {}).get("name") or "?")
    per_instance: dict[str, Decimal] = {}
    for limit_range in limit_ranges:
        for item in (limit_range.get("spec") or {}).get("limits") or []:
            if item.get("type") != "Container":
                continue
            for what, raw in (item.get("max") or {}).items():
                value = quantity(what, raw)
                if what in ("cpu", "memory") and value is not None:
                    per_instance[what] = min(value, per_instance.get(what, value))
    if not totals and not per_instance:
        return None
    where = f" in namespace {namespace}" if namespace else ""
    source = (f"ResourceQuota {', '.join(sorted(names))}{where}" if names
              else f"LimitRange{where}")
    return HostCapacity(totals=totals, others={k: v for k, v in others.items() if v},
                        per_instance_max=per_instance, source=source)


_INSUFFICIENT = re.compile(r"Insufficient (cpu|memory)")


def _pod_requests(pod: Mapping[str, Any]) -> tuple[str, str]:
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") == CONTAINER_NAME:
            requests = (container.get("resources") or {}).get("requests") or {}
            return str(requests.get("cpu") or ""), str(requests.get("memory") or "")
    return "", ""


def unschedulable_message(pod: Mapping[str, Any], detail: str) -> str:
    """What staff read for a Pod no node can take: "waiting: the cluster has no node with 2 CPU
    free (0/3 nodes available: 3 Insufficient cpu)"; "" when `detail` is not about capacity."""
    short = sorted(set(_INSUFFICIENT.findall(detail or "")))
    if not short:
        return ""
    cpu, memory = _pod_requests(pod)
    wanted = []
    if "cpu" in short:
        cores = quantity("cpu", cpu) if cpu else None
        wanted.append(f"{_number(cores)} CPU" if cores is not None else "the CPU it requests")
    if "memory" in short:
        size = quantity("memory", memory) if memory else None
        wanted.append(f"{_number(size / 2**30)} GiB of memory" if size is not None
                      else "the memory it requests")
    return (f"waiting: the cluster has no node with {' and '.join(wanted)} free "
            f"({detail.strip().rstrip('.')})")


def _number(value: Decimal) -> str:
    return format(value.quantize(Decimal("0.01")).normalize(), "f")


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

    def __init__(self, label: str, api: Any = None, suffix: str = ""):
        self.label = label
        if api is None:
            return
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
                 node_host: str = "127.0.0.1", options: ClusterOptions = DEFAULT_OPTIONS,
                 port_range: tuple[int, int] | None = None,
                 node_port_range: tuple[int, int] = DEFAULT_NODE_PORT_RANGE,
                 site_per_pod: bool = False):
        from kubernetes import client

        self.api_client = api_client
        self.namespace = namespace
        self.privileged = privileged
        self.desktop_access = DesktopAccess(desktop_access)
        self.node_host = node_host
        self.timeout = timeout
        self.options = options
        #: CLAWORC_SITE_ID: objects of another site in the namespace are never listed, adopted
        #: or deleted; ours without the label (made before sites existed) are adopted.
        self.site = options.site
        self.port_range = port_range
        self.node_port_range = node_port_range
        #: Running in a cluster with no CLAWORC_SITE_ID set: the site id was generated into
        #: this pod's data directory (see site_warning).
        self.site_per_pod = site_per_pod
        core = client.CoreV1Api(api_client)
        apps = client.AppsV1Api(api_client)
        self._core = core
        self._pvc = _Kind("PersistentVolumeClaim", core, "persistent_volume_claim")
        self._secret = _Kind("Secret", core, "secret")
        self._config_map = _Kind("ConfigMap", core, "config_map")
        self._service = _Kind("Service", core, "service")
        self._deployment = _Kind("Deployment", apps, "deployment")
        self._pod = _Kind("Pod", core, "pod")
        self._event = _Kind("Event", core, "event")
        self._quota = _Kind("ResourceQuota", core, "resource_quota")
        self._limit_range = _Kind("LimitRange", core, "limit_range")
        self._namespace = _Kind("Namespace")  # read only (read_namespace), for ping

    @classmethod
    def from_settings(cls) -> KubernetesOrchestrator:
        """In-cluster config, else the kubeconfig (KUBECONFIG or ~/.kube/config). No network."""
        from django.conf import settings
        from kubernetes import client, config

        configuration = client.Configuration()
        in_cluster = True
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            in_cluster = False
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
                   node_host=settings.CLAWORC_NODE_IP,
                   options=ClusterOptions.from_settings(),
                   port_range=(settings.CLAWORC_PORT_START, settings.CLAWORC_PORT_END),
                   node_port_range=tuple(settings.CLAWORC_K8S_NODE_PORT_RANGE),
                   site_per_pod=in_cluster and not os.environ.get("CLAWORC_SITE_ID", "").strip())

    # --- calling the API -----------------------------------------------------------------------
    def _call(self, verb: str, kind: _Kind, name: str, fn: Callable, *args,
              secrets: Iterable[str] = (), expect: tuple[int, ...] = (404, 409),
              ports: tuple[int, int] | None = None, **kwargs) -> Any:
        """Call the API; return the JSON answer (text with as_json=False), or a `Refused` with
        an HTTP status in `expect`, which the caller knows the meaning of.

        Other failures raise TransientError or FinalError, outside the except block: the
        client's exception (its text holds the whole response) is not kept as their context.
        With raw=True the answer is the unread HTTP response, for a stream the caller reads.
        """
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        as_json = kwargs.pop("as_json", True)
        raw = kwargs.pop("raw", False)
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
        if raw:
            return response
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
        if status in (401, 403) and " cannot " in detail or status == 401:
            message += ("; give the account Claworc uses the Role in deploy/rbac.yaml (the "
                        "verbs on deployments, persistentvolumeclaims, secrets, configmaps, "
                        f"services, pods, pods/log and events it lists) in namespace "
                        f"{self.namespace}")
        error = FinalError(message)
        error.http_status = status
        return error

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
        theirs = site_of(found)
        if self.site and theirs and theirs != self.site:
            raise foreign_site_error(kind.label, name, f"in namespace {self.namespace}", theirs,
                                     self.site)
        return found

    def _mine(self, obj: Mapping[str, Any]) -> bool:
        """Listed objects: ours and labelled with this site (the server may ignore selectors)."""
        return is_managed(obj) and (not self.site or site_of(obj) == self.site)

    def _list_mine(self, kind: _Kind) -> list[dict]:
        return [o for o in self._list(kind, managed_selector(self.site)) if self._mine(o)]

    def _unlabelled_deployments(self) -> list[dict]:
        """Deployments made before sites existed (no site label): this site's own, adopted by
        their next converge. One list call, which finds nothing once all are labelled."""
        if not self.site:
            return []
        found = self._list(self._deployment,
                           f"{LABEL_MANAGED_BY}={MANAGED_BY_VALUE},!{LABEL_SITE}")
        return [d for d in found if is_managed(d) and not site_of(d)]

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
            if (existing.get("metadata") or {}).get("deletionTimestamp"):
                # Recreating on top of a dying object (a PVC of a purge, say) would attach the
                # new Pod to it: wait until the deletion has finished.
                raise TransientError(
                    f"{kind.label} {name} is still being deleted (Terminating); it is created "
                    "again once the deletion has finished, retrying later")
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

    def _diff_pvc(self, existing: dict, desired: dict, grow: list | None = None):
        """Labels only; a bigger size is noted in `grow` and asked for apart (_grow_pvc)."""
        name = desired["metadata"]["name"]
        try:
            have = _storage_bytes(existing)
        except (KeyError, TypeError, ValueError):
            have = None
        want = _storage_bytes(desired)
        if have is not None and want < have:
            # A PVC cannot shrink: keep the data and say so.
            log.warning("PVC %s is larger than the instance asks for; keeping its size", name)
        if have is not None and want > have and grow is not None:
            grow.append((name, existing["spec"]["resources"]["requests"]["storage"],
                         desired["spec"]["resources"]["requests"]["storage"]))
        body = self._labels_patch(existing, desired)
        return (body, False) if body else None

    def _grow_pvc(self, instance: str, name: str, have: str, want: str) -> str:
        """Ask for a bigger PVC; "" when accepted, a note for people when the cluster refuses.

        A storage class without allowVolumeExpansion answers 403, an unbound claim 422: the
        instance keeps running on its current size, and the note says so.
        """
        try:
            self._patch(self._pvc, name,
                        {"spec": {"resources": {"requests": {"storage": want}}}})
        except FinalError as exc:
            status = getattr(exc, "http_status", None)
            if status not in (403, 422):
                raise
            detail = str(exc).split(f"namespace {self.namespace}: ", 1)[-1]
            log.warning("cannot grow PVC %s of instance %s to %s: %s", name, instance, want,
                        detail)
            return (f"Volume {name} stays at {have}: Kubernetes refused to grow it to {want} "
                    f"({status}: {detail}). The instance runs on the current size; use a "
                    "storage class with allowVolumeExpansion: true (and a bound claim), or set "
                    f"the size back to {have}.")
        log.info("asked to grow PVC %s of instance %s to %s", name, instance, want)
        return ""

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
        """Read the namespace itself: a namespaced list answers 200 (empty) for a namespace
        that does not exist, which would make detection pick a cluster that cannot run us."""
        host = self.api_client.configuration.host
        ns = self.namespace
        found = self._call("read", self._namespace, ns, self._core.read_namespace, ns,
                           expect=(403, 404), _request_timeout=min(self.timeout, PING_TIMEOUT))
        if found == Refused(404):
            raise FinalError(
                f"namespace {ns} does not exist at {host}: create it (kubectl create namespace "
                f"{ns}; kubectl label namespace {ns} pod-security.kubernetes.io/enforce="
                "privileged, or apply deploy/namespace.yaml) or set CLAWORC_K8S_NAMESPACE")
        if found == Refused(403):
            raise FinalError(
                f"namespace {ns} at {host} is not readable by this account: give it get on "
                f"namespaces in namespace {ns} (the Role in deploy/rbac.yaml)")
        phase = (found.get("status") or {}).get("phase")
        if phase == "Terminating":
            raise FinalError(f"namespace {ns} at {host} is being deleted (Terminating)")
        answer = f"API ok at {host}, namespace {ns}"
        for warning in filter(None, (self.port_range_warning(), self.site_warning())):
            log.warning("%s", warning)
            answer += f"; warning: {warning}"
        return answer

    def site_warning(self) -> str:
        """Why the site id may not hold, or "" (from settings alone).

        A pod's data directory is usually its own (deploy/ uses an emptyDir), so an id generated
        there differs from pod to pod and from restart to restart, and each would refuse the
        others' instances as another installation's."""
        if not self.site_per_pod:
            return ""
        return (f"CLAWORC_SITE_ID is not set, so this pod uses the id in its data directory "
                f"({self.site}): unless every web, worker and beat pod shares that directory "
                "for good, they refuse each other's instances as another installation's; set "
                "CLAWORC_SITE_ID (deploy/config.yaml)")

    def host_capacity(self) -> HostCapacity | None:
        """The namespace's ResourceQuotas and LimitRanges (two list calls, three when a quota
        counts what Claworc's own Pods hold); None when it sets neither."""
        quotas = self._call("list", self._quota, "(quotas)", self._quota.list, self.namespace,
                            expect=(403, 404))
        ranges = self._call("list", self._limit_range, "(limit ranges)", self._limit_range.list,
                            self.namespace, expect=(403, 404))
        quotas = [] if isinstance(quotas, Refused) else quotas.get("items") or []
        ranges = [] if isinstance(ranges, Refused) else ranges.get("items") or []
        pods = []
        if quotas:
            managed = f"{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}"
            pods = [p for p in self._list(self._pod, managed) if is_managed(p)]
        return capacity_from_quotas(quotas, ranges, pods, namespace=self.namespace)

    def port_range_warning(self) -> str:
        """Why the port range cannot work as NodePorts, or "" (from settings alone)."""
        if self.port_range is None:
            return ""
        (start, end), (low, high) = self.port_range, self.node_port_range
        if low <= start and end <= high:
            return ""
        return (f"CLAWORC_PORT_START-CLAWORC_PORT_END ({start}-{end}) lies outside the "
                f"cluster's NodePort range ({low}-{high}, CLAWORC_K8S_NODE_PORT_RANGE): the API "
                "server will refuse those Services")

    def _converge(self, spec: InstanceSpec, *, restart: bool) -> Observed:
        check_resources(spec)
        secrets = _secret_forms(spec)
        ns, options = self.namespace, self.options
        grow: list[tuple[str, str, str]] = []
        for pvc in build_pvcs(spec, namespace=ns, options=options):
            self._apply(self._pvc, pvc, lambda old, new: self._diff_pvc(old, new, grow))
        notes = [self._grow_pvc(spec.name, *pvc) for pvc in grow]
        self._apply(self._secret, build_secret(spec, namespace=ns, options=options),
                    self._diff_data,
                    secrets=secrets)
        self._apply(self._config_map, build_config_map(spec, namespace=ns, options=options),
                    self._diff_data)
        # The Service before the Deployment: a NodePort taken elsewhere fails before any Pod.
        self._apply(self._service, build_service(spec, namespace=ns,
                                                   desktop_access=self.desktop_access,
                                                   options=options),
                    self._diff_service, ports=(spec.port_chrome, spec.port_terminal))
        # A changed key or config changes the template's checksum annotation, which rolls the
        # Pod; an ensure interrupted after the Secret and before this patch is finished by the
        # next one, since the template still differs.
        workload = self._apply(self._deployment,
                               build_deployment(spec, namespace=ns, options=options),
                               self._diff_deployment)
        if workload != "created" and restart:
            self._patch(self._deployment, spec.name, restart_patch(), merge=True)
            log.info("restarting instance %s", spec.name)
        observed = self.status(spec.name)
        notes = [n for n in notes if n]
        if notes:
            observed = dataclasses.replace(
                observed, message=_join(observed.message, " ".join(notes)),
                notes=(*observed.notes, *notes))
        return observed

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
        found = [(kind, object_name, self._read(kind, object_name))
                 for kind, object_name in kinds]
        # One already Terminating is on its way: deleting it again changes nothing.
        present = [(kind, object_name) for kind, object_name, obj in found
                   if obj is not None and not obj["metadata"].get("deletionTimestamp")]
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
        pods = self._pods(name)
        events = self._warnings() if needs_events(deployment, pods) else []
        observed = observe(name, deployment, pods, events, namespace=self.namespace)
        if observed.status is Status.ERROR:
            tail = self._log_tail(name, 20, previous=observed.exit_code is not None)
            if tail:
                observed = dataclasses.replace(observed, log_tail=tail)
        return observed

    def pull_events(self, name: str) -> list[str]:
        """The kubelet pulls the image: its events on the instance's Pods say how far it is
        (Pulling, Pulled with size and time, ErrImagePull, ImagePullBackOff). Two calls."""
        pods = [(p.get("metadata") or {}).get("name") for p in self._pods(name)]
        if not pods:
            return []
        listed = self._call("list", self._event, "(pull events)", self._event.list,
                            self.namespace, field_selector="involvedObject.kind=Pod",
                            expect=(403,))
        if isinstance(listed, Refused):
            return []
        return pull_event_lines(listed.get("items") or [], pods)

    def _warnings(self) -> list[dict]:
        """The namespace's Warning events (one call); none when the account may not list them."""
        listed = self._call("list", self._event, "(warnings)", self._event.list, self.namespace,
                            field_selector="type=Warning", expect=(403,))
        if isinstance(listed, Refused):
            return []
        # The server may ignore the field selector: filter here too.
        return [e for e in listed.get("items") or [] if e.get("type") == "Warning"]

    def status_all(self) -> dict[str, Observed]:
        """Two list calls, Deployments then Pods, both by the managed-by and site labels (and
        one for Deployments made before sites existed, when there is a site); then, when an
        instance is meant to run, one each for its Services, Secrets and ConfigMaps (an instance
        that lost one is left out, for repair); and the namespace's Warning events only when an
        instance has no ready Pod (to say why). Never a call per instance.

        Pods alone cannot tell a stopped instance (scaled to 0, no Pods) from none at all.
        """
        deployments = self._list_mine(self._deployment)
        unlabelled = self._unlabelled_deployments()
        pods = self._list_mine(self._pod)
        by_instance: dict[str, list[dict]] = {}
        for pod in pods:
            by_instance.setdefault(pod["metadata"]["labels"][LABEL_INSTANCE], []).append(pod)
        named = [(d["metadata"]["labels"][LABEL_INSTANCE], d) for d in deployments]
        # Made before sites existed: a stopped one is reported as it is; one meant to run is
        # left out (its Pods and objects carry no site label to list them by), so the reconciler
        # converges it, and ensure adopts it: every object gets the label, the Pod is replaced
        # once with the new template labels, the volumes and their data stay.
        for deployment in unlabelled:
            name = deployment["metadata"]["labels"][LABEL_INSTANCE]
            if (deployment.get("spec") or {}).get("replicas", 1) == 0:
                named.append((name, deployment))
            else:
                log.info("instance %s was made before site labels; reporting it for adoption "
                         "by its next converge (site %s)", name, self.site)
        incomplete, configs = self._incomplete(named)
        named = [(name, d) for name, d in named if name not in incomplete]
        events = []
        if any(needs_events(d, by_instance.get(name, [])) for name, d in named):
            events = self._warnings()
        return {name: dataclasses.replace(
                    observe(name, deployment, by_instance.get(name, []), events,
                            namespace=self.namespace),
                    config_digest=configs.get(name))
                for name, deployment in named}

    def config_digest(self, config: Mapping[str, Any]) -> str:
        return config_digest_of(config_json(config))

    def _incomplete(self, named: list[tuple[str, dict]]) -> tuple[set[str], dict[str, str]]:
        """Instances meant to run whose Service, Secret or ConfigMap is gone (removed outside
        Claworc), from one list call per kind; and the digest of each one's ConfigMap data.

        status_all leaves them out, so the reconciler sees their workload missing and ensure
        recreates just what is gone; the Deployment, unchanged, keeps its Pod. A ConfigMap
        whose data was edited is reported by its digest, which the reconciler compares with the
        spec's (ensure patches it back).
        """
        running = [name for name, d in named if (d.get("spec") or {}).get("replicas", 1) != 0]
        if not running:
            return set(), {}
        have = {}
        maps: dict[str, dict] = {}
        for kind in (self._service, self._secret, self._config_map):
            listed = self._list_mine(kind)
            have[kind.label] = {o["metadata"]["name"] for o in listed}
            if kind is self._config_map:
                maps = {o["metadata"]["name"]: o for o in listed}
        configs = {name: config_digest_of(
                       (maps[config_map_name(name)].get("data") or {}).get(CONFIG_FILENAME, ""))
                   for name in running if config_map_name(name) in maps}
        incomplete = set()
        for name in running:
            gone = [f"{label} {fn(name)}" for label, fn in (
                ("Service", service_name), ("Secret", secret_name),
                ("ConfigMap", config_map_name)) if fn(name) not in have[label]]
            if gone:
                log.warning("instance %s lost %s outside Claworc; reporting it for repair", name,
                            " and ".join(gone))
                incomplete.add(name)
        return incomplete, configs

    def volumes_all(self) -> dict[str, list[str]]:
        """Every PVC labeled managed-by=claworc and this site, by instance, from ONE list call.

        PVCs without a site label are left out: those of a live instance are labelled by its
        next converge, and an old orphan cannot be told from another site's."""
        by_instance: dict[str, list[str]] = {}
        for pvc in self._list_mine(self._pvc):  # filtered here too: selectors may be ignored
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

    def follow_logs(self, name: str, *, lines: int, seconds: float) -> Iterator[str]:
        """The pod's log with follow=true: the last `lines` lines, then each new one as the
        API server passes it on, for at most `seconds`. Two calls: the instance's pods, then
        the stream of the newest live one. The stream ends by itself when that pod's container
        stops (a pod replaced by a restart or recreate): "Follow again" then finds the new pod.
        """
        pods = _live_first(self._pods(name))
        if not pods:
            return iter([])
        pod_name = pods[0]["metadata"]["name"]
        # The read timeout outlasts the follow, so only a connection that died silently is
        # cut by it; the follow's own deadline closes the stream before.
        response = self._call("follow the logs of", self._pod, pod_name,
                              self._core.read_namespaced_pod_log, pod_name, self.namespace,
                              container=CONTAINER_NAME, tail_lines=lines, follow=True, raw=True,
                              expect=(400, 404),
                              _request_timeout=(self.timeout, seconds + self.timeout))
        if isinstance(response, Refused):  # the pod is gone, or its container not started
            return iter([])
        return FollowedLog(_read_as_sent(response), seconds, lambda: _drop(response))

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
        # Another site's Pod of the same name (its instance here failed to take the name over)
        # is not this instance.
        items = [i for i in (listed or {}).get("items") or []
                 if not self.site or site_of(i) in ("", self.site)]
        found = usage_from_pod_metrics(items)
        return {name: usage for name, usage in found.items() if name in wanted}

    def volume_report(self, max_calls: int) -> VolumeReport | None:
        """Each PVC's requested size and capacity from ONE list call; what it uses from the
        kubelet's stats summary (through the API server's node proxy), when `max_calls` leaves
        room for the list of pods (to know their nodes) and one call per node, and the account
        may read it (a ClusterRole: deploy/optional/volume-usage.yaml). Otherwise "used: not
        available", saying why.
        """
        if max_calls < 1:
            return None
        pvcs = self._list_mine(self._pvc)
        calls = 1
        used: dict[str, int] = {}
        why: dict[str, str] = {}
        if pvcs and max_calls - calls >= 2:
            pods = self._list_mine(self._pod)
            calls += 1
            nodes = claimed_by_node(pods)
            # The nodes holding the most of our volumes first, if the budget cannot cover all.
            for node in sorted(nodes, key=lambda n: (-len(nodes[n]), n)):
                if calls >= max_calls:
                    why.update(dict.fromkeys(nodes[node], USED_OVER_BUDGET))
                    continue
                summary = self._call("read the volume stats (kubelet stats summary) of",
                                     _Named("Node"), node,
                                     self._core.connect_get_node_proxy_with_path, node,
                                     "stats/summary", expect=(403, 404, 503))
                calls += 1
                if summary == Refused(403):
                    # Every node answers alike: do not spend the budget asking the others.
                    why = dict.fromkeys((p["metadata"]["name"] for p in pvcs), USED_REFUSED)
                    break
                if isinstance(summary, Refused):  # the node is gone or its kubelet is down
                    why.update(dict.fromkeys(nodes[node], USED_UNKNOWN))
                    continue
                used.update(used_from_summary(summary or {}, self.namespace))
        elif pvcs:
            why = dict.fromkeys((p["metadata"]["name"] for p in pvcs), USED_OVER_BUDGET)
        sizes: dict[str, dict[str, VolumeSize]] = {}
        for pvc in pvcs:
            name = pvc["metadata"]["name"]
            requested = ((pvc.get("spec") or {}).get("resources") or {}).get("requests") or {}
            capacity = (pvc.get("status") or {}).get("capacity") or {}
            sizes.setdefault(pvc["metadata"]["labels"][LABEL_INSTANCE], {})[name] = VolumeSize(
                used=used.get(name), requested=_quantity_bytes(requested.get("storage")),
                capacity=_quantity_bytes(capacity.get("storage")),
                note="" if name in used else why.get(name, USED_NO_POD))
        return VolumeReport(sizes=sizes, calls=calls)


#: Most bytes one read of a followed log returns (it returns as soon as anything arrives).
_STREAM_READ = 64 * 1024


def _read_as_sent(response) -> Iterator[bytes]:
    """The body of a streamed HTTP response, each piece as soon as it arrives (read1: no
    waiting for a buffer to fill, chunked or not)."""
    while chunk := response.read1(_STREAM_READ):
        yield chunk


def _drop(response) -> None:
    """Close a streamed response at once, waking a read blocked on it in another thread."""
    with contextlib.suppress(Exception):
        response.shutdown()
    response.close()
    with contextlib.suppress(Exception):
        response.release_conn()


# --- volume sizes -------------------------------------------------------------------------------

#: Why a PVC's use is not shown, for people.
USED_REFUSED = ("used: not available (the account may not read the kubelet's stats: "
                "apply deploy/optional/volume-usage.yaml to allow it)")
USED_NO_POD = "used: not available (no running pod mounts it)"
USED_OVER_BUDGET = ("used: not available (more nodes than CLAWORC_USAGE_MAX_CALLS allows "
                    "reading in one sampling run)")
USED_UNKNOWN = "used: not available (the kubelet does not report it)"


def _quantity_bytes(value: Any) -> int | None:
    try:
        return parse_bytes(str(value)) if value else None
    except ValueError:
        return None


def claimed_by_node(pods: Iterable[Mapping[str, Any]]) -> dict[str, set[str]]:
    """{node: names of the PVCs its running pods mount}."""
    nodes: dict[str, set[str]] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or (pod.get("status") or {}).get("phase") != "Running":
            continue
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim:
                nodes.setdefault(node, set()).add(claim)
    return nodes


def used_from_summary(summary: Mapping[str, Any], namespace: str) -> dict[str, int]:
    """{PVC name: bytes used} from a kubelet stats summary (GET …/nodes/<n>/proxy/stats/summary:
    pods[].volume[] with pvcRef and usedBytes), for the PVCs of `namespace`."""
    used = {}
    for pod in summary.get("pods") or []:
        for volume in pod.get("volume") or []:
            ref = volume.get("pvcRef") or {}
            if ref.get("name") and ref.get("namespace") == namespace \
                    and isinstance(volume.get("usedBytes"), int):
                used[ref["name"]] = volume["usedBytes"]
    return used


def _secret_forms(spec: InstanceSpec) -> list[str]:
    """Every form an API key could take in a server message: as given and base64-encoded."""
    values = [v for v in spec.env.values() if v]
    return [*values, *(_b64(v) for v in values)]
