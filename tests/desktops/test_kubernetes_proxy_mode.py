"""Kubernetes in proxy mode, over HTTP against the emulated API server: the Service is
ClusterIP (no node port), and switching a running instance to it converges the Service."""

import pytest

from orchestrators.base import InstanceSpec
from orchestrators.kubernetes import KubernetesOrchestrator
from tests import kube_support

kube_api = kube_support.kube_api

SPEC = InstanceSpec(name="bot-kp", image="agent:1", port_chrome=30100, port_terminal=30101)


def orch(kube_api, access):
    return KubernetesOrchestrator(api_client=kube_api.api_client(), namespace="claworc",
                                  timeout=5, desktop_access=access)


@pytest.mark.parametrize("first", ["proxy", "ports"])
def test_proxy_mode_serves_desktops_on_a_cluster_ip_only(kube_api, first):
    orch(kube_api, first).ensure(SPEC)
    orch(kube_api, "proxy").ensure(SPEC)
    svc = kube_api.stored("v1/services", "bot-kp-vnc")
    assert svc["spec"]["type"] == "ClusterIP"
    assert [p.get("nodePort") for p in svc["spec"]["ports"]] == [None, None]
    assert [p["port"] for p in svc["spec"]["ports"]] == [6081, 6082]
    assert orch(kube_api, "proxy").desktop_address("bot-kp", 6081, 30100) == (
        "bot-kp-vnc.claworc.svc", 6081)
