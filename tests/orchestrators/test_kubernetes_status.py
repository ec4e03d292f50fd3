"""How Pods map to an instance's observed status (issue 6), as pure functions."""

import pytest

from orchestrators.base import Status
from orchestrators.kubernetes import observe, observe_pod, pods_of

DEPLOYMENT = {"metadata": {"name": "bot-a"}, "spec": {"replicas": 1}}
STOPPED_DEPLOYMENT = {"metadata": {"name": "bot-a"}, "spec": {"replicas": 0}}


def pod(phase="Running", *, ready=True, waiting=None, terminated=None, last_exit=None,
        name="bot-a-1", created="2026-01-01T00:00:00Z", deleting=False, scheduled=None,
        reason=None, message=None, instance="bot-a"):
    container = {"name": "agent", "ready": ready, "state": {}}
    if waiting:
        container["state"] = {"waiting": waiting}
    elif terminated:
        container["state"] = {"terminated": terminated}
    elif phase == "Running":
        container["state"] = {"running": {}}
    if last_exit is not None:
        container["lastState"] = {"terminated": {"exitCode": last_exit}}
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    if scheduled is not None:
        conditions.append({"type": "PodScheduled", **scheduled})
    meta = {"name": name, "creationTimestamp": created,
            "labels": {"claworc.instance": instance}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    status = {"phase": phase, "conditions": conditions, "containerStatuses": [container]}
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    return {"metadata": meta, "status": status}


def test_no_deployment_is_stopped_and_not_existing():
    observed = observe("bot-a", None, [])
    assert (observed.status, observed.exists) == (Status.STOPPED, False)


def test_scaled_to_zero_is_stopped_even_while_the_pod_terminates():
    assert observe("bot-a", STOPPED_DEPLOYMENT, []).status is Status.STOPPED
    observed = observe("bot-a", STOPPED_DEPLOYMENT, [pod(deleting=True)])
    assert observed.status is Status.STOPPED and observed.exists
    assert "terminating" in observed.message


def test_wanted_but_no_pod_yet_is_creating():
    assert observe("bot-a", DEPLOYMENT, []).status is Status.CREATING
    # Only the old pod, on its way out (Recreate rollout).
    assert observe("bot-a", DEPLOYMENT, [pod(deleting=True)]).status is Status.CREATING


def test_running_and_ready_is_running():
    observed = observe("bot-a", DEPLOYMENT, [pod()])
    assert observed.status is Status.RUNNING and "bot-a-1" in observed.message


def test_running_not_ready_is_creating():
    assert observe_pod("bot-a", pod(ready=False)).status is Status.CREATING


@pytest.mark.parametrize("waiting", ["ContainerCreating", "PodInitializing"])
def test_waiting_container_is_creating(waiting):
    observed = observe_pod("bot-a", pod("Pending", ready=False, waiting={"reason": waiting}))
    assert observed.status is Status.CREATING and waiting in observed.message


def test_pending_unschedulable_is_creating_with_the_scheduler_reason():
    observed = observe_pod("bot-a", {"metadata": {"name": "p"}, "status": {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient memory."}]}})
    assert observed.status is Status.CREATING
    assert observed.message == ("waiting: the cluster has no node with the memory it requests "
                                "free (0/3 nodes are available: 3 Insufficient memory)")


def test_pending_unschedulable_for_another_reason_keeps_the_scheduler_words():
    observed = observe_pod("bot-a", {"metadata": {"name": "p"}, "status": {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 node(s) had untolerated taint."}]}})
    assert observed.message == ("Pending: Unschedulable: 0/3 nodes are available: 3 node(s) "
                                "had untolerated taint.")


def test_crash_loop_is_error_with_reason_and_exit_code():
    observed = observe_pod("bot-a", pod(ready=False, last_exit=137, waiting={
        "reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container"}))
    assert observed.status is Status.ERROR
    assert observed.message == ("CrashLoopBackOff: back-off 5m0s restarting failed container "
                                "(last exit code 137)")
    assert observed.exit_code == 137


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "ErrImagePull",
                                    "CreateContainerConfigError", "InvalidImageName"])
def test_waiting_that_will_not_resolve_is_error(reason):
    observed = observe_pod("bot-a", pod("Pending", ready=False, waiting={
        "reason": reason, "message": "details"}))
    assert observed.status is Status.ERROR and observed.message == f"{reason}: details"


@pytest.mark.parametrize("phase", ["Failed", "Unknown"])
def test_failed_or_unknown_pod_is_error_with_reason(phase):
    observed = observe_pod("bot-a", pod(phase, ready=False, reason="Evicted",
                                        message="The node was low on resource: memory."))
    assert observed.status is Status.ERROR
    assert observed.message == (f"pod bot-a-1 {phase}: Evicted: "
                                "The node was low on resource: memory.")


def test_terminated_container_between_restarts_is_error():
    observed = observe_pod("bot-a", pod(ready=False, terminated={
        "exitCode": 2, "reason": "Error"}))
    assert observed.status is Status.ERROR and observed.exit_code == 2
    assert "exit code 2" in observed.message


def test_newest_live_pod_wins():
    old = pod(name="old", created="2026-01-01T00:00:00Z", ready=False,
              waiting={"reason": "CrashLoopBackOff"})
    new = pod(name="new", created="2026-01-01T00:05:00Z")
    terminating = pod(name="gone", created="2026-01-01T00:09:00Z", deleting=True,
                      ready=False, waiting={"reason": "CrashLoopBackOff"})
    observed = observe("bot-a", DEPLOYMENT, [old, terminating, new])
    assert observed.status is Status.RUNNING and "new" in observed.message


def test_pods_of_filters_labels_itself():
    mine, other = pod(name="m"), pod(name="o", instance="bot-b")
    unlabeled = {"metadata": {"name": "u"}}
    assert pods_of("bot-a", [mine, other, unlabeled]) == [mine]
