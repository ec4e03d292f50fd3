"""Never lose an intent: generations, one-shot counters, the owed-work query, two-step delete,
stale writes refused, a broker that is down, and the smaller cases of the same family.

Each test names the case it reproduces; each failed on the control flow before generations.
"""

from datetime import timedelta
from unittest import mock

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from kombu.exceptions import OperationalError

from instances import services, tasks
from instances.models import Activity, Instance, InstanceLease, OrphanWorkload, PortAllocation
from orchestrators.base import FinalError, InstanceSpec, Status
from tests.fakes import FakeWorkload, eager_tasks
from tests.html_forms import form_inputs

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:instances_instance_changelist")


@pytest.fixture(autouse=True)
def _ports(settings):
    settings.CLAWORC_PORT_START, settings.CLAWORC_PORT_END = 32000, 32399


@pytest.fixture
def broker_down(monkeypatch):
    """Every task send fails as kombu fails when Redis refuses the connection."""
    def refuse(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    for task in (tasks.reconcile_instance, tasks.observe_instance, tasks.teardown_instance):
        monkeypatch.setattr(task, "apply_async", refuse)


def _volumes(orch, name):
    return sorted(v for v in orch.volumes if v.startswith(f"claworc-{name}-"))


# --- 1. purged data comes back; ports freed before the container lets go ------------------------

def test_a_name_being_deleted_cannot_be_added_and_its_purged_volumes_never_come_back(
        orch, run_tasks, django_capture_on_commit_callbacks):
    inst, _ = run_tasks(services.instance_create, display_name="bot-t4-purge")
    ports = (inst.ports.port_chrome, inst.ports.port_terminal)
    assert len(_volumes(orch, "bot-t4-purge")) == 4
    with django_capture_on_commit_callbacks() as teardown:  # the worker is busy: not run yet
        services.instance_delete(instance_ids=[inst.pk], keep_volumes=False, actor="ann")

    row = Instance.objects.get(name="bot-t4-purge")
    assert row.status == "deleting"
    # Its name and port pair stay reserved while its container may still hold them.
    assert (row.ports.port_chrome, row.ports.port_terminal) == ports
    with pytest.raises(ValidationError, match="bot-t4-purge is being deleted"):
        services.instance_create(display_name="again", name="bot-t4-purge", actor="ann")

    with eager_tasks():
        for callback in teardown:
            callback()
    assert not Instance.objects.filter(name="bot-t4-purge").exists()
    assert _volumes(orch, "bot-t4-purge") == [] and not PortAllocation.objects.exists()
    # Now the name is free, and a new instance starts with new, empty volumes.
    orch.calls.clear()
    run_tasks(services.instance_create, display_name="again", name="bot-t4-purge", actor="ann")
    assert orch.ops("delete") == [] and orch.ops("ensure") == ["bot-t4-purge"]


def test_a_teardown_that_fails_keeps_the_row_deleting_and_reconcile_all_retries_it(
        orch, run_tasks):
    inst, _ = run_tasks(services.instance_create, display_name="bot-t4-stuck")
    orch.fail_next["delete"] = FinalError("Docker refused: device or resource busy")
    run_tasks(services.instance_delete, instance_ids=[inst.pk], keep_volumes=False)
    row = Instance.objects.get(pk=inst.pk)
    assert row.status == "deleting" and "tries the deletion again" in row.status_message
    Instance.objects.filter(pk=inst.pk).update(enqueued_at=None)
    report, _ = run_tasks(services.instances_reconcile_all, owner="beat")
    assert report.enqueued == ["bot-t4-stuck"]
    assert orch.ops("delete") == ["bot-t4-stuck", "bot-t4-stuck"]
    assert not Instance.objects.filter(pk=inst.pk).exists()


# --- 2. a stale form undoes Stop; two editors lose a change -------------------------------------

def _change_url(inst):
    return reverse("admin:instances_instance_change", args=[inst.pk])


def _opened_form(client, inst) -> dict:
    return form_inputs(client.get(_change_url(inst)).content.decode()).data


def test_a_form_opened_before_stop_is_refused_and_changes_nothing(client, staff, orch, run_tasks):
    inst, _ = run_tasks(services.instance_create, display_name="bot-t4-stale")
    opened = _opened_form(client, inst)  # tab 1 opens the change page
    run_tasks(services.instance_stop, instance_ids=[inst.pk], actor="bob")  # Stop elsewhere
    orch.calls.clear()

    reply = client.post(_change_url(inst), {**opened, "memory_limit": "2Gi"})
    html = reply.content.decode()
    assert reply.status_code == 200, html
    assert "This instance was changed since you opened it: stop by bob" in html, (
        reply.context["adminform"].form.errors)
    assert "reload the page" in html
    inst.refresh_from_db()
    assert (inst.desired_state, inst.status, inst.memory_limit) == ("stopped", "stopped", "4Gi")
    assert orch.calls == []


def test_two_editors_at_once_the_second_is_refused(client, staff, orch, run_tasks):
    inst, _ = run_tasks(services.instance_create, display_name="bot-t4-two")
    first, second = _opened_form(client, inst), _opened_form(client, inst)
    assert client.post(_change_url(inst), {**first, "cpu_limit": "1"}).status_code == 302
    reply = client.post(_change_url(inst), {**second, "memory_limit": "2Gi"})
    assert "changed since you opened it" in reply.content.decode()
    inst.refresh_from_db()
    assert (inst.cpu_limit, inst.memory_limit) == ("1", "4Gi")


def test_desired_state_and_name_change_only_through_their_actions(client, staff, orch, run_tasks):
    inst, _ = run_tasks(services.instance_create, display_name="bot-t4-fixed")
    form = client.get(_change_url(inst)).context["adminform"].form
    assert "desired_state" not in form.fields and "name" not in form.fields
    with pytest.raises(ValidationError, match="cannot change"):
        services.instance_update(instance=inst, name="bot-t4-other")
    row = Instance.objects.get(pk=inst.pk)
    row.name = "bot-t4-other"
    with pytest.raises(ValidationError, match="cannot change"):
        row.save()  # the shell
    row = Instance.objects.get(pk=inst.pk)
    row.desired_state = "stopped"
    with pytest.raises(ValidationError, match="Use Start or Stop"):
        row.save()
    assert Instance.objects.filter(name="bot-t4-fixed", desired_state="running").exists()


def test_a_plain_save_of_an_old_object_does_not_undo_a_stop(orch, run_tasks):
    inst, _ = run_tasks(services.instance_create, display_name="bot-t4-old")
    old = Instance.objects.get(pk=inst.pk)  # loaded in a shell before the stop
    run_tasks(services.instance_stop, instance_ids=[inst.pk], actor="bob")
    old.display_name = "renamed"
    run_tasks(old.save)
    inst.refresh_from_db()
    assert (inst.display_name, inst.desired_state, inst.status) == (
        "renamed", "stopped", "stopped")


# --- 3. restart + recreate at once --------------------------------------------------------------

def test_restart_and_recreate_at_once_both_count_and_the_recreate_is_done(
        orch, run_tasks, django_capture_on_commit_callbacks):
    inst, _ = run_tasks(services.instance_create, display_name="bot-t4-both")
    before = orch.workloads["bot-t4-both"].generation
    with django_capture_on_commit_callbacks() as callbacks:
        services.instance_recreate(instance_ids=[inst.pk], actor="a")
        services.instance_restart(instance_ids=[inst.pk], actor="b")  # the last writer
    with eager_tasks():
        callbacks[0]()
    inst.refresh_from_db()
    assert orch.ops("recreate") == ["bot-t4-both"]  # not downgraded to a restart
    assert orch.workloads["bot-t4-both"].generation == before + 1
    assert (inst.recreate_requested, inst.recreate_done) == (1, 1)
    assert (inst.restart_requested, inst.restart_done) == (1, 1)
    assert not Instance.objects.owing_work().exists()


# --- 4. killed between "created" and "started": recovery by query -------------------------------

def test_reconcile_all_converges_a_created_container_whose_worker_died(orch, run_tasks):
    inst = Instance.objects.bulk_create([Instance(display_name="c", name="bot-t4-created")])[0]
    from instances.specs import instance_spec

    orch.workloads[inst.name] = FakeWorkload(spec=instance_spec(inst, privileged=False),
                                             status=Status.CREATING)  # docker "created"
    # The dead worker's lease has expired (by the database's clock).
    InstanceLease.objects.create(name=inst.name, owner="dead",
                                 expires_at=timezone.now() - timedelta(seconds=1))
    report, _ = run_tasks(services.instances_reconcile_all, owner="beat")
    assert report.enqueued == ["bot-t4-created"]
    inst.refresh_from_db()
    assert orch.ops("ensure") == ["bot-t4-created"]
    assert inst.status == "running" and inst.observed_generation == inst.generation


def test_reconcile_all_does_not_resend_work_queued_and_not_started(orch, run_tasks, settings):
    inst = Instance.objects.bulk_create([Instance(display_name="q", name="bot-t4-queued")])[0]
    Instance.objects.filter(pk=inst.pk).update(enqueued_at=timezone.now())
    report, _ = run_tasks(services.instances_reconcile_all, owner="beat")
    assert report.enqueued == [] and orch.ops("ensure") == []
    # Sent long enough ago and never started (the message was lost): sent again.
    Instance.objects.filter(pk=inst.pk).update(
        enqueued_at=timezone.now() - 3 * timedelta(seconds=settings.CLAWORC_RECONCILE_INTERVAL))
    report, _ = run_tasks(services.instances_reconcile_all, owner="beat")
    assert report.enqueued == ["bot-t4-queued"] and orch.ops("ensure") == ["bot-t4-queued"]


# --- 5. broker down: no server error ------------------------------------------------------------

@pytest.mark.django_db(transaction=True)  # the task is sent when a real commit happens
def test_stop_with_the_broker_down_is_saved_pending_and_carried_out_later(
        client, staff, orch, run_tasks, broker_down, monkeypatch):
    inst = Instance.objects.bulk_create([Instance(
        display_name="b", name="bot-t4-nobroker", status="running", observed_generation=1,
        owed_since=None)])[0]
    reply = client.post(CHANGELIST, {"action": "stop_instances", "_selected_action": [inst.pk]},
                        follow=True)
    assert reply.status_code == 200
    html = reply.content.decode()
    assert "Saved stop of bot-t4-nobroker. No worker can be reached now" in html
    inst.refresh_from_db()
    assert (inst.desired_state, inst.status, inst.enqueued_at) == ("stopped", "stopping", None)
    activity = Activity.objects.get(action="stop")
    assert activity.result == "pending" and "No worker can be reached now" in activity.message

    monkeypatch.undo()  # the broker is back; the next reconcile_all finds what is owed
    report, _ = run_tasks(services.instances_reconcile_all, owner="beat")
    assert report.enqueued == ["bot-t4-nobroker"] and orch.ops("stop") == ["bot-t4-nobroker"]
    inst.refresh_from_db()
    assert inst.status == "stopped"


@pytest.mark.django_db(transaction=True)
def test_add_form_with_the_broker_down_saves_and_says_so(client, staff, orch, broker_down):
    add = reverse("admin:instances_instance_add")
    data = form_inputs(client.get(add).content.decode()).data
    data.update(display_name="T4 Nobroker", clawdbot_config="{}")
    reply = client.post(add, data, follow=True)
    assert reply.status_code == 200
    assert "Saved bot-t4-nobroker. No worker can be reached now" in reply.content.decode()
    assert Activity.objects.get(action="create").result == "pending"
    assert Instance.objects.owing_work().filter(name="bot-t4-nobroker").exists()


# --- 7. the smaller cases -----------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_audit_writes_survive_a_row_deleted_meanwhile(orch):
    inst = Instance.objects.bulk_create([Instance(display_name="g", name="bot-t4-gonerow")])[0]
    Instance.objects.filter(pk=inst.pk).purge()
    # The worker still holds the id it started with.
    services.activity_record(instance_id=inst.pk, instance_name=inst.name, action="ensure",
                             result="ok")
    assert Activity.objects.filter(instance_name="bot-t4-gonerow").count() == 1
    # The test's transaction defers foreign keys to a commit that never comes: check them now,
    # as the worker's commit would (an IntegrityError there lost the record, and in
    # reconcile_all every repair of that beat).
    connection.check_constraints(table_names=["instances_activity"])


def test_a_soft_time_limit_in_teardown_is_retried_then_recorded(orch, run_tasks):
    from celery.exceptions import SoftTimeLimitExceeded

    inst, _ = run_tasks(services.instance_create, display_name="bot-t4-slowdel")
    Instance.objects.filter(pk=inst.pk).update(status="deleting")
    orch.fail_next["delete"] = SoftTimeLimitExceeded()
    with pytest.raises(services.LeaseBusy.__mro__[1]):  # TransientError: the task retries it
        services.instance_converge(pk=inst.pk, owner="w1", last_attempt=False)
    orch.fail_next["delete"] = SoftTimeLimitExceeded()
    assert services.instance_converge(pk=inst.pk, owner="w1", last_attempt=True) == "error"
    row = Instance.objects.get(pk=inst.pk)
    assert row.status == "deleting" and row.status_message.startswith("Timed out after")
    assert Activity.objects.filter(action="delete", result="error").exists()


def test_a_converge_that_keeps_killing_its_worker_becomes_an_error(orch, settings):
    settings.CLAWORC_MAX_WORKER_LOSSES = 2
    inst = Instance.objects.bulk_create([Instance(display_name="o", name="bot-t4-oom",
                                                  worker_losses=2)])[0]
    assert services.instance_converge(pk=inst.pk, owner="w1") == "error"
    inst.refresh_from_db()
    assert inst.status == "error" and "died before finishing" in inst.status_message
    assert orch.calls == [] and inst.worker_losses == 0
    assert not Instance.objects.owing_work().filter(pk=inst.pk).exists()


def test_creating_stopped_says_that_nothing_is_provisioned(orch, run_tasks):
    inst, _ = run_tasks(services.instance_create, display_name="bot-t4-cold",
                        desired_state="stopped")
    create = Activity.objects.get(action="create")
    assert create.message.startswith("Created stopped: nothing is provisioned until it is started")
    inst.refresh_from_db()
    assert inst.status == "stopped" and orch.ops("ensure") == []
    assert inst.status_message == "No workload exists: it is made when the instance is started."


def test_an_edit_plus_a_key_change_is_one_converge_and_one_message(client, staff, orch,
                                                                   run_tasks):
    inst, _ = run_tasks(services.instance_create, display_name="bot-t4-onemsg")
    data = _opened_form(client, inst)
    data.update(memory_limit="2Gi", key_anthropic_api_key="sk-ant-t4-0123456789abcdef")
    with eager_tasks():
        from django.test import TestCase

        with TestCase.captureOnCommitCallbacks(execute=False) as callbacks:
            reply = client.post(_change_url(inst), data, follow=True)
    assert reply.status_code == 200
    assert len([c for c in callbacks if getattr(c, "key", None)]) == 1
    html = reply.content.decode()
    assert html.count("restarts briefly") == 1 and "converging the workload" not in html


def test_a_refused_edit_stays_visible_until_a_converge_succeeds(orch, run_tasks):
    inst, _ = run_tasks(services.instance_create, display_name="bot-t4-refused")
    orch.fail_next["ensure"] = FinalError("Host port 32000 is already in use by another process.")
    run_tasks(services.instance_update, instance=inst, memory_limit="2Gi")
    assert Instance.objects.get(pk=inst.pk).status == "error"
    # The old container still runs; the next sweep must not hide the refusal.
    run_tasks(services.instances_reconcile_all, owner="beat")
    row = Instance.objects.get(pk=inst.pk)
    assert row.status == "error" and "already in use" in row.status_message
    run_tasks(services.instance_restart, instance_ids=[inst.pk])
    assert Instance.objects.get(pk=inst.pk).status == "running"


def test_error_hints_name_only_what_exists_and_say_things_once(orch):
    text = services.troubleshooting_message(
        orch=orch, name="bot-t4-h", workload_exists=False,
        error="Cannot start bot-t4-h privileged: unable to apply caps. The agent image requires "
              "--privileged mode. Ensure Docker Desktop has not disabled privileged containers "
              "(set CLAWORC_DOCKER_PRIVILEGED=false only where the kernel refuses it).")
    assert text.count("--privileged mode") == 1 and "docker logs" not in text


def test_lease_exclusion_holds_whatever_the_workers_clocks_say(orch, monkeypatch):
    real_now = timezone.now
    for skew in (timedelta(minutes=1), -timedelta(minutes=1)):
        InstanceLease.objects.all().delete()
        assert services.lease_acquire(name="bot-t4-clock", owner="w1")
        monkeypatch.setattr(timezone, "now", lambda skew=skew: real_now() + skew)
        assert not services.lease_acquire(name="bot-t4-clock", owner="w2")
        monkeypatch.setattr(timezone, "now", real_now)
        assert not services.lease_acquire(name="bot-t4-clock", owner="w2")


def test_a_row_created_during_the_sweep_is_not_an_orphan(orch, run_tasks):
    real_status_all = orch.status_all

    def status_all_racing():
        # Between the sweep reading the rows and listing the workloads, a new instance and its
        # container appear.
        Instance.objects.bulk_create([Instance(display_name="r", name="bot-t4-race")])
        orch.workloads["bot-t4-race"] = FakeWorkload(spec=InstanceSpec(
            name="bot-t4-race", image="x", port_chrome=1, port_terminal=2))
        return real_status_all()

    orch.status_all = status_all_racing
    report, _ = run_tasks(services.instances_reconcile_all, owner="beat")
    assert report.orphans == [] and not OrphanWorkload.objects.exists()
    assert not Activity.objects.filter(action="orphan").exists()


def test_worker_settings_reserve_only_the_task_being_run(settings):
    from claworc_site.celery import app

    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.worker_max_tasks_per_child


def test_owed_work_is_a_query(orch):
    def make(name, **fields):
        return Instance.objects.bulk_create([Instance(display_name=name, name=name, **{
            "observed_generation": 1, "owed_since": None, "status": "running", **fields})])[0]

    make("bot-t4-ok")
    make("bot-t4-gen", generation=2)
    make("bot-t4-restart", restart_requested=1)
    make("bot-t4-recreate", recreate_requested=1)
    make("bot-t4-del", status="deleting")
    make("bot-t4-down", status="stopped")
    make("bot-t4-err", status="error")
    make("bot-t4-off", desired_state="stopped", status="stopped")
    assert sorted(Instance.objects.owing_work().values_list("name", flat=True)) == [
        "bot-t4-del", "bot-t4-down", "bot-t4-gen", "bot-t4-recreate", "bot-t4-restart"]
    assert connection.vendor in ("sqlite", "postgresql")


@pytest.mark.django_db(transaction=True)
def test_activity_survives_when_the_broker_fails_mid_way(orch, broker_down):
    inst = Instance.objects.bulk_create([Instance(display_name="x", name="bot-t4-mid",
                                                  status="running", observed_generation=1)])[0]
    with mock.patch.object(services.intents.logger, "warning") as warned:
        outcome = services.instance_restart(instance_ids=[inst.pk], actor="zed")
    assert outcome.queued == ["bot-t4-mid"]
    assert "OperationalError" in str(warned.call_args)
    assert "sk-" not in str(warned.call_args)


# --- 6. a wedged or missing worker is visible ---------------------------------------------------

def _owed_for(seconds):
    inst = Instance.objects.bulk_create([Instance(display_name="w", name="bot-t4-waits")])[0]
    Instance.objects.filter(pk=inst.pk).update(
        owed_since=timezone.now() - timedelta(seconds=seconds))
    return inst


def test_health_is_degraded_when_work_is_owed_and_no_worker_progresses(client, settings,
                                                                        no_cluster, monkeypatch):

    settings.CLAWORC_RECONCILE_INTERVAL = 30
    import importlib

    from instances.models import WorkerHeartbeat

    liveness = importlib.import_module("instances.services.liveness")
    # A heartbeat counts as fresh for 3 beats; on a loaded machine the request itself may take
    # longer than the 15 s of production, so the beat is made long for this test.
    monkeypatch.setattr(liveness, "HEARTBEAT_SECONDS", 120.0)

    _owed_for(61)
    # A worker that beats (its main process lives) but finished nothing: a wedged pool.
    WorkerHeartbeat.objects.create(hostname="w1@host", seen_at=timezone.now(),
                                   last_task_at=timezone.now() - timedelta(minutes=5))
    # A load balancer (anonymous) sees the outage; staff see why.
    anonymous = client.get("/health")
    anonymous_status = (anonymous.status_code, anonymous.json()["status"])
    assert anonymous_status == (503, "degraded") and "liveness" not in anonymous.json()
    client.force_login(User.objects.create_superuser("t4-health", password="pw-t4-long-enough"))
    response = client.get("/health")
    assert response.status_code == 503
    data = response.json()
    assert data["status"] == "degraded"
    live = data["liveness"]
    assert live["owed_work"]["instances"] == 1 and live["owed_work"]["oldest_seconds"] >= 61
    assert live["workers"][0]["hostname"] == "w1@host" and live["workers"][0]["alive"], live
    assert "take tasks but finish none" in live["reason"]

    # Progress within two intervals: not degraded (a backlog being worked through).
    WorkerHeartbeat.objects.update(last_task_at=timezone.now())
    assert client.get("/health").json()["liveness"]["degraded"] is False


def test_health_says_when_no_worker_runs_and_the_status_pages_show_a_banner(
        client, staff, settings, no_cluster):  # staff: /health's details are theirs
    settings.CLAWORC_RECONCILE_INTERVAL = 30
    _owed_for(90)
    data = client.get("/health").json()
    assert data["liveness"]["degraded"] and "no Celery worker is running" in (
        data["liveness"]["reason"])
    for url in (reverse("instances:list"), reverse("instances:detail", args=["bot-t4-waits"])):
        html = client.get(url).content.decode()
        assert 'id="liveness-banner"' in html and "Work is waiting for a worker." in html


def test_no_banner_when_nothing_is_owed(client, staff, no_cluster):  # staff: details
    html = client.get(reverse("instances:list")).content.decode()
    assert "liveness-banner" not in html
    assert client.get("/health").json()["liveness"]["degraded"] is False


def test_heartbeats_are_written_by_workers(settings):
    from instances.models import WorkerHeartbeat

    services.liveness  # noqa: B018 - the selector reads what these write
    from instances.services.liveness import worker_heartbeat, worker_task_finished

    worker_heartbeat(hostname="w2@host")
    worker_task_finished(hostname="w2@host")
    beat = WorkerHeartbeat.objects.get(hostname="w2@host")
    assert beat.seen_at and beat.last_task_at
