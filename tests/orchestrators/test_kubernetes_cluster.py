"""What a real cluster does that an accepting emulator would not show.

Each test replays the status code and body kube-apiserver (or its controllers) really send:
a refused PVC resize, Pod Security / quota / webhook refusals seen only in ReplicaSet conditions
and Events, a missing namespace, a volume still terminating, an out-of-memory kill.
"""

import base64
import dataclasses
import subprocess

import pytest
from kubernetes import client

from orchestrators import registry
from orchestrators.base import FinalError, InstanceSpec, Resources, Status, TransientError
from orchestrators.kubernetes import (
    KubernetesOrchestrator,
    config_checksum,
    seed_script,
)
from tests import kube_support

kube_api = kube_support.kube_api

NS = "claworc"
KEY = "sk-ant-cluster-secret"


@pytest.fixture
def orch(kube_api):
    return KubernetesOrchestrator(api_client=kube_api.api_client(), namespace=NS, timeout=5)


def make_spec(name="bot-k8s", **changes):
    spec = InstanceSpec(name=name, image="agent:1", port_chrome=30100, port_terminal=30101,
                        env={"ANTHROPIC_API_KEY": KEY}, config={"model": "claude"})
    return dataclasses.replace(spec, **changes)


def pvc_size(kube_api, volume):
    pvc = kube_api.stored("v1/persistentvolumeclaims", f"bot-k8s-{volume}")
    return pvc["spec"]["resources"]["requests"]["storage"]


def secret_env(kube_api, name="bot-k8s"):
    data = kube_api.stored("v1/secrets", f"{name}-keys")["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


# --- 1. a refused volume resize ---------------------------------------------------------------

RESIZE_REFUSALS = {
    # A storage class without allowVolumeExpansion (the admission plugin's answer).
    "no-expansion": dict(status=403, reason="Forbidden", message=(
        'persistentvolumeclaims "bot-k8s-homebrew" is forbidden: only dynamically provisioned '
        "pvc can be resized and the storageclass that provisions the pvc must support resize"),
        details={"name": "bot-k8s-homebrew", "kind": "persistentvolumeclaims"}),
    # A claim not bound yet (validation's answer).
    "unbound": dict(status=422, reason="Invalid", message=(
        'PersistentVolumeClaim "bot-k8s-homebrew" is invalid: spec: Forbidden: spec is '
        "immutable after creation except resources.requests and volumeAttributesClassName "
        "for bound claims"), details={
        "name": "bot-k8s-homebrew", "kind": "PersistentVolumeClaim", "causes": [{
            "reason": "FieldValueForbidden",
            "message": "Forbidden: spec is immutable after creation except resources.requests "
                       "and volumeAttributesClassName for bound claims",
            "field": "spec"}]}),
}


@pytest.mark.parametrize("refusal", sorted(RESIZE_REFUSALS))
def test_refused_resize_keeps_the_instance_running_and_says_so(kube_api, orch, refusal):
    orch.ensure(make_spec())
    kube_api.controller.settle("bot-k8s")
    kube_api.inject("PATCH", "/persistentvolumeclaims/bot-k8s-homebrew",
                    **RESIZE_REFUSALS[refusal])
    bigger = dataclasses.replace(make_spec().storage, homebrew="50Gi")

    observed = orch.ensure(make_spec(storage=bigger))

    assert observed.status is Status.RUNNING
    [note] = observed.notes
    assert note.startswith("Volume bot-k8s-homebrew stays at 10Gi: Kubernetes refused to grow "
                           "it to 50Gi")
    assert "allowVolumeExpansion" in note and "The instance runs on the current size" in note
    assert RESIZE_REFUSALS[refusal]["message"].split(": ", 1)[1][:40] in note
    assert "RBAC" not in note and "Role" not in note
    assert pvc_size(kube_api, "homebrew") == "10Gi"
    # Later changes are not blocked by the volume: a key change still reaches the pod.
    [pod] = kube_api.controller.pods("bot-k8s")
    observed = orch.ensure(make_spec(storage=bigger, env={"ANTHROPIC_API_KEY": "sk-new"}))
    assert observed.status is not Status.ERROR
    assert secret_env(kube_api) == {"ANTHROPIC_API_KEY": "sk-new"}
    [new_pod] = kube_api.controller.settle("bot-k8s")
    assert new_pod["metadata"]["name"] != pod["metadata"]["name"]
    assert orch.restart("bot-k8s").status is not Status.ERROR


def test_accepted_resize_is_asked_for(kube_api, orch):
    orch.ensure(make_spec())
    bigger = dataclasses.replace(make_spec().storage, clawd="8Gi")
    assert orch.ensure(make_spec(storage=bigger)).notes == ()
    assert pvc_size(kube_api, "clawd") == "8Gi"


def test_running_instance_shows_the_refused_resize(kube_api, orch, db):
    """What staff see in the instance's status message (the services layer keeps notes)."""
    from instances.services.converge import _observed_fields

    orch.ensure(make_spec())
    kube_api.controller.settle("bot-k8s")
    kube_api.inject("PATCH", "/persistentvolumeclaims/bot-k8s-chrome",
                    **RESIZE_REFUSALS["no-expansion"])
    bigger = dataclasses.replace(make_spec().storage, chrome="9Gi")
    status, message = _observed_fields(orch.ensure(make_spec(storage=bigger)))
    assert status == "running"
    assert message.startswith("Volume bot-k8s-chrome stays at 5Gi")


# --- 2. volumes seeded from the image ---------------------------------------------------------

def _run_seed(tmp_path, pairs):
    subprocess.run(["/bin/sh", "-c", seed_script(pairs)], check=True, timeout=60)


def test_seed_copies_the_image_directory_into_an_empty_volume_once(tmp_path):
    image_dir = tmp_path / "image" / "linuxbrew"
    (image_dir / "bin").mkdir(parents=True)
    (image_dir / "bin" / "brew").write_text("#!/bin/sh\n")
    (image_dir / "bin" / "brew").chmod(0o755)
    image_dir.chmod(0o750)
    volume = tmp_path / "pvc"
    (volume / "lost+found").mkdir(parents=True)  # a new ext4 filesystem's only entry

    _run_seed(tmp_path, [(str(image_dir), str(volume))])
    assert (volume / "bin" / "brew").read_text() == "#!/bin/sh\n"
    assert (volume / "bin" / "brew").stat().st_mode & 0o777 == 0o755
    assert volume.stat().st_mode & 0o777 == 0o750  # the root takes the directory's mode
    assert (volume / ".claworc-seeded").exists()

    # Once: what a person removes later is not brought back.
    (volume / "bin" / "brew").unlink()
    _run_seed(tmp_path, [(str(image_dir), str(volume))])
    assert not (volume / "bin" / "brew").exists()


def test_seed_leaves_a_volume_with_data_alone(tmp_path):
    image_dir = tmp_path / "image"
    image_dir.mkdir()
    (image_dir / "from-image").write_text("x")
    volume = tmp_path / "pvc"
    volume.mkdir()
    (volume / "users-file").write_text("keep")
    missing = tmp_path / "not-in-image"
    other = tmp_path / "pvc2"
    other.mkdir()
    _run_seed(tmp_path, [(str(image_dir), str(volume)), (str(missing), str(other))])
    assert sorted(p.name for p in volume.iterdir()) == [".claworc-seeded", "users-file"]
    assert sorted(p.name for p in other.iterdir()) == [".claworc-seeded"]


# --- 3. refused pods --------------------------------------------------------------------------

POD_SECURITY = ('pods "bot-k8s-6b7f9c8d5-x2x7q" is forbidden: violates PodSecurity '
                '"baseline:latest": privileged (container "agent" must not set '
                "securityContext.privileged=true)")
QUOTA = ('pods "bot-k8s-6b7f9c8d5-x2x7q" is forbidden: exceeded quota: compute, requested: '
         "limits.memory=4Gi, used: limits.memory=6Gi, limited: limits.memory=8Gi")
WEBHOOK = ('admission webhook "validate.policy.example.com" denied the request: images from '
           "unknown registries are not allowed")


def replica_failure(kube_api, message):
    """The Deployment's status as the deployment controller writes it after a refused Pod."""
    apps = client.AppsV1Api(kube_api.api_client())
    now = kube_support._now()
    apps.patch_namespaced_deployment("bot-k8s", NS, {"status": {
        "observedGeneration": 1, "replicas": 0, "unavailableReplicas": 1,
        "conditions": [
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetCreated",
             "message": 'Created new replica set "bot-k8s-6b7f9c8d5"',
             "lastUpdateTime": now, "lastTransitionTime": now},
            {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
             "message": "Deployment does not have minimum availability.",
             "lastUpdateTime": now, "lastTransitionTime": now},
            {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
             "message": message, "lastUpdateTime": now, "lastTransitionTime": now},
        ]}})


def failed_create_event(kube_api, message, *, rs="bot-k8s-6b7f9c8d5", name="ev1"):
    """The Warning event the ReplicaSet controller records for each refused Pod."""
    core = client.CoreV1Api(kube_api.api_client())
    now = kube_support._now()
    core.create_namespaced_event(NS, {
        "metadata": {"name": f"{rs}.{name}", "namespace": NS},
        "involvedObject": {"kind": "ReplicaSet", "namespace": NS, "name": rs,
                           "apiVersion": "apps/v1", "uid": "0c0ffee0"},
        "reason": "FailedCreate", "message": f"Error creating: {message}",
        "source": {"component": "replicaset-controller"}, "type": "Warning",
        "firstTimestamp": now, "lastTimestamp": now, "count": 3})


def test_pod_security_refusal_in_the_conditions_is_an_error_with_the_fix(kube_api, orch):
    orch.ensure(make_spec())
    replica_failure(kube_api, POD_SECURITY)
    observed = orch.status("bot-k8s")
    assert observed.status is Status.ERROR
    assert observed.message.startswith("Kubernetes refused to create the pod: " + POD_SECURITY)
    assert ("kubectl label namespace claworc pod-security.kubernetes.io/enforce=privileged"
            in observed.message)
    assert orch.status_all()["bot-k8s"].message == observed.message


@pytest.mark.parametrize(("message", "hint"), [
    (POD_SECURITY, "pod-security.kubernetes.io/enforce=privileged"),
    (QUOTA, "ResourceQuota in namespace claworc"),
    (WEBHOOK, "admission webhook refuses it"),
])
def test_refusal_known_only_from_the_replicaset_events(kube_api, orch, message, hint):
    """Before the Deployment copies the condition, the ReplicaSet's events already say it."""
    orch.ensure(make_spec())
    # Another instance's refusals are not ours.
    failed_create_event(kube_api, "not about bot-k8s", rs="bot-k8s-two-5c4b3a2", name="ev0")
    failed_create_event(kube_api, message)
    observed = orch.status("bot-k8s")
    assert observed.status is Status.ERROR
    assert observed.message.startswith(f"Kubernetes refused to create the pod: {message}")
    assert hint in observed.message
    before = len(kube_api.requests())
    assert orch.status_all()["bot-k8s"].message == observed.message
    paths = [p for _, p, _ in kube_api.requests()[before:]]
    assert paths[-1] == f"/api/v1/namespaces/{NS}/events"  # one list for the whole namespace


def test_a_refusal_from_before_the_deployment_was_made_does_not_count(kube_api, orch):
    """Events live an hour: one about an earlier Deployment of that name is history."""
    failed_create_event(kube_api, QUOTA)
    core = client.CoreV1Api(kube_api.api_client())
    core.patch_namespaced_event("bot-k8s-6b7f9c8d5.ev1", NS,
                                {"lastTimestamp": "2020-01-01T00:00:00Z"})
    orch.ensure(make_spec())
    observed = orch.status("bot-k8s")
    assert observed.status is Status.CREATING, observed.message


def test_no_events_read_while_every_instance_has_a_ready_pod(kube_api, orch):
    orch.ensure(make_spec())
    kube_api.controller.settle("bot-k8s")
    before = len(kube_api.requests())
    assert orch.status_all()["bot-k8s"].status is Status.RUNNING
    assert orch.status("bot-k8s").status is Status.RUNNING
    assert not any(p.endswith("/events") for _, p, _ in kube_api.requests()[before:])


def test_pending_pod_shows_its_warning_event(kube_api, orch):
    orch.ensure(make_spec())
    [pod] = kube_api.controller.settle("bot-k8s", "creating")
    core = client.CoreV1Api(kube_api.api_client())
    core.create_namespaced_event(NS, {
        "metadata": {"name": "mount.1"}, "type": "Warning", "reason": "FailedMount",
        "involvedObject": {"kind": "Pod", "name": pod["metadata"]["name"], "namespace": NS},
        "message": 'MountVolume.SetUp failed for volume "config" : configmap '
                   '"bot-k8s-config" not found', "lastTimestamp": kube_support._now()})
    observed = orch.status("bot-k8s")
    assert observed.status is Status.CREATING  # it may still come up
    assert "FailedMount" in observed.message


# --- 4. an interrupted key change -------------------------------------------------------------

def test_key_change_whose_restart_failed_once_reaches_the_pod_on_the_next_ensure(kube_api, orch):
    orch.ensure(make_spec())
    [old_pod] = kube_api.controller.settle("bot-k8s")
    changed = make_spec(env={"ANTHROPIC_API_KEY": "sk-rotated"})
    kube_api.inject("PATCH", "/deployments/bot-k8s", 503, message="etcdserver: request timed out",
                    times=1)
    with pytest.raises(TransientError):
        orch.ensure(changed)
    assert secret_env(kube_api) == {"ANTHROPIC_API_KEY": "sk-rotated"}  # the Secret got it...
    assert [p["metadata"]["name"] for p in kube_api.controller.settle("bot-k8s")] == [
        old_pod["metadata"]["name"]]  # ...but the Pod still runs with the old key

    orch.ensure(changed)  # the retry

    [new_pod] = kube_api.controller.settle("bot-k8s")
    assert new_pod["metadata"]["name"] != old_pod["metadata"]["name"]
    assert new_pod["metadata"]["annotations"]["claworc/config-checksum"] == config_checksum(
        changed)
    assert orch.status("bot-k8s").status is Status.RUNNING


def test_config_change_rolls_the_pod_and_the_same_spec_does_not(kube_api, orch):
    orch.ensure(make_spec())
    [pod] = kube_api.controller.settle("bot-k8s")
    orch.ensure(make_spec())
    assert kube_api.controller.settle("bot-k8s")[0]["metadata"]["name"] == pod["metadata"]["name"]
    orch.ensure(make_spec(config={"model": "other"}))
    assert kube_api.controller.settle("bot-k8s")[0]["metadata"]["name"] != pod["metadata"]["name"]


# --- 6. the NodePort range --------------------------------------------------------------------

def test_ping_warns_when_the_port_range_is_outside_the_node_port_range(kube_api):
    inside = KubernetesOrchestrator(api_client=kube_api.api_client(), namespace=NS,
                                    port_range=(30100, 30199))
    assert "warning" not in inside.ping()
    outside = KubernetesOrchestrator(api_client=kube_api.api_client(), namespace=NS,
                                     port_range=(40000, 40099))
    answer = outside.ping()
    assert answer.startswith(f"API ok at {kube_api.url}, namespace claworc; warning: ")
    assert "(40000-40099) lies outside the cluster's NodePort range (30000-32767" in answer
    custom = KubernetesOrchestrator(api_client=kube_api.api_client(), namespace=NS,
                                    port_range=(40000, 40099), node_port_range=(20000, 45000))
    assert "warning" not in custom.ping()


# --- 8. the namespace itself ------------------------------------------------------------------

def test_missing_namespace_fails_the_ping_with_what_to_do(kube_api, orch):
    kube_api.remove_namespace(NS)
    with pytest.raises(FinalError) as err:
        orch.ping()
    message = str(err.value)
    assert message.startswith(f"namespace claworc does not exist at {kube_api.url}")
    assert "kubectl create namespace claworc" in message and "CLAWORC_K8S_NAMESPACE" in message


def test_unreadable_namespace_fails_the_ping(kube_api, orch):
    kube_api.inject("GET", "/api/v1/namespaces/claworc", 403, reason="Forbidden", message=(
        'namespaces "claworc" is forbidden: User "system:serviceaccount:claworc:claworc" '
        'cannot get resource "namespaces" in API group "" in the namespace "claworc"'),
        details={"name": "claworc", "kind": "namespaces"})
    with pytest.raises(FinalError, match="namespace claworc .* is not readable by this account"):
        orch.ping()


def test_terminating_namespace_fails_the_ping(kube_api, orch):
    kube_api.add_namespace(NS, phase="Terminating")
    with pytest.raises(FinalError, match="is being deleted"):
        orch.ping()


def test_detection_does_not_choose_a_cluster_without_the_namespace(kube_api, tmp_path,
                                                                   monkeypatch, settings):
    monkeypatch.setenv("KUBECONFIG", str(kube_api.write_kubeconfig(tmp_path / "kubeconfig")))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    settings.CLAWORC_K8S_NAMESPACE = "missing-ns"
    probe, orchestrator = registry.probe("kubernetes", timeout=30)
    assert orchestrator is None and not probe.usable
    assert probe.reason.startswith("namespace missing-ns does not exist")
    kube_api.add_namespace("missing-ns")
    probe, orchestrator = registry.probe("kubernetes", timeout=30)
    assert probe.usable and orchestrator is not None


# --- 9. terminating volumes, impossible resources, OOM kills ----------------------------------

def test_recreating_while_a_volume_is_still_terminating_waits(kube_api, orch):
    orch.ensure(make_spec())
    orch.delete("bot-k8s", purge_volumes=True)
    # A PVC still mounted somewhere is held by its protection finalizer: it stays, Terminating.
    core = client.CoreV1Api(kube_api.api_client())
    core.create_namespaced_persistent_volume_claim(NS, {
        "metadata": {"name": "bot-k8s-clawd", "labels": {
            "app": "bot-k8s", "managed-by": "claworc", "claworc.instance": "bot-k8s"},
            "finalizers": ["kubernetes.io/pvc-protection"],
            "deletionTimestamp": kube_support._now(), "deletionGracePeriodSeconds": 0},
        "spec": {"accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "5Gi"}}}})
    with pytest.raises(TransientError, match="PersistentVolumeClaim bot-k8s-clawd is still being "
                                             "deleted"):
        orch.ensure(make_spec())
    assert kube_api.stored("apps/v1/deployments", "bot-k8s") is None
    # Deleting again does not ask to delete what is already going.
    before = len(kube_api.requests())
    orch.delete("bot-k8s", purge_volumes=True)
    assert not any(m == "DELETE" and p.endswith("/bot-k8s-clawd")
                   for m, p, _ in kube_api.requests()[before:])
    # The pod using it is gone: the finalizer is removed and the deletion finishes.
    core.patch_namespaced_persistent_volume_claim("bot-k8s-clawd", NS,
                                                  {"metadata": {"finalizers": None}})
    assert kube_api.stored("v1/persistentvolumeclaims", "bot-k8s-clawd") is None
    assert orch.ensure(make_spec()).status is Status.CREATING


def test_request_above_its_limit_is_refused_before_anything_is_made(kube_api, orch):
    spec = make_spec(resources=Resources(cpu_request="3", cpu_limit="2", memory_request="8Gi",
                                         memory_limit="4Gi"))
    with pytest.raises(FinalError) as err:
        orch.ensure(spec)
    assert str(err.value) == (
        "Instance bot-k8s cannot run on Kubernetes: the CPU request 3 is above its limit 2; "
        "the memory request 8Gi is above its limit 4Gi.")
    assert [m for m, _, _ in kube_api.requests()] == []


def test_out_of_memory_kill_is_named(kube_api, orch):
    orch.ensure(make_spec())
    kube_api.controller.settle("bot-k8s", "oomkilled")
    observed = orch.status("bot-k8s")
    assert observed.status is Status.ERROR and observed.exit_code == 137
    assert "killed for running out of memory (OOMKilled, memory limit 4Gi)" in observed.message
    assert "raise the instance's memory limit" in observed.message


@pytest.mark.parametrize(("resource", "name"), [
    ("services", "bot-k8s-vnc"), ("secrets", "bot-k8s-keys"), ("configmaps", "bot-k8s-config"),
])
def test_a_service_secret_or_configmap_removed_outside_is_seen_and_repaired(
        kube_api, orch, resource, name):
    orch.ensure(make_spec())
    orch.ensure(make_spec("bot-other", port_chrome=30102, port_terminal=30103))
    [pod] = kube_api.controller.settle("bot-k8s")
    kube_api.controller.settle("bot-other")
    assert set(orch.status_all()) == {"bot-k8s", "bot-other"}
    core = client.CoreV1Api(kube_api.api_client())
    getattr(core, {"services": "delete_namespaced_service", "secrets": "delete_namespaced_secret",
                   "configmaps": "delete_namespaced_config_map"}[resource])(name, NS)

    # Left out, so reconcile_all sees the workload missing and runs ensure.
    assert set(orch.status_all()) == {"bot-other"}
    orch.ensure(make_spec())
    assert kube_api.stored(f"v1/{resource}", name) is not None
    assert set(orch.status_all()) == {"bot-k8s", "bot-other"}
    # Only what was gone is made again: the Pod was not replaced.
    assert [p["metadata"]["name"] for p in kube_api.controller.settle("bot-k8s")] == [
        pod["metadata"]["name"]]


def test_a_stopped_instance_costs_no_extra_list_calls(kube_api, orch):
    orch.ensure(make_spec())
    orch.stop("bot-k8s")
    before = len(kube_api.requests())
    assert orch.status_all()["bot-k8s"].status is Status.STOPPED
    assert [p.rsplit("/", 1)[-1] for _, p, _ in kube_api.requests()[before:]] == [
        "deployments", "pods"]
