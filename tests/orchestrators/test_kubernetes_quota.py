"""Capacity on Kubernetes, against the emulator: the namespace's ResourceQuota and LimitRange
read as the budget (and admission refusing what does not fit, before anything is created), and a
Pod no node can take shown as such in the status message.

kmock stores a ResourceQuota's `status` as it is sent, so each test writes what kube-apiserver's
quota controller would have counted in `status.used`.
"""

from decimal import Decimal

import pytest
from kubernetes import client

from instances import services
from instances.models import Instance
from instances.services.capacity import CapacityExceeded
from orchestrators import registry
from orchestrators.base import InstanceSpec, Resources, Status
from orchestrators.kubernetes import KubernetesOrchestrator
from tests import kube_support

kube_api = kube_support.kube_api

NS = "claworc"


@pytest.fixture
def orch(kube_api):
    return KubernetesOrchestrator(api_client=kube_api.api_client(), namespace=NS, timeout=5)


@pytest.fixture
def core(kube_api):
    return client.CoreV1Api(kube_api.api_client())


def quota(core, name="compute", *, hard, used):
    core.create_namespaced_resource_quota(NS, {
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name},
        "spec": {"hard": hard}, "status": {"hard": hard, "used": used}})


def spec(name, cpu_request="500m", cpu_limit="1"):
    return InstanceSpec(name=name, image="agent:1", port_chrome=30100, port_terminal=30101,
                        resources=Resources(cpu_request=cpu_request, cpu_limit=cpu_limit))


def test_no_quota_and_no_limit_range_is_no_bound(orch):
    assert orch.host_capacity() is None


def test_the_binding_quota_and_the_limit_range_max_are_read(kube_api, orch, core):
    orch.ensure(spec("bot-q1"))
    kube_api.controller.settle("bot-q1")  # Claworc's own Pod: 500m / 1Gi requested
    # 1500m used: Claworc's 500m and 1 CPU of someone else's.
    quota(core, hard={"requests.cpu": "4", "memory": "16Gi", "pods": "10", "services": "5"},
          used={"requests.cpu": "1500m", "memory": "3Gi", "pods": "2", "services": "1"})
    # A second, tighter quota on CPU binds; a looser one on memory does not.
    quota(core, "tight", hard={"cpu": "3", "requests.memory": "64Gi"},
          used={"cpu": "1500m", "requests.memory": "3Gi"})
    core.create_namespaced_limit_range(NS, {
        "apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "per-container"},
        "spec": {"limits": [{"type": "Container", "max": {"cpu": "2", "memory": "8Gi"},
                             "default": {"cpu": "1", "memory": "2Gi"}}]}})
    found = orch.host_capacity()
    assert found.totals == {"requests.cpu": Decimal(3), "requests.memory": Decimal(16 * 2**30),
                            "pods": Decimal(10)}
    assert found.others == {"requests.cpu": Decimal(1), "requests.memory": Decimal(2 * 2**30),
                            "pods": Decimal(1)}
    assert found.per_instance_max == {"cpu": Decimal(2), "memory": Decimal(8 * 2**30)}
    assert not found.host and found.source == "ResourceQuota compute, tight in namespace claworc"


@pytest.mark.django_db
def test_a_start_that_the_quota_cannot_hold_is_refused_before_anything_is_made(
        kube_api, orch, core):
    quota(core, hard={"requests.cpu": "2", "limits.memory": "64Gi", "pods": "5"},
          used={"requests.cpu": "1", "limits.memory": "0", "pods": "1"})  # not Claworc's
    with registry.override(orch):
        assert registry.record_capacity(orch)
        services.instance_create(display_name="q1", name="bot-q1")
        services.instance_create(display_name="q2", name="bot-q2")
        with pytest.raises(CapacityExceeded) as refused:
            services.instance_create(display_name="q3", name="bot-q3")
        third = services.instance_create(display_name="q3", name="bot-q3",
                                         desired_state="stopped")
        outcome = services.instance_start(instance_ids=[third.pk])
    why = ("needs 0.5 CPU / 4 GiB; 0 CPU / 56 GiB free of 1 CPU / 64 GiB; 2 instances running "
           "(requests.cpu, limits.memory of ResourceQuota compute in namespace claworc)")
    assert refused.value.message_dict == {"cpu_request": [
        f"Not enough capacity for bot-q3: {why}. Nothing was changed."]}
    assert outcome.skipped == [("bot-q3", f"not enough capacity: {why}")]
    assert Instance.objects.get(pk=third.pk).desired_state == "stopped"
    # Nothing reached the cluster: admission is a read of the recorded quota.
    assert kube_api.stored("apps/v1/deployments", "bot-q3") is None


@pytest.mark.parametrize(("resources", "detail", "expected"), [
    (("2", "2"), "0/3 nodes are available: 3 Insufficient cpu.",
     "waiting: the cluster has no node with 2 CPU free "
     "(0/3 nodes are available: 3 Insufficient cpu)"),
    (("1500m", "2"), "0/3 nodes are available: 1 Insufficient cpu, 2 Insufficient memory.",
     "waiting: the cluster has no node with 1.5 CPU and 1 GiB of memory free "
     "(0/3 nodes are available: 1 Insufficient cpu, 2 Insufficient memory)"),
])
def test_a_pod_no_node_can_take_says_what_it_waits_for(kube_api, orch, resources, detail,
                                                        expected):
    orch.ensure(spec("bot-big", *resources))
    kube_api.controller.settle("bot-big", "pending", message=detail)
    observed = orch.status("bot-big")
    assert (observed.status, observed.message) == (Status.CREATING, expected)
    assert orch.status_all()["bot-big"].message == expected


def test_the_scheduler_event_alone_is_enough(kube_api, orch, core):
    orch.ensure(spec("bot-big", "2", "2"))
    [pod] = kube_api.controller.settle("bot-big", "pending")
    name = pod["metadata"]["name"]
    # A Pod whose condition was not written yet: the scheduler's event says why.
    core.patch_namespaced_pod(name, NS, {"status": {"conditions": None}})
    core.create_namespaced_event(NS, {
        "metadata": {"name": "sched.1"}, "type": "Warning", "reason": "FailedScheduling",
        "involvedObject": {"kind": "Pod", "name": name, "namespace": NS},
        "message": "0/3 nodes are available: 3 Insufficient cpu.",
        "lastTimestamp": kube_support._now()})
    assert orch.status("bot-big").message == (
        "waiting: the cluster has no node with 2 CPU free "
        "(0/3 nodes are available: 3 Insufficient cpu)")
