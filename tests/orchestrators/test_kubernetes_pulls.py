"""Kubernetes: the kubelet pulls, so an instance's image pull is told by its Pods' events."""

import pytest
from kubernetes import client

from orchestrators.kubernetes import KubernetesOrchestrator, pull_event_lines
from tests import kube_support

kube_api = kube_support.kube_api
NS = "claworc"


def event(name, pod, reason, message, at, kind="Pod", type_="Normal"):
    return {"metadata": {"name": name, "namespace": NS}, "type": type_, "reason": reason,
            "message": message, "lastTimestamp": at,
            "involvedObject": {"kind": kind, "name": pod, "namespace": NS}}


def test_pull_event_lines_keeps_the_pods_pull_events_in_order():
    events = [
        event("e3", "bot-a-1", "Pulled", 'Successfully pulled image "agent:2" in 93.1s',
              "2026-11-27T12:01:40Z"),
        event("e1", "bot-a-1", "Pulling", 'Pulling image "agent:2"', "2026-11-27T12:00:07Z"),
        event("e2", "bot-a-1", "Scheduled", "Successfully assigned", "2026-11-27T12:00:05Z"),
        event("e4", "bot-b-1", "Pulling", 'Pulling image "other"', "2026-11-27T12:00:08Z"),
        event("e5", "bot-a-1", "Failed", "Error: container exited", "2026-11-27T12:02:00Z"),
    ]
    assert pull_event_lines(events, ["bot-a-1"]) == [
        '12:00:07 Pulling: Pulling image "agent:2"',
        '12:01:40 Pulled: Successfully pulled image "agent:2" in 93.1s',
    ]


@pytest.fixture
def orch(kube_api):
    return KubernetesOrchestrator(api_client=kube_api.api_client(), namespace=NS, timeout=5)


def test_pull_events_of_an_instance_come_from_the_cluster(kube_api, orch):
    from orchestrators.base import InstanceSpec

    orch.ensure(InstanceSpec(name="bot-k8s", image="registry.example/agent:2", port_chrome=30100,
                             port_terminal=30101))
    [pod] = kube_api.controller.settle("bot-k8s", "creating")
    pod_name = pod["metadata"]["name"]
    core = client.CoreV1Api(kube_api.api_client())
    for item in (
        event("p1", pod_name, "Pulling", 'Pulling image "registry.example/agent:2"',
              "2026-11-27T12:00:07Z"),
        event("p2", pod_name, "Failed", 'Failed to pull image "registry.example/agent:2": '
              "rpc error: code = NotFound", "2026-11-27T12:00:09Z", type_="Warning"),
        event("p3", "bot-other-1", "Pulling", 'Pulling image "x"', "2026-11-27T12:00:08Z"),
    ):
        core.create_namespaced_event(NS, item)
    lines = orch.pull_events("bot-k8s")
    assert lines == [
        '12:00:07 Pulling: Pulling image "registry.example/agent:2"',
        '12:00:09 Failed: Failed to pull image "registry.example/agent:2": rpc error: code = '
        "NotFound",
    ]
    assert orch.pulls_images is False and orch.local_image("anything") == ""
    assert orch.pull_events("bot-none") == []
