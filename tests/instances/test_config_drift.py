"""The config a backend holds for a workload is observed state: reconcile_all compares it with
the spec's and has it rewritten; a crash it caused is repaired, and a crash that left no log
says why instead of pointing at the (empty) logs."""

import hashlib
import json
from dataclasses import dataclass, field

import pytest

from instances import services
from instances.models import Activity, Instance
from orchestrators.base import InstanceSpec, Observed, Status
from orchestrators.registry import override
from tests.fakes import FakeOrchestrator, FakeWorkload

pytestmark = pytest.mark.django_db


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest() if text else ""


@dataclass
class ConfigFileOrchestrator(FakeOrchestrator):
    """The fake, plus a config "file" per workload that people can delete or edit."""

    files: dict[str, str] = field(default_factory=dict)

    def config_digest(self, config):
        return _digest(json.dumps(dict(config), sort_keys=True))

    def ensure(self, spec: InstanceSpec) -> Observed:
        self.files[spec.name] = json.dumps(dict(spec.config), sort_keys=True)
        return super().ensure(spec)

    def _observed(self, name: str) -> Observed:
        observed = super()._observed(name)
        if name not in self.workloads:
            return observed
        return Observed(**{**observed.__dict__,
                           "config_digest": _digest(self.files.get(name, ""))})


@pytest.fixture
def orch():
    with override(ConfigFileOrchestrator()) as fake:
        yield fake


def _running(orch, name, **fields):
    from instances.specs import instance_spec

    inst = Instance.objects.bulk_create([Instance(
        display_name=name, name=name, status="running", observed_generation=1, owed_since=None,
        clawdbot_config={"agent": {"model": "claude"}}, **fields)])[0]
    spec = instance_spec(inst, privileged=False)
    orch.workloads[name] = FakeWorkload(spec=spec)
    orch.files[name] = json.dumps(dict(spec.config), sort_keys=True)
    return inst


def _drift_messages(name):
    return list(Activity.objects.filter(instance_name=name, action="drift")
                .values_list("message", flat=True))


@pytest.mark.parametrize(("change", "word"), [("delete", "deleted"), ("edit", "changed")])
def test_a_config_deleted_or_edited_outside_is_rewritten_by_the_next_reconcile_all(
        orch, run_tasks, change, word):
    inst = _running(orch, "bot-t4-cfg")
    untouched = _running(orch, "bot-t4-other")
    if change == "delete":
        del orch.files[inst.name]
    else:
        orch.files[inst.name] = '{"agent": {"model": "edited by hand"}}'
    orch.calls.clear()

    report, _ = run_tasks(services.instances_reconcile_all, owner="beat")

    assert report.repairs == [inst.name]
    assert orch.ops("ensure") == [inst.name]  # the converge it sent rewrote it
    assert orch.files[inst.name] == json.dumps({"agent": {"model": "claude"}})
    assert _drift_messages(inst.name) == [
        f"The config of {inst.name} was {word} outside Claworc; rewriting it from the spec."]
    assert _drift_messages(untouched.name) == []
    inst.refresh_from_db()
    assert inst.status == "running"
    # Repaired: the next beat sees nothing to do.
    orch.calls.clear()
    report, _ = run_tasks(services.instances_reconcile_all, owner="beat")
    assert report.repairs == [] and orch.ops("ensure") == []


def test_a_stopped_instance_or_one_with_an_intent_pending_is_left_to_its_own_converge(
        orch, run_tasks):
    stopped = _running(orch, "bot-t4-stopped", desired_state="stopped")
    orch.workloads[stopped.name].status = Status.STOPPED
    orch.workloads[stopped.name].exit_code = 143
    Instance.objects.filter(pk=stopped.pk).update(status="stopped")
    del orch.files[stopped.name]
    report, _ = run_tasks(services.instances_reconcile_all, owner="beat")
    assert report.repairs == [] and _drift_messages(stopped.name) == []


def test_a_crash_because_the_config_file_is_missing_is_repaired_not_an_error(orch, run_tasks):
    inst = _running(orch, "bot-t4-crash")
    workload = orch.workloads[inst.name]
    workload.status, workload.exit_code, workload.logs = Status.STOPPED, 139, ""
    del orch.files[inst.name]

    report, _ = run_tasks(services.instances_reconcile_all, owner="beat")

    assert report.errors == [] and report.repairs == [inst.name]
    assert _drift_messages(inst.name) == [
        f"{inst.name} exited with code 139 and cannot start again: its config file is missing "
        "(deleted outside Claworc). Rewriting it and starting it."]
    inst.refresh_from_db()
    assert inst.status == "running"
    assert inst.name in orch.files


def test_a_crash_with_an_empty_log_says_why_instead_of_pointing_at_the_logs(orch, run_tasks):
    inst = _running(orch, "bot-t4-nolog")
    workload = orch.workloads[inst.name]
    workload.status, workload.exit_code, workload.logs = Status.STOPPED, 127, ""
    workload.message = ("exited with code 127: it could not be started again because a file it "
                        "mounts is missing on the Docker host (error mounting \"/x/y\" to rootfs "
                        "at \"/z\": no such file or directory)")

    report, _ = run_tasks(services.instances_reconcile_all, owner="beat")

    assert report.errors == [inst.name]
    inst.refresh_from_db()
    assert inst.status == "error"
    assert inst.status_message == (
        "Exited with code 127: it could not be started again because a file it mounts is "
        "missing on the Docker host (error mounting \"/x/y\" to rootfs at \"/z\": no such file "
        "or directory). It wrote no log lines.")
    assert "docker logs" not in inst.status_message
