"""A ConfigMap edited outside Claworc (not only one deleted) is seen by status_all and patched
back by ensure, on the official client against the kmock emulator."""

from kubernetes import client

from orchestrators.base import Status
from tests import kube_support

from .test_kubernetes_cluster import NS, make_spec, orch  # noqa: F401  fixtures

kube_api = kube_support.kube_api


def test_a_configmap_edited_outside_is_seen_and_patched_back(kube_api, orch):  # noqa: F811
    spec = make_spec()
    orch.ensure(spec)
    [pod] = kube_api.controller.settle("bot-k8s")
    wanted = orch.config_digest(spec.config)
    assert orch.status_all()["bot-k8s"].config_digest == wanted

    core = client.CoreV1Api(kube_api.api_client())
    core.patch_namespaced_config_map("bot-k8s-config", NS,
                                     {"data": {"clawdbot.json": '{"model": "edited"}\n'}})
    edited = orch.status_all()["bot-k8s"]
    assert edited.config_digest not in ("", wanted)
    assert edited.status is Status.RUNNING  # the workload itself is fine: only its config drifted

    orch.ensure(spec)
    data = kube_api.stored("v1/configmaps", "bot-k8s-config")["data"]["clawdbot.json"]
    assert '"model": "claude"' in data
    assert orch.status_all()["bot-k8s"].config_digest == wanted
    # Its data is back as the Pod read it at start: nothing to roll.
    assert [p["metadata"]["name"] for p in kube_api.controller.settle("bot-k8s")] == [
        pod["metadata"]["name"]]


def test_a_configmap_without_its_key_counts_as_missing(kube_api, orch):  # noqa: F811
    orch.ensure(make_spec())
    kube_api.controller.settle("bot-k8s")
    core = client.CoreV1Api(kube_api.api_client())
    core.patch_namespaced_config_map("bot-k8s-config", NS, {"data": {"clawdbot.json": None}})
    assert orch.status_all()["bot-k8s"].config_digest == ""
