"""Resource usage on Kubernetes: metrics.k8s.io in one list call, "not available" without it."""

from orchestrators.kubernetes import (
    KubernetesOrchestrator,
    metric_cpu_cores,
    usage_from_pod_metrics,
)
from tests import kube_support

kube_api = kube_support.kube_api
NS = "claworc"


def test_a_cluster_without_metrics_server_says_not_available_in_one_call(kube_api):
    orch = KubernetesOrchestrator(api_client=kube_api.api_client(), namespace=NS, timeout=5)
    # What an API server answers for an aggregated API nobody registered.
    kube_api.inject("GET", "/apis/metrics.k8s.io/", status=404, message="the server could not "
                    "find the requested resource")
    before = len(kube_api.requests())
    usage = orch.usage(["bot-a", "bot-b"])
    assert len(kube_api.requests()) - before == 1
    assert sorted(usage) == ["bot-a", "bot-b"]
    assert not usage["bot-a"].available
    assert "metrics.k8s.io" in usage["bot-a"].message and "metrics-server" in usage["bot-a"].message


def test_pod_metrics_are_read_per_instance():
    items = [
        {"metadata": {"name": "bot-a-123", "labels": {"claworc.instance": "bot-a"}},
         "containers": [{"name": "agent", "usage": {"cpu": "250000000n", "memory": "300Mi"}},
                        {"name": "sidecar", "usage": {"cpu": "1", "memory": "1Gi"}}]},
        {"metadata": {"name": "other", "labels": {}},
         "containers": [{"name": "agent", "usage": {"cpu": "1", "memory": "1Gi"}}]},
    ]
    usage = usage_from_pod_metrics(items)
    assert list(usage) == ["bot-a"]
    assert usage["bot-a"].cpu_cores == 0.25
    assert usage["bot-a"].memory_bytes == 300 * 2**20
    assert [metric_cpu_cores(v) for v in ("250m", "2", "1500u", "bad")] == [
        0.25, 2.0, 0.0015, None]
