"""Resource usage on Kubernetes: metrics.k8s.io in one list call, "not available" without it."""

import pytest
from kubernetes import client

from instances.models import Instance, InstanceUsage
from instances.usage import usage_sample, volume_text, volumes_text
from orchestrators.base import InstanceSpec
from orchestrators.kubernetes import (
    KubernetesOrchestrator,
    metric_cpu_cores,
    pvc_name,
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


# --- volume sizes -------------------------------------------------------------------------------

GI = 2**30
SUFFIXES = ("clawdbot", "homebrew", "clawd", "chrome")


def running_instance(kube_api, orch, name, *, node="node-1", used=None, capacity=True):
    """An instance whose pod runs on `node`, its PVCs bound (capacity as requested), and what
    the kubelet of `node` says each uses (added to the node's stats summary)."""
    spec = InstanceSpec(name=name, image="agent:1", port_chrome=30100, port_terminal=30101)
    orch.ensure(spec)
    [pod] = kube_api.controller.settle(name)
    core = client.CoreV1Api(kube_api.api_client())
    if node != "node-1":
        core.patch_namespaced_pod(pod["metadata"]["name"], NS, {"spec": {"nodeName": node}})
    if capacity:
        for suffix in SUFFIXES:
            storage = getattr(spec.storage, suffix)
            core.patch_namespaced_persistent_volume_claim(
                pvc_name(name, suffix), NS, {"status": {"phase": "Bound",
                                                         "capacity": {"storage": storage}}})
    summary = kube_api.emulator.node_stats.setdefault(node, {"node": {"nodeName": node},
                                                             "pods": []})
    summary["pods"].append({
        "podRef": {"name": pod["metadata"]["name"], "namespace": NS},
        "volume": [{"name": suffix, "usedBytes": (used or {}).get(suffix, 1000 + i),
                    "capacityBytes": 5 * GI,
                    "pvcRef": {"name": pvc_name(name, suffix), "namespace": NS}}
                   for i, suffix in enumerate(SUFFIXES)]
        # A volume of another namespace with the same claim name must not be taken for ours.
        + [{"name": "x", "usedBytes": 1, "pvcRef": {"name": pvc_name(name, "clawd"),
                                                    "namespace": "elsewhere"}}]})
    return spec


def calls_during(kube_api, fn):
    before = len(kube_api.requests())
    result = fn()
    return result, kube_api.requests()[before:]


def test_pvc_sizes_requested_capacity_and_used_in_three_calls(kube_api):
    orch = KubernetesOrchestrator(api_client=kube_api.api_client(), namespace=NS, timeout=5)
    running_instance(kube_api, orch, "bot-vol", used={"homebrew": 3 * GI})
    report, calls = calls_during(kube_api, lambda: orch.volume_report(20))
    assert [(m, p.split("/")[-1]) for m, p, _ in calls] == [
        ("GET", "persistentvolumeclaims"), ("GET", "pods"), ("GET", "summary")]
    assert calls[-1][1] == "/api/v1/nodes/node-1/proxy/stats/summary"
    assert report.calls == 3
    sizes = report.sizes["bot-vol"]
    assert sorted(sizes) == sorted(pvc_name("bot-vol", s) for s in SUFFIXES)
    homebrew = sizes[pvc_name("bot-vol", "homebrew")]
    assert (homebrew.requested, homebrew.capacity, homebrew.used, homebrew.note) == (
        10 * GI, 10 * GI, 3 * GI, "")
    assert sizes[pvc_name("bot-vol", "clawd")].used == 1002  # this namespace's, not the other


def test_used_is_not_available_when_the_role_may_not_read_the_kubelet(kube_api):
    orch = KubernetesOrchestrator(api_client=kube_api.api_client(), namespace=NS, timeout=5)
    running_instance(kube_api, orch, "bot-a")
    running_instance(kube_api, orch, "bot-b", node="node-2")
    # What kube-apiserver answers a Role without nodes/proxy.
    kube_api.inject("GET", "/proxy/stats/summary", 403, reason="Forbidden", message=(
        'nodes "node-1" is forbidden: User "system:serviceaccount:claworc:claworc-dashboard" '
        'cannot get resource "nodes/proxy" in API group "" at the cluster scope'))
    report, calls = calls_during(kube_api, lambda: orch.volume_report(20))
    # The first refusal is enough: the other node is not asked.
    assert sum(p.endswith("/stats/summary") for _, p, _ in calls) == 1 == report.calls - 2
    for name in ("bot-a", "bot-b"):
        for size in report.sizes[name].values():
            assert size.used is None and size.capacity and size.requested
            assert size.note.startswith("used: not available")
            assert "deploy/optional/volume-usage.yaml" in size.note


def test_volume_calls_stay_within_the_budget_given(kube_api):
    orch = KubernetesOrchestrator(api_client=kube_api.api_client(), namespace=NS, timeout=5)
    running_instance(kube_api, orch, "bot-a")
    running_instance(kube_api, orch, "bot-b", node="node-2")
    running_instance(kube_api, orch, "bot-c", node="node-2")
    assert calls_during(kube_api, lambda: orch.volume_report(0)) == (None, [])
    # (budget, calls made, of which stats summaries): the PVC list alone until the pods and
    # at least one node fit.
    for budget, made, node_calls in ((1, 1, 0), (2, 1, 0), (3, 3, 1), (4, 4, 2), (20, 4, 2)):
        report, calls = calls_during(kube_api, lambda b=budget: orch.volume_report(b))
        assert len(calls) == report.calls == made <= budget
        summaries = [p for _, p, _ in calls if p.endswith("/stats/summary")]
        assert len(summaries) == node_calls
        if node_calls == 1:  # the node holding most of the volumes goes first
            assert summaries == ["/api/v1/nodes/node-2/proxy/stats/summary"]
            assert all(s.used for s in report.sizes["bot-b"].values())
            assert all("CLAWORC_USAGE_MAX_CALLS" in s.note for s in report.sizes["bot-a"].values())
        # Requested and capacity come from the one PVC list, whatever the budget.
        assert all(s.capacity for sizes in report.sizes.values() for s in sizes.values())


def test_a_volume_no_running_pod_mounts_says_so(kube_api):
    orch = KubernetesOrchestrator(api_client=kube_api.api_client(), namespace=NS, timeout=5)
    running_instance(kube_api, orch, "bot-a", capacity=False)
    orch.stop("bot-a")
    kube_api.controller.settle("bot-a")  # scaled to 0: no pod
    report = orch.volume_report(20)
    assert report.calls == 2  # PVCs and pods; no node to ask
    for size in report.sizes["bot-a"].values():
        assert (size.used, size.capacity) == (None, None) and size.requested
        assert size.note == "used: not available (no running pod mounts it)"


@pytest.mark.django_db
def test_a_sampling_run_is_pinned_in_api_calls_and_shows_the_sizes(kube_api, settings):
    orch = KubernetesOrchestrator(api_client=kube_api.api_client(), namespace=NS, timeout=5)
    names = ["bot-a", "bot-b", "bot-c"]
    for i, name in enumerate(names):
        running_instance(kube_api, orch, name, node=f"node-{1 + i % 2}",
                         used=dict.fromkeys(SUFFIXES, GI))
    Instance.objects.bulk_create(Instance(name=n, display_name=n, status="running")
                                 for n in names)
    kube_api.inject("GET", "/apis/metrics.k8s.io/", status=404)

    # PodMetrics 1, PVCs 1, pods 1, one stats summary per node (2): 5, whatever the instances.
    settings.CLAWORC_USAGE_MAX_CALLS = 20
    report, calls = calls_during(kube_api, lambda: usage_sample(orch=orch))
    assert len(calls) == 5 and report.volumes
    usage = InstanceUsage.objects.get(instance__name="bot-a")
    assert usage.volume_bytes == 4 * GI
    assert volumes_text(usage) == "4.0 GiB used of 25.0 GiB"
    assert volume_text(usage, pvc_name("bot-a", "homebrew")) == "capacity 10.0 GiB · 1.0 GiB used"
    # Volume sizes are not due again before CLAWORC_USAGE_VOLUME_INTERVAL: one call.
    _, calls = calls_during(kube_api, lambda: usage_sample(orch=orch))
    assert len(calls) == 1

    # Budget 4: PodMetrics, PVCs, pods and one node, the one holding most volumes (node-1:
    # bot-a and bot-c); bot-b's node is left for a run with more room.
    InstanceUsage.objects.update(volumes_sampled_at=None, volumes={}, volume_bytes=None)
    settings.CLAWORC_USAGE_MAX_CALLS = 4
    report, calls = calls_during(kube_api, lambda: usage_sample(orch=orch))
    assert len(calls) == 4 and report.volumes
    assert [p for _, p, _ in calls if p.endswith("/summary")] == [
        "/api/v1/nodes/node-1/proxy/stats/summary"]
    assert InstanceUsage.objects.get(instance__name="bot-c").volume_bytes == 4 * GI
    usage = InstanceUsage.objects.get(instance__name="bot-b")
    assert usage.volume_bytes is None
    assert volumes_text(usage) == "25.0 GiB, used: not available"
    assert "CLAWORC_USAGE_MAX_CALLS" in volume_text(usage, pvc_name("bot-b", "clawd"))

    # Budget 3: PodMetrics and the PVC list; the pods and a node would not both fit.
    InstanceUsage.objects.update(volumes_sampled_at=None)
    settings.CLAWORC_USAGE_MAX_CALLS = 3
    _, calls = calls_during(kube_api, lambda: usage_sample(orch=orch))
    assert len(calls) == 2
    assert InstanceUsage.objects.get(instance__name="bot-a").volume_bytes is None
