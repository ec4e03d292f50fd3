"""An emulated Kubernetes API server for tests, and a stand-in for the Deployment controller.

No cluster runs here, so tests talk HTTP to kmock's `KubernetesEmulator`, which the official
`kubernetes` client uses unchanged. The emulator is asyncio; it runs on its own event loop in a
daemon thread so the synchronous client can block on it from the test thread.

API
---
`KubeEmulator(namespace="claworc")`, also a context manager (`start()` / `stop()`):
    .url                          "http://127.0.0.1:<port>"
    .namespace                    the namespace tests use by default
    .api_client()                 a new `kubernetes.client.ApiClient` pointed at .url
    .write_kubeconfig(path, *, namespace=None, context="kmock") -> Path
                                  a kubeconfig whose current context points at .url, so
                                  `KUBECONFIG=path` makes `kubernetes.config.load_kube_config()`
                                  (and backend detection) find this server
    .controller                   a `DeploymentController` on .namespace
    .add_namespace(name, *, labels=None, phase="Active") / .remove_namespace(name)
                                  what GET /api/v1/namespaces/<name> answers (kmock has no
                                  Namespaces; .namespace exists from the start; a missing one
                                  answers 404 with kube-apiserver's exact body)
    .set_logs(pod, text)          what GET …/pods/<pod>/log answers (404 until set; honours
                                  tailLines)
    .append_logs(pod, text)       the pod's container writes `text`: a follow=true request
                                  (chunked, as the API server streams it) sends it on at once
    .open_log_follows() -> int    follow=true streams still open (the client has not gone
                                  away, the pod was not deleted); a deleted pod ends its streams
    .set_node_stats(node, summary)
                                  what GET /api/v1/nodes/<node>/proxy/stats/summary (the
                                  kubelet's stats through the API server) answers; 404 until set
    .inject(method, path_part, status=500, *, message="injected", reason=None, details=None,
            delay=0.0, times=None)
                                  answer requests whose method matches and whose path contains
                                  `path_part` with a Kubernetes Status error `status` (after
                                  sleeping `delay` s; status=None only delays), `times` times
                                  or for ever; the request is not applied. `reason` and
                                  `details` fill the Status body as a real API server does
                                  (replay its exact answer). `.clear_injections()`
    .stored(resource, name, namespace=None) -> dict | None
                                  a copy of the stored object ("apps/v1/deployments", "v1/secrets"…)
    .requests() -> list[tuple[str, str, dict]]
                                  (method, path, query) of every request served so far
    .emulator                     the kmock handler itself (objects, history), for rare needs

`DeploymentController(api_client, namespace)` plays the controllers kmock lacks:
    .settle(name, state="running", *, reason=None, message=None, exit_code=1) -> list[dict]
        Makes the Pods of Deployment `name` what a cluster would have once the rollout is done:
        `spec.replicas` Pods with the pod template's labels plus `pod-template-hash`; Pods of an
        older template (e.g. after a restart annotation) are replaced; with no Deployment, the
        instance's Pods are garbage-collected. Every Pod gets the status `state` names:
          running      Running, Ready, container running and ready
          starting     Running, container running but not ready yet (readiness probe)
          creating     Pending, container waiting "ContainerCreating"
          pending      Pending, not scheduled ("Unschedulable")
          crashloop    Running, container waiting "CrashLoopBackOff", last exit `exit_code`
          oomkilled    as crashloop, the last run killed by the kernel's OOM killer
                       (reason "OOMKilled", exit code 137), as the kubelet reports it
          image_pull   Pending, container waiting "ImagePullBackOff"
          failed       Failed (reason `reason` or "Evicted")
          unknown      Unknown (node lost)
        Returns the Pods as stored (dicts).
    .pods(name) -> list[dict]     the instance's Pods (filtered here: kmock ignores selectors)
    .delete_pods(name)            delete them, as `kubectl delete pod` would

pytest fixture `kube_api` (use it in a test module with `kube_api = kube_support.kube_api`)
yields a started `KubeEmulator`, fresh for each test (starting one takes milliseconds).

What the emulator adds to kmock, as a real API server would: metadata.uid, namespace,
creationTimestamp and resourceVersion on create, a new resourceVersion on every patch, and pod
logs. Its remaining gaps (ENVIRONMENT.md): label selectors are ignored, no PUT, no Namespaces,
patches replace lists wholesale.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import hashlib
import itertools
import json
import logging
import threading
import uuid
import warnings
from pathlib import Path

import pytest

LABEL_INSTANCE = "claworc.instance"
POD_TEMPLATE_HASH = "pod-template-hash"
STATES = ("running", "starting", "creating", "pending", "crashloop", "oomkilled", "image_pull",
          "failed", "unknown")


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _make_emulator_class():
    import aiohttp.web
    import kmock

    class _Emulator(kmock.KubernetesEmulator):
        """kmock plus the server-side fields and pod logs the backend reads."""

        def __attrs_post_init__(self) -> None:
            super().__attrs_post_init__()
            self.pod_logs: dict[str, str] = {}
            self.ended_logs: set[str] = set()
            self.node_stats: dict[str, dict] = {}
            self.log_follows = 0
            self.closing = False
            self.injections: list[dict] = []
            self.log: list[tuple[str, str, dict]] = []
            self._versions = itertools.count(1)
            self.namespaces: dict[str, dict] = {}

        async def _handle(self, request):
            # kmock re-filters its whole request history on every request (quadratic): keep
            # our own log for assertions and hand kmock only the request at hand.
            self.log.append((request.method.value.upper(), request.url.path,
                             dict(request.params)))
            del self._requests[:-1]
            for rule in list(self.injections):
                if (rule["method"] == request.method.value.upper()
                        and rule["path_part"] in request.url.path):
                    if rule["times"] is not None:
                        rule["times"] -= 1
                        if rule["times"] <= 0:
                            self.injections.remove(rule)
                    if rule["delay"]:
                        await asyncio.sleep(rule["delay"])
                    if rule["status"] is not None:
                        raise kmock.KubernetesError(
                            status=rule["status"], reason=rule["reason"] or "Injected",
                            message=rule["message"], details=rule["details"])
                    break
            parts = request.url.path.strip("/").split("/")
            if (request.method == kmock.method.GET and len(parts) == 4
                    and parts[:3] == ["api", "v1", "namespaces"]):
                # kmock has no Namespaces: answer reads as kube-apiserver does.
                namespace = self.namespaces.get(parts[3])
                if namespace is None:
                    raise kmock.KubernetesError(
                        status=404, reason="NotFound",
                        message=f'namespaces "{parts[3]}" not found',
                        details={"name": parts[3], "kind": "namespaces"})
                return aiohttp.web.json_response(namespace)
            if (request.method == kmock.method.GET and len(parts) == 7
                    and parts[:3] == ["api", "v1", "nodes"] and parts[4:] == [
                        "proxy", "stats", "summary"]):
                summary = self.node_stats.get(parts[3])
                if summary is None:
                    raise kmock.KubernetesError(
                        status=404, reason="NotFound", message=f'nodes "{parts[3]}" not found',
                        details={"name": parts[3], "kind": "nodes"})
                return aiohttp.web.json_response(summary)
            if request.subresource == "log" and request.method == kmock.method.GET:
                text = self.pod_logs.get(request.name)
                if text is None:
                    raise kmock.KubernetesObjectNotFoundError()
                sent = len(text)
                tail = request.params.get("tailLines")
                if tail is not None:
                    text = "".join(text.splitlines(keepends=True)[-int(tail):]) if int(tail) else ""
                if request.params.get("follow") == "true":
                    return await self._follow_log(request, text, sent)
                return aiohttp.web.Response(text=text, content_type="text/plain")
            if (request.method == kmock.method.DELETE and request.resource is not None
                    and request.resource.plural == "pods" and request.name):
                # The container is gone with its pod: the API server ends its log streams.
                self.ended_logs.add(request.name)
            data = request.data
            if request.resource is not None and isinstance(data, dict):
                if request.action == kmock.action.CREATE:
                    meta = data.setdefault("metadata", {})
                    meta.setdefault("uid", str(uuid.uuid4()))
                    meta.setdefault("creationTimestamp", _now())
                    if request.namespace:
                        meta.setdefault("namespace", request.namespace)
                    meta["resourceVersion"] = str(next(self._versions))
                elif request.action == kmock.action.UPDATE:
                    data.setdefault("metadata", {})["resourceVersion"] = str(next(self._versions))
            return await super()._handle(request)

        async def _follow_log(self, request, text: str, sent: int):
            """Stream as kube-apiserver does for follow=true: headers at once, then chunks as
            the container writes, until the pod is deleted or the client goes away."""
            raw = request._raw_request
            name = request.name
            response = aiohttp.web.StreamResponse(headers={"Content-Type": "text/plain"})
            response.enable_chunked_encoding()
            await response.prepare(raw)
            self.log_follows += 1
            try:
                if text:
                    await response.write(text.encode())
                while not self.closing and name not in self.ended_logs:
                    transport = raw.transport
                    if transport is None or transport.is_closing():
                        return response  # the client went away
                    now = self.pod_logs.get(name, "")
                    if len(now) > sent:
                        await response.write(now[sent:].encode())
                        sent = len(now)
                    await asyncio.sleep(0.02)
                await response.write_eof()
            except (ConnectionError, RuntimeError):
                pass  # the client went away while a chunk was being written
            finally:
                self.log_follows -= 1
            return response

    return _Emulator


class KubeEmulator:
    """A kmock Kubernetes API server on 127.0.0.1, served from a background thread."""

    def __init__(self, namespace: str = "claworc"):
        self.namespace = namespace
        self.url = ""
        self.emulator = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._clients: list = []
        self._controller = None

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> KubeEmulator:
        self._thread = threading.Thread(target=self._serve, name="kube-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the emulated Kubernetes API did not start within 30 s")
        if self._error is not None:
            raise RuntimeError("the emulated Kubernetes API failed to start") from self._error
        return self

    def stop(self) -> None:
        if self.emulator is not None:
            self.emulator.closing = True  # open log streams end rather than hold the server
        for api in self._clients:
            api.close()
        self._clients.clear()
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> KubeEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        import kmock

        # One access-log line per request would drown the test output.
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        async with _make_emulator_class()() as emulator, kmock.Server(emulator) as server:
            with warnings.catch_warnings():
                # kmock 0.8 reads its bundle with a deprecated importlib call.
                warnings.simplefilter("ignore", DeprecationWarning)
                emulator.resources.load_bundled()
            self.emulator = emulator
            self.add_namespace(self.namespace)
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stopping.wait()

    # --- clients -----------------------------------------------------------------------------
    def api_client(self):
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        api = client.ApiClient(configuration)
        self._clients.append(api)
        return api

    def write_kubeconfig(self, path, *, namespace: str | None = None,
                         context: str = "kmock") -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": {"token": "kmock-token"}}],
            "contexts": [{"name": context, "context": {
                "cluster": context, "user": context, "namespace": namespace or self.namespace,
            }}],
            "current-context": context,
        }
        # JSON is YAML, and the kubeconfig loader reads YAML.
        path.write_text(json.dumps(kubeconfig, indent=2))
        return path

    @property
    def controller(self) -> DeploymentController:
        if self._controller is None:
            self._controller = DeploymentController(self.api_client(), self.namespace)
        return self._controller

    # --- namespaces --------------------------------------------------------------------------
    def add_namespace(self, name: str, *, labels: dict | None = None,
                      phase: str = "Active") -> dict:
        """Make GET /api/v1/namespaces/<name> answer (the test namespace exists from start)."""
        namespace = {
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "uid": str(uuid.uuid4()), "creationTimestamp": _now(),
                         "labels": {"kubernetes.io/metadata.name": name, **(labels or {})}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": phase},
        }
        self.emulator.namespaces[name] = namespace
        return namespace

    def remove_namespace(self, name: str) -> None:
        self.emulator.namespaces.pop(name, None)

    # --- inspection --------------------------------------------------------------------------
    def set_logs(self, pod: str, text: str) -> None:
        self.emulator.pod_logs[pod] = text

    def append_logs(self, pod: str, text: str) -> None:
        self.emulator.pod_logs[pod] = self.emulator.pod_logs.get(pod, "") + text

    def open_log_follows(self) -> int:
        return self.emulator.log_follows

    def set_node_stats(self, node: str, summary: dict) -> None:
        self.emulator.node_stats[node] = summary

    def inject(self, method: str, path_part: str, status: int | None = 500, *,
               message: str = "injected", reason: str | None = None,
               details: dict | None = None, delay: float = 0.0,
               times: int | None = None) -> None:
        self.emulator.injections.append({
            "method": method.upper(), "path_part": path_part, "status": status,
            "message": message, "reason": reason, "details": details, "delay": delay,
            "times": times})

    def clear_injections(self) -> None:
        self.emulator.injections.clear()

    def stored(self, resource: str, name: str, namespace: str | None = None) -> dict | None:
        namespace = namespace or self.namespace
        for (res, ns, obj_name), obj in list(self.emulator.objects.items()):
            path = "/".join(p for p in (res.group, res.version, res.plural) if p)
            if (path, ns, obj_name) == (resource, namespace, name) and not obj.deleted:
                return copy.deepcopy(obj.raw)
        return None

    def requests(self) -> list[tuple[str, str, dict]]:
        return list(self.emulator.log)


class DeploymentController:
    """Creates and deletes the Pods a Deployment controller and the scheduler/kubelet would."""

    def __init__(self, api_client, namespace: str):
        from kubernetes import client

        self.namespace = namespace
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self._sanitize = api_client.sanitize_for_serialization

    def pods(self, name: str) -> list[dict]:
        listed = self.core.list_namespaced_pod(self.namespace)
        pods = [self._sanitize(p) for p in listed.items]
        return [p for p in pods if p["metadata"].get("labels", {}).get(LABEL_INSTANCE) == name]

    def delete_pods(self, name: str) -> None:
        for pod in self.pods(name):
            self.core.delete_namespaced_pod(pod["metadata"]["name"], self.namespace)

    def settle(self, name: str, state: str = "running", *, reason: str | None = None,
               message: str | None = None, exit_code: int = 1) -> list[dict]:
        from kubernetes.client.exceptions import ApiException

        if state not in STATES:
            raise ValueError(f"unknown pod state {state!r}; one of {', '.join(STATES)}")
        try:
            deployment = self._sanitize(self.apps.read_namespaced_deployment(name, self.namespace))
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.delete_pods(name)  # the garbage collector follows the Deployment
            return []
        template = deployment["spec"]["template"]
        replicas = deployment["spec"].get("replicas", 1)
        template_hash = hashlib.sha256(
            json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        keep = []
        for pod in self.pods(name):
            labels = pod["metadata"].get("labels", {})
            if labels.get(POD_TEMPLATE_HASH) == template_hash and len(keep) < replicas:
                keep.append(pod)
            else:
                self.core.delete_namespaced_pod(pod["metadata"]["name"], self.namespace)
        status = self._status(template, state, reason, message, exit_code)
        for pod in keep:
            # kmock merges dicts: null out what the new status does not have.
            cleared = dict.fromkeys(pod.get("status") or {}) | status
            self.core.patch_namespaced_pod(pod["metadata"]["name"], self.namespace,
                                           {"status": cleared})
        for _ in range(replicas - len(keep)):
            labels = dict(template["metadata"].get("labels", {}), **{
                POD_TEMPLATE_HASH: template_hash})
            pod_name = f"{name}-{template_hash}-{uuid.uuid4().hex[:5]}"
            body = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name, "namespace": self.namespace, "labels": labels,
                             "annotations": template["metadata"].get("annotations", {})},
                "spec": copy.deepcopy(template["spec"]) | {"nodeName": "node-1"},
                "status": status,
            }
            self.core.create_namespaced_pod(self.namespace, body)
        return self.pods(name)

    @staticmethod
    def _status(template: dict, state: str, reason, message, exit_code) -> dict:
        container = template["spec"]["containers"][0]
        now = _now()
        base = {"name": container["name"], "image": container["image"], "imageID": "",
                "restartCount": 0,
                "ready": False, "started": False}

        def conditions(ready: bool, scheduled: bool = True):
            return [
                {"type": "PodScheduled", "status": "True" if scheduled else "False",
                 **({} if scheduled else {
                     "reason": "Unschedulable",
                     "message": message or "0/1 nodes are available: 1 Insufficient memory."})},
                {"type": "Ready", "status": "True" if ready else "False"},
            ]

        if state == "running":
            return {"phase": "Running", "conditions": conditions(True), "startTime": now,
                    "containerStatuses": [base | {"ready": True, "started": True,
                                                  "state": {"running": {"startedAt": now}}}]}
        if state == "starting":
            return {"phase": "Running", "conditions": conditions(False), "startTime": now,
                    "containerStatuses": [base | {"started": True,
                                                  "state": {"running": {"startedAt": now}}}]}
        if state == "creating":
            return {"phase": "Pending", "conditions": conditions(False),
                    "containerStatuses": [base | {"state": {"waiting": {
                        "reason": reason or "ContainerCreating"}}}]}
        if state == "pending":
            return {"phase": "Pending", "conditions": conditions(False, scheduled=False)}
        if state == "image_pull":
            return {"phase": "Pending", "conditions": conditions(False),
                    "containerStatuses": [base | {"state": {"waiting": {
                        "reason": reason or "ImagePullBackOff",
                        "message": message or f'Back-off pulling image "{container["image"]}"',
                    }}}]}
        if state == "oomkilled":
            state, reason, exit_code = "crashloop", reason or "CrashLoopBackOff", 137
            last_reason = "OOMKilled"
        else:
            last_reason = "Error"
        if state == "crashloop":
            return {"phase": "Running", "conditions": conditions(False), "startTime": now,
                    "containerStatuses": [base | {
                        "restartCount": 4,
                        "state": {"waiting": {
                            "reason": reason or "CrashLoopBackOff",
                            "message": message or "back-off 1m20s restarting failed container"}},
                        "lastState": {"terminated": {"exitCode": exit_code, "reason": last_reason,
                                                     "finishedAt": now}},
                    }]}
        if state == "failed":
            return {"phase": "Failed", "reason": reason or "Evicted",
                    "message": message or "The node was low on resource: memory.",
                    "conditions": conditions(False)}
        return {"phase": "Unknown", "reason": reason or "NodeLost",
                "message": message or "node node-1 which was running the pod is unresponsive"}


@pytest.fixture
def kube_api():
    """A started KubeEmulator (module docstring), stopped after the test."""
    with KubeEmulator() as emulator:
        yield emulator
