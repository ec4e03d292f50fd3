"""The test emulator itself: the official client works against it as against a cluster."""

import pytest
from kubernetes import client, config

from tests import kube_support
from tests.kube_support import STATES

kube_api = kube_support.kube_api

DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "bot-k", "labels": {"claworc.instance": "bot-k"}},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "bot-k"}},
        "template": {
            "metadata": {"labels": {"app": "bot-k", "claworc.instance": "bot-k"}},
            "spec": {"containers": [{"name": "agent", "image": "agent:1"}]},
        },
    },
}


def test_kubeconfig_points_the_client_at_the_emulator(kube_api, tmp_path):
    path = kube_api.write_kubeconfig(tmp_path / "kube" / "config", namespace="other")
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=configuration)
    assert configuration.host == kube_api.url
    contexts, current = config.list_kube_config_contexts(config_file=str(path))
    assert current["context"]["namespace"] == "other"
    with client.ApiClient(configuration) as api:
        assert client.CoreV1Api(api).list_namespaced_config_map("claworc").items == []


def test_server_assigns_uid_and_namespace(kube_api):
    core = client.CoreV1Api(kube_api.api_client())
    created = core.create_namespaced_config_map("claworc", {"metadata": {"name": "c"}})
    assert created.metadata.uid and created.metadata.namespace == "claworc"
    assert kube_api.stored("v1/configmaps", "c")["metadata"]["uid"] == created.metadata.uid
    assert kube_api.stored("v1/configmaps", "missing") is None


def test_controller_follows_replicas_and_template(kube_api):
    apps = client.AppsV1Api(kube_api.api_client())
    apps.create_namespaced_deployment("claworc", DEPLOYMENT)
    [pod] = kube_api.controller.settle("bot-k")
    assert pod["metadata"]["labels"]["app"] == "bot-k"
    assert pod["status"]["phase"] == "Running"
    assert pod["status"]["containerStatuses"][0]["ready"] is True

    # Same template: the pod stays and only its status changes.
    [same] = kube_api.controller.settle("bot-k", "crashloop", exit_code=3)
    assert same["metadata"]["name"] == pod["metadata"]["name"]
    waiting = same["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "CrashLoopBackOff"
    assert same["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 3

    # A changed template rolls the pod.
    apps.patch_namespaced_deployment(
        "bot-k", "claworc", {"spec": {"template": {"metadata": {"annotations": {"a": "1"}}}}})
    [rolled] = kube_api.controller.settle("bot-k")
    assert rolled["metadata"]["name"] != pod["metadata"]["name"]

    apps.patch_namespaced_deployment("bot-k", "claworc", {"spec": {"replicas": 0}})
    assert kube_api.controller.settle("bot-k") == []
    apps.patch_namespaced_deployment("bot-k", "claworc", {"spec": {"replicas": 1}})
    assert len(kube_api.controller.settle("bot-k")) == 1
    apps.delete_namespaced_deployment("bot-k", "claworc")
    assert kube_api.controller.settle("bot-k") == []
    assert kube_api.controller.pods("bot-k") == []


@pytest.mark.parametrize("state", STATES)
def test_every_state_makes_a_valid_pod(kube_api, state):
    client.AppsV1Api(kube_api.api_client()).create_namespaced_deployment("claworc", DEPLOYMENT)
    [pod] = kube_api.controller.settle("bot-k", state)
    read = client.CoreV1Api(kube_api.api_client()).read_namespaced_pod(
        pod["metadata"]["name"], "claworc")
    assert read.status.phase in {"Running", "Pending", "Failed", "Unknown"}


def test_pod_logs_are_served_with_tail(kube_api):
    core = client.CoreV1Api(kube_api.api_client())
    kube_api.set_logs("p-1", "one\ntwo\nthree\n")
    assert core.read_namespaced_pod_log("p-1", "claworc", tail_lines=2) == "two\nthree\n"
    with pytest.raises(client.ApiException) as err:
        core.read_namespaced_pod_log("p-2", "claworc")
    assert err.value.status == 404
