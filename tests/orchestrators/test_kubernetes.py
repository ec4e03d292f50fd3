"""KubernetesOrchestrator over HTTP against the emulated API server (tests/kube_support.py)."""

import base64
import dataclasses
import json
import logging
import socket

import pytest
from kubernetes import client

from orchestrators.base import FinalError, InstanceSpec, PortConflict, Status, TransientError
from orchestrators.kubernetes import KubernetesOrchestrator
from tests import kube_support

kube_api = kube_support.kube_api

NS = "claworc"
SECRET_VALUE = "sk-ant-very-secret-value"


@pytest.fixture
def orch(kube_api):
    return KubernetesOrchestrator(api_client=kube_api.api_client(), namespace=NS, timeout=5)


def make_spec(name="bot-k8s", **changes):
    spec = InstanceSpec(name=name, image="agent:1", port_chrome=30100, port_terminal=30101,
                        env={"ANTHROPIC_API_KEY": SECRET_VALUE}, config={"model": "claude"})
    return dataclasses.replace(spec, **changes)


def writes(kube_api, since=0):
    return [(m, p) for m, p, _ in kube_api.requests()[since:] if m != "GET"]


def secret_env(kube_api, name):
    data = kube_api.stored("v1/secrets", f"{name}-keys")["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


# --- ensure ------------------------------------------------------------------------------------

def test_ensure_creates_every_object(kube_api, orch):
    observed = orch.ensure(make_spec())
    assert observed.status is Status.CREATING and observed.exists
    for suffix in ("clawdbot", "homebrew", "clawd", "chrome"):
        pvc = kube_api.stored("v1/persistentvolumeclaims", f"bot-k8s-{suffix}")
        assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert secret_env(kube_api, "bot-k8s") == {"ANTHROPIC_API_KEY": SECRET_VALUE}
    cm = kube_api.stored("v1/configmaps", "bot-k8s-config")
    assert json.loads(cm["data"]["clawdbot.json"]) == {"model": "claude"}
    svc = kube_api.stored("v1/services", "bot-k8s-vnc")
    assert [p["nodePort"] for p in svc["spec"]["ports"]] == [30100, 30101]
    dep = kube_api.stored("apps/v1/deployments", "bot-k8s")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "agent:1"
    # The Service exists before the Deployment: a taken NodePort fails before any Pod.
    posts = [p.rsplit("/", 1)[-1] for m, p in writes(kube_api) if m == "POST"]
    assert posts.index("services") < posts.index("deployments")


def test_ensure_twice_writes_nothing(kube_api, orch):
    orch.ensure(make_spec())
    uid = kube_api.stored("apps/v1/deployments", "bot-k8s")["metadata"]["uid"]
    before = len(kube_api.requests())
    orch.ensure(make_spec())
    assert writes(kube_api, before) == []
    assert kube_api.stored("apps/v1/deployments", "bot-k8s")["metadata"]["uid"] == uid


def test_ensure_converges_objects_that_already_exist(kube_api, orch):
    """A 409 on create (made concurrently, or left by an interrupted run) means converge."""
    core = client.CoreV1Api(kube_api.api_client())
    core.create_namespaced_secret(NS, {"metadata": {
        "name": "bot-k8s-keys", "labels": {"managed-by": "claworc", "claworc.instance": "bot-k8s"}},
        "data": {"STALE_KEY": "eA=="}})
    # The read misses it once (as if it was created between our read and our create).
    kube_api.inject("GET", "/secrets/bot-k8s-keys", 404, times=1)
    orch.ensure(make_spec())
    assert secret_env(kube_api, "bot-k8s") == {"ANTHROPIC_API_KEY": SECRET_VALUE}
    labels = kube_api.stored("v1/secrets", "bot-k8s-keys")["metadata"]["labels"]
    assert labels["app"] == "bot-k8s"


def test_objects_of_that_name_not_ours_are_left_alone(kube_api, orch):
    core = client.CoreV1Api(kube_api.api_client())
    apps = client.AppsV1Api(kube_api.api_client())
    core.create_namespaced_config_map(NS, {"metadata": {"name": "bot-k8s-config"},
                                           "data": {"someone": "else"}})
    with pytest.raises(FinalError, match="ConfigMap named bot-k8s-config .* not managed"):
        orch.ensure(make_spec())
    assert kube_api.stored("v1/configmaps", "bot-k8s-config")["data"] == {"someone": "else"}
    assert kube_api.stored("apps/v1/deployments", "bot-k8s") is None
    with pytest.raises(FinalError, match="not managed by Claworc"):
        orch.delete("bot-k8s")
    assert kube_api.stored("v1/configmaps", "bot-k8s-config") is not None
    assert kube_api.stored("v1/secrets", "bot-k8s-keys") is not None  # nothing deleted

    apps.create_namespaced_deployment(NS, {
        "metadata": {"name": "bot-foreign"},
        "spec": {"selector": {"matchLabels": {"app": "f"}}, "template": {
            "metadata": {"labels": {"app": "f"}},
            "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
    observed = orch.status("bot-foreign")
    assert observed.status is Status.ERROR and "not managed by Claworc" in observed.message
    for operation in (orch.start, orch.stop, orch.restart):
        with pytest.raises(FinalError):
            operation("bot-foreign")
    assert "bot-foreign" not in orch.status_all()


def test_ensure_applies_changes_and_restarts_for_keys_and_config(kube_api, orch):
    orch.ensure(make_spec())
    [first] = kube_api.controller.settle("bot-k8s")
    checksum = kube_api.stored("apps/v1/deployments", "bot-k8s")["spec"]["template"][
        "metadata"]["annotations"]["claworc/config-checksum"]
    changed = make_spec(image="agent:2", port_chrome=30102, port_terminal=30103,
                        env={"OTHER_KEY": "v2"}, config={"model": "other"})
    orch.ensure(changed)
    assert secret_env(kube_api, "bot-k8s") == {"OTHER_KEY": "v2"}
    cm = kube_api.stored("v1/configmaps", "bot-k8s-config")
    assert json.loads(cm["data"]["clawdbot.json"]) == {"model": "other"}
    svc = kube_api.stored("v1/services", "bot-k8s-vnc")
    assert [p["nodePort"] for p in svc["spec"]["ports"]] == [30102, 30103]
    dep = kube_api.stored("apps/v1/deployments", "bot-k8s")
    template = dep["spec"]["template"]
    assert template["spec"]["containers"][0]["image"] == "agent:2"
    # The Pod reads keys and config only when it starts: the template's checksum rolls it.
    assert template["metadata"]["annotations"]["claworc/config-checksum"] != checksum
    [second] = kube_api.controller.settle("bot-k8s")
    assert second["metadata"]["name"] != first["metadata"]["name"]
    assert orch.status("bot-k8s").status is Status.RUNNING


def test_ensure_grows_pvcs_but_never_shrinks_them(kube_api, orch, caplog):
    orch.ensure(make_spec())
    bigger = dataclasses.replace(make_spec().storage, homebrew="50Gi", chrome="1Gi")
    with caplog.at_level(logging.WARNING, logger="orchestrators.kubernetes"):
        orch.ensure(make_spec(storage=bigger))
    size = lambda s: kube_api.stored("v1/persistentvolumeclaims", f"bot-k8s-{s}")[  # noqa: E731
        "spec"]["resources"]["requests"]["storage"]
    assert size("homebrew") == "50Gi"
    assert size("chrome") == "5Gi"
    assert "bot-k8s-chrome" in caplog.text


def test_ensure_runs_a_stopped_instance(kube_api, orch):
    orch.ensure(make_spec())
    orch.stop("bot-k8s")
    orch.ensure(make_spec())
    assert kube_api.stored("apps/v1/deployments", "bot-k8s")["spec"]["replicas"] == 1


# --- lifecycle ---------------------------------------------------------------------------------

def test_stop_start_restart(kube_api, orch):
    orch.ensure(make_spec())
    kube_api.controller.settle("bot-k8s")
    assert orch.stop("bot-k8s").status is Status.STOPPED
    assert kube_api.stored("apps/v1/deployments", "bot-k8s")["spec"]["replicas"] == 0
    assert kube_api.controller.settle("bot-k8s") == []
    assert orch.status("bot-k8s").message == "scaled to 0"

    orch.start("bot-k8s")
    assert kube_api.stored("apps/v1/deployments", "bot-k8s")["spec"]["replicas"] == 1
    [pod] = kube_api.controller.settle("bot-k8s")
    assert orch.status("bot-k8s").status is Status.RUNNING

    orch.restart("bot-k8s")
    [restarted] = kube_api.controller.settle("bot-k8s")
    assert restarted["metadata"]["name"] != pod["metadata"]["name"]
    assert orch.status("bot-k8s").status is Status.RUNNING


def test_restart_starts_a_stopped_instance(kube_api, orch):
    orch.ensure(make_spec())
    orch.stop("bot-k8s")
    orch.restart("bot-k8s")
    assert kube_api.stored("apps/v1/deployments", "bot-k8s")["spec"]["replicas"] == 1


def test_stop_of_a_missing_instance_is_success(orch):
    observed = orch.stop("bot-none")
    assert (observed.status, observed.exists) == (Status.STOPPED, False)


@pytest.mark.parametrize("operation", ["start", "restart"])
def test_start_or_restart_of_a_missing_instance_is_final(orch, operation):
    with pytest.raises(FinalError, match="bot-none has no Deployment"):
        getattr(orch, operation)("bot-none")


def test_recreate_applies_new_keys_and_restarts(kube_api, orch):
    orch.ensure(make_spec())
    [pod] = kube_api.controller.settle("bot-k8s")
    orch.recreate(make_spec(env={"ANTHROPIC_API_KEY": "new"}, config={"model": "x"}))
    assert secret_env(kube_api, "bot-k8s") == {"ANTHROPIC_API_KEY": "new"}
    [new_pod] = kube_api.controller.settle("bot-k8s")
    assert new_pod["metadata"]["name"] != pod["metadata"]["name"]
    # Same Deployment and volumes, only the pod was replaced.
    assert kube_api.stored("v1/persistentvolumeclaims", "bot-k8s-clawd") is not None


def test_recreate_restarts_even_without_changes(kube_api, orch):
    orch.ensure(make_spec())
    [pod] = kube_api.controller.settle("bot-k8s")
    orch.recreate(make_spec())
    [new_pod] = kube_api.controller.settle("bot-k8s")
    assert new_pod["metadata"]["name"] != pod["metadata"]["name"]


def test_delete_keeps_volumes_unless_purged(kube_api, orch):
    orch.ensure(make_spec())
    kube_api.controller.settle("bot-k8s")
    orch.delete("bot-k8s")
    for resource, name in [("apps/v1/deployments", "bot-k8s"), ("v1/services", "bot-k8s-vnc"),
                           ("v1/secrets", "bot-k8s-keys"), ("v1/configmaps", "bot-k8s-config")]:
        assert kube_api.stored(resource, name) is None, name
    assert kube_api.stored("v1/persistentvolumeclaims", "bot-k8s-clawdbot") is not None
    observed = orch.status("bot-k8s")
    assert (observed.status, observed.exists) == (Status.STOPPED, False)
    orch.delete("bot-k8s", purge_volumes=True)
    orch.delete("bot-k8s", purge_volumes=True)
    for suffix in ("clawdbot", "homebrew", "clawd", "chrome"):
        assert kube_api.stored("v1/persistentvolumeclaims", f"bot-k8s-{suffix}") is None


def test_delete_asks_for_background_propagation(kube_api, orch):
    orch.ensure(make_spec())
    orch.delete("bot-k8s")
    [query] = [q for m, p, q in kube_api.requests()
               if m == "DELETE" and p.endswith("/deployments/bot-k8s")]
    assert query.get("propagationPolicy") == "Background"


# --- status ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("state", "expected", "in_message"), [
    ("running", Status.RUNNING, "running"),
    ("starting", Status.CREATING, "not ready"),
    ("creating", Status.CREATING, "ContainerCreating"),
    ("pending", Status.CREATING, "waiting: the cluster has no node with 1 GiB of memory free"),
    ("crashloop", Status.ERROR, "CrashLoopBackOff"),
    ("image_pull", Status.ERROR, "ImagePullBackOff"),
    ("failed", Status.ERROR, "Evicted"),
    ("unknown", Status.ERROR, "NodeLost"),
])
def test_status_from_pods(kube_api, orch, state, expected, in_message):
    orch.ensure(make_spec())
    kube_api.controller.settle("bot-k8s", state)
    observed = orch.status("bot-k8s")
    assert observed.status is expected
    assert in_message in observed.message
    assert orch.status_all()["bot-k8s"].status is expected


def test_error_status_carries_the_log_tail(kube_api, orch):
    orch.ensure(make_spec())
    [pod] = kube_api.controller.settle("bot-k8s", "crashloop", exit_code=3)
    kube_api.set_logs(pod["metadata"]["name"], "".join(f"line {i}\n" for i in range(50)))
    observed = orch.status("bot-k8s")
    assert observed.exit_code == 3
    assert observed.log_tail.splitlines() == [f"line {i}" for i in range(30, 50)]


def test_status_ignores_pods_of_other_instances(kube_api, orch):
    """The emulator ignores label selectors, as a misbehaving proxy could: filter here."""
    orch.ensure(make_spec())
    orch.ensure(make_spec("bot-other", port_chrome=30104, port_terminal=30105))
    kube_api.controller.settle("bot-other", "crashloop")
    assert orch.status("bot-k8s").status is Status.CREATING  # no pod of its own yet
    kube_api.controller.settle("bot-k8s")
    assert orch.status("bot-k8s").status is Status.RUNNING


def test_status_all_two_list_calls_filtered_client_side(kube_api, orch):
    orch.ensure(make_spec())
    orch.ensure(make_spec("bot-two", port_chrome=30104, port_terminal=30105))
    orch.ensure(make_spec("bot-three", port_chrome=30106, port_terminal=30107))
    kube_api.controller.settle("bot-k8s")
    kube_api.controller.settle("bot-two", "crashloop")
    orch.stop("bot-three")
    # Something else in the namespace, not ours.
    apps = client.AppsV1Api(kube_api.api_client())
    apps.create_namespaced_deployment(NS, {
        "metadata": {"name": "unrelated", "labels": {"app": "unrelated"}},
        "spec": {"selector": {"matchLabels": {"app": "unrelated"}}, "template": {
            "metadata": {"labels": {"app": "unrelated"}},
            "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
    kube_api.controller.settle("unrelated")
    before = len(kube_api.requests())
    result = orch.status_all()
    calls = kube_api.requests()[before:]
    assert [(m, p) for m, p, _ in calls] == [
        ("GET", f"/apis/apps/v1/namespaces/{NS}/deployments"),
        ("GET", f"/api/v1/namespaces/{NS}/pods"),
        ("GET", f"/api/v1/namespaces/{NS}/services"),
        ("GET", f"/api/v1/namespaces/{NS}/secrets"),
        ("GET", f"/api/v1/namespaces/{NS}/configmaps"),
    ]
    assert all(q["labelSelector"] == "managed-by=claworc" for _, _, q in calls)
    assert set(result) == {"bot-k8s", "bot-two", "bot-three"}
    assert result["bot-k8s"].status is Status.RUNNING
    assert result["bot-two"].status is Status.ERROR
    assert result["bot-three"].status is Status.STOPPED
    for name, observed in result.items():
        assert observed.status == orch.status(name).status
        assert observed.message == orch.status(name).message


# --- logs --------------------------------------------------------------------------------------

def test_logs_of_the_instance_pod(kube_api, orch):
    orch.ensure(make_spec())
    assert orch.logs("bot-k8s") == ""  # no pod yet
    [pod] = kube_api.controller.settle("bot-k8s")
    assert orch.logs("bot-k8s") == ""  # the emulator has no log for it: 404
    kube_api.set_logs(pod["metadata"]["name"], "booting\nchrome up\nvnc ready\n")
    assert orch.logs("bot-k8s", lines=2) == "chrome up\nvnc ready\n"
    [(_, path, query)] = [r for r in kube_api.requests() if r[1].endswith("/log")][-1:]
    assert query["container"] == "agent" and query["tailLines"] == "2"


def test_logs_of_a_container_not_started_yet(kube_api, orch):
    orch.ensure(make_spec())
    [pod] = kube_api.controller.settle("bot-k8s", "creating")
    kube_api.inject("GET", "/log", 400,
                    message='container "agent" in pod is waiting to start: ContainerCreating')
    assert orch.logs("bot-k8s") == ""


# --- errors ------------------------------------------------------------------------------------

def test_server_errors_are_transient(kube_api, orch):
    kube_api.inject("GET", "/deployments/bot-k8s", 503, message="etcd leader changed")
    with pytest.raises(TransientError, match="503.*etcd leader changed.*retrying later"):
        orch.status("bot-k8s")


def test_refusals_are_final_with_what_to_do(kube_api, orch):
    kube_api.inject("POST", "/persistentvolumeclaims", 403,
                    message='persistentvolumeclaims is forbidden: User "x" cannot create')
    with pytest.raises(FinalError) as err:
        orch.ensure(make_spec())
    assert "403" in str(err.value) and "forbidden" in str(err.value)
    assert "the Role in deploy/rbac.yaml" in str(err.value)
    assert str(err.value).endswith("in namespace claworc")
    assert kube_api.stored("apps/v1/deployments", "bot-k8s") is None


def node_port_taken(kube_api, method, port, index=0, times=None):
    """What kube-apiserver answers when another Service holds the NodePort (status 422)."""
    kube_api.inject(method, "/services", 422, reason="Invalid", times=times, message=(
        f'Service "bot-k8s-vnc" is invalid: spec.ports[{index}].nodePort: Invalid value: '
        f"{port}: provided port is already allocated"), details={
        "name": "bot-k8s-vnc", "kind": "Service", "causes": [{
            "reason": "FieldValueInvalid",
            "message": f"Invalid value: {port}: provided port is already allocated",
            "field": f"spec.ports[{index}].nodePort"}]})


def test_taken_node_port_is_a_port_conflict_and_leaves_no_workload(kube_api, orch):
    node_port_taken(kube_api, "POST", 30101, index=1)
    with pytest.raises(PortConflict) as err:
        orch.ensure(make_spec())
    assert err.value.ports == (30100, 30101)
    message = str(err.value)
    assert message.startswith("NodePort 30101 is already allocated to another Service")
    assert "CLAWORC_PORT_START/CLAWORC_PORT_END" in message
    assert kube_api.stored("apps/v1/deployments", "bot-k8s") is None


def test_taken_node_port_on_a_port_change_is_a_port_conflict(kube_api, orch):
    orch.ensure(make_spec())
    node_port_taken(kube_api, "PATCH", 30102)
    with pytest.raises(PortConflict, match="NodePort 30102 is already allocated") as err:
        orch.ensure(make_spec(port_chrome=30102, port_terminal=30103))
    assert err.value.ports == (30102, 30103)
    # Other 422s stay plain final errors.
    kube_api.clear_injections()
    kube_api.inject("PATCH", "/services", 422, reason="Invalid", message=(
        'Service "bot-k8s-vnc" is invalid: spec.ports[0].nodePort: Invalid value: 40000: '
        "provided port is not in the valid range. The range of valid ports is 30000-32767"))
    with pytest.raises(FinalError) as err:
        orch.ensure(make_spec(port_chrome=40000, port_terminal=40001))
    assert not isinstance(err.value, PortConflict)


def test_secret_values_never_reach_error_messages(kube_api, orch, caplog):
    encoded = base64.b64encode(SECRET_VALUE.encode()).decode()
    kube_api.inject("POST", "/secrets", 422,
                    message=f"data[ANTHROPIC_API_KEY]: {SECRET_VALUE} / {encoded} is invalid")
    with caplog.at_level(logging.DEBUG), pytest.raises(FinalError) as err:
        orch.ensure(make_spec())
    text = str(err.value)
    assert "ANTHROPIC_API_KEY" in text and "***" in text
    assert SECRET_VALUE not in text and encoded not in text
    # The client's exception quotes the whole response: it must not ride along as context.
    assert err.value.__cause__ is None and err.value.__context__ is None
    assert SECRET_VALUE not in caplog.text and encoded not in caplog.text


def test_missing_namespace_is_final(kube_api, orch):
    kube_api.inject("POST", "/persistentvolumeclaims", 404,
                    message='namespaces "claworc" not found')
    with pytest.raises(FinalError, match="namespace claworc does not exist"):
        orch.ensure(make_spec())


def test_concurrent_change_on_patch_is_transient(kube_api, orch):
    orch.ensure(make_spec())
    kube_api.inject("PATCH", "/deployments/bot-k8s", 409, message="the object has been modified")
    with pytest.raises(TransientError, match="409.*modified.*retrying later"):
        orch.stop("bot-k8s")
    kube_api.clear_injections()
    kube_api.inject("PATCH", "/deployments/bot-k8s", 409, message="the object has been modified")
    with pytest.raises(TransientError, match="was changed concurrently"):
        orch.restart("bot-k8s")


def test_unreachable_api_is_transient():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    configuration.retries = False
    orch = KubernetesOrchestrator(api_client=client.ApiClient(configuration), namespace=NS)
    with pytest.raises(TransientError, match=f"127.0.0.1:{port} did not answer"):
        orch.status("bot-k8s")
    with pytest.raises(TransientError):
        orch.ping()


def test_slow_api_times_out_as_transient(kube_api):
    orch = KubernetesOrchestrator(api_client=kube_api.api_client(), namespace=NS, timeout=0.3)
    # Every attempt is slow (urllib3 retries a timed-out GET).
    kube_api.inject("GET", "/deployments/bot-k8s", None, delay=1)
    with pytest.raises(TransientError, match="did not answer"):
        orch.status("bot-k8s")


# --- ping and configuration --------------------------------------------------------------------

def test_ping_reads_the_namespace_itself(kube_api, orch):
    assert orch.ping() == f"API ok at {kube_api.url}, namespace claworc"
    method, path, _ = kube_api.requests()[-1]
    assert (method, path) == ("GET", "/api/v1/namespaces/claworc")


def test_ping_failure_is_transient(kube_api, orch):
    kube_api.inject("GET", "/namespaces/claworc", 500)
    with pytest.raises(TransientError):
        orch.ping()


@pytest.fixture
def no_cluster_env(monkeypatch, tmp_path):
    for var in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "KUBECONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_from_settings_reports_why_nothing_loads(no_cluster_env):
    expected = str(no_cluster_env / "home" / ".kube" / "config")
    with pytest.raises(TransientError) as err:
        KubernetesOrchestrator.from_settings()
    assert str(err.value) == f"no in-cluster config, no kubeconfig at {expected}"


def test_from_settings_reads_kubeconfig_and_settings(no_cluster_env, kube_api, monkeypatch,
                                                     settings):
    path = kube_api.write_kubeconfig(no_cluster_env / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(path))
    settings.CLAWORC_K8S_NAMESPACE = "team-a"
    kube_api.add_namespace("team-a")
    settings.CLAWORC_K8S_PRIVILEGED = False
    before = len(kube_api.requests())
    orch = KubernetesOrchestrator.from_settings()
    assert len(kube_api.requests()) == before  # building it does not touch the network
    assert (orch.namespace, orch.privileged) == ("team-a", False)
    assert orch.ping() == f"API ok at {kube_api.url}, namespace team-a"


def test_from_settings_uses_the_default_kubeconfig(no_cluster_env, kube_api):
    kube_api.write_kubeconfig(no_cluster_env / "home" / ".kube" / "config")
    assert KubernetesOrchestrator.from_settings().ping().startswith("API ok")


def test_from_settings_with_a_broken_kubeconfig(no_cluster_env, monkeypatch):
    path = no_cluster_env / "bad"
    path.write_text("apiVersion: v1\nkind: Config\ncontexts: []\n")
    monkeypatch.setenv("KUBECONFIG", str(path))
    with pytest.raises(TransientError, match=f"kubeconfig at {path} unusable"):
        KubernetesOrchestrator.from_settings()


def test_from_settings_prefers_in_cluster(no_cluster_env, monkeypatch, kube_api):
    """Inside a pod the service account wins over any kubeconfig."""
    from kubernetes.config import incluster_config

    token = no_cluster_env / "token"
    token.write_text("sa-token")
    cert = no_cluster_env / "ca.crt"
    cert.write_text("not used over http")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(cert))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("KUBECONFIG", str(kube_api.write_kubeconfig(no_cluster_env / "kc")))
    orch = KubernetesOrchestrator.from_settings()
    assert orch.api_client.configuration.host == "https://10.0.0.1:443"
