"""The control flow's services on an in-memory orchestrator: desired state, activity, enqueueing,
convergence, errors a person can act on, the lease, and reconcile_all's drift repair."""

from datetime import datetime, timedelta

import pytest
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from instances import services
from instances.models import (
    Activity,
    Instance,
    InstanceLease,
    OrphanWorkload,
    PortAllocation,
    Setting,
)
from orchestrators.base import FinalError, Status, TransientError
from tests.fakes import FakeWorkload

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _ports(settings):
    settings.CLAWORC_PORT_START, settings.CLAWORC_PORT_END = 32000, 32399


def _make(name, **fields):
    # bulk_create: no signal, so the test decides what is enqueued. A row as the worker left it
    # after converging (its generation carried out), unless the test says otherwise.
    fields = {"observed_generation": 1, "owed_since": None, **fields}
    return Instance.objects.bulk_create([Instance(display_name=name, name=name, **fields)])[0]


def _activities(name):
    return list(Activity.objects.filter(instance_name=name).order_by("id")
                .values_list("action", "result", "actor"))


def test_instances_reconcile_records_and_enqueues_only_on_commit(
        orch, django_capture_on_commit_callbacks):
    a, b = _make("bot-t4-a"), _make("bot-t4-b")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.instances_reconcile(instance_ids=[a.pk, b.pk], actor="alice",
                                     action="api_keys", message="ANTHROPIC_API_KEY changed")
    assert len(callbacks) == 2  # one reconcile per instance, sent after commit only
    assert orch.calls == []  # nothing ran inside the "request"
    rows = Activity.objects.filter(action="api_keys").order_by("instance_name")
    assert [(r.instance_name, r.actor, r.result, r.message) for r in rows] == [
        ("bot-t4-a", "alice", "queued", "ANTHROPIC_API_KEY changed"),
        ("bot-t4-b", "alice", "queued", "ANTHROPIC_API_KEY changed"),
    ]


def test_create_provisions_through_the_signal(orch, run_tasks, settings):
    settings.CLAWORC_PORT_START, settings.CLAWORC_PORT_END = 32000, 32009
    inst, _ = run_tasks(services.instance_create, display_name="T4 One", actor="alice")
    inst.refresh_from_db()
    assert inst.name == "bot-t4-one"
    assert orch.ops("ensure") == ["bot-t4-one"]
    spec = orch.workloads["bot-t4-one"].spec
    assert (spec.port_chrome, spec.port_terminal) == (32000, 32001)
    assert spec.privileged is False  # from the orchestrator in use
    assert inst.status == "running" and inst.status_observed_at is not None
    assert _activities("bot-t4-one") == [("create", "queued", "alice"), ("ensure", "ok", "system")]


def test_start_and_stop_check_the_transition_and_converge(orch, run_tasks):
    inst = _make("bot-t4-s", status="running")
    outcome, callbacks = run_tasks(services.instance_start, instance_ids=[inst.pk], actor="bob")
    assert outcome.skipped == [("bot-t4-s", "already running")] and not callbacks
    assert "Skipped bot-t4-s (already running)" in outcome.summary()

    outcome, _ = run_tasks(services.instance_stop, instance_ids=[inst.pk], actor="bob")
    assert outcome.queued == ["bot-t4-s"]
    assert outcome.summary() == "Queued stop of 1 instance: bot-t4-s."
    inst.refresh_from_db()
    assert (inst.desired_state, inst.status) == ("stopped", "stopped")
    assert orch.ops("stop") == ["bot-t4-s"]

    run_tasks(services.instance_start, instance_ids=[inst.pk], actor="bob")
    inst.refresh_from_db()
    assert (inst.desired_state, inst.status) == ("running", "running")
    assert orch.workloads["bot-t4-s"].status == Status.RUNNING
    assert [a for a in _activities("bot-t4-s") if a[2] == "bob"] == [
        ("stop", "queued", "bob"), ("start", "queued", "bob")]


def test_restart_and_recreate_are_one_shot_requests(orch, run_tasks):
    inst = _make("bot-t4-r", desired_state="stopped", status="stopped")
    run_tasks(services.instance_restart, instance_ids=[inst.pk], actor="c")
    inst.refresh_from_db()
    assert orch.ops("restart") == ["bot-t4-r"]
    assert (inst.desired_state, inst.status) == ("running", "running")
    assert (inst.restart_requested, inst.restart_done) == (1, 1)

    generation = orch.workloads["bot-t4-r"].generation
    run_tasks(services.instance_recreate, instance_ids=[inst.pk], actor="c")
    inst.refresh_from_db()
    assert orch.ops("recreate") == ["bot-t4-r"]
    assert orch.workloads["bot-t4-r"].generation == generation + 1
    assert (inst.recreate_requested, inst.recreate_done) == (1, 1)
    # A later plain reconcile does not restart or recreate again.
    run_tasks(services.instances_reconcile, instance_ids=[inst.pk])
    assert orch.ops("restart") == ["bot-t4-r"] and orch.ops("recreate") == ["bot-t4-r"]


def test_editing_the_spec_converges_other_edits_do_not(orch, run_tasks):
    inst = _make("bot-t4-e")
    outcome, callbacks = run_tasks(services.instance_update, instance=inst,
                                   display_name="renamed")
    assert not outcome.queued and not callbacks
    outcome, _ = run_tasks(services.instance_update, instance=inst, memory_limit="2Gi",
                           actor="dora")
    assert outcome.queued == ["bot-t4-e"]
    assert orch.workloads["bot-t4-e"].spec.resources.memory_limit == "2Gi"
    assert Activity.objects.get(action="update").message == (
        "Changed memory_limit; converging the workload.")


@pytest.mark.parametrize("keep", [True, False])
def test_delete_tears_down_and_frees_ports(orch, run_tasks, keep):
    inst, _ = run_tasks(services.instance_create, display_name="bot-t4-d")
    assert PortAllocation.objects.filter(instance=inst).exists()
    assert len([v for v in orch.volumes if "bot-t4-d" in v]) == 4
    outcome, _ = run_tasks(services.instance_delete, instance_ids=[inst.pk], keep_volumes=keep,
                           actor="erin")
    assert outcome.queued == ["bot-t4-d"]
    assert not Instance.objects.filter(name="bot-t4-d").exists()
    assert not PortAllocation.objects.exists()
    assert orch.ops("delete") == ["bot-t4-d"]
    assert "bot-t4-d" not in orch.workloads
    assert len([v for v in orch.volumes if "bot-t4-d" in v]) == (4 if keep else 0)
    delete_rows = Activity.objects.filter(instance_name="bot-t4-d", action="delete")
    assert [(a.result, a.actor) for a in delete_rows.order_by("id")] == [
        ("queued", "erin"), ("ok", "system")]
    assert ("volumes are kept" in delete_rows.order_by("id").first().message) is keep


def test_final_error_becomes_error_with_the_specs_troubleshooting_hints(orch, run_tasks, settings):
    settings.CLAWORC_PORT_START, settings.CLAWORC_PORT_END = 32000, 32009
    orch.fail_next["ensure"] = FinalError("Host port 32000 is already in use by another process.")
    inst, _ = run_tasks(services.instance_create, display_name="bot-t4-f")
    inst.refresh_from_db()
    assert inst.status == "error"
    assert inst.status_message.startswith("Host port 32000 is already in use")
    assert "CLAWORC_PORT_START to CLAWORC_PORT_END (32000–32009)" in inst.status_message
    # No container was made: no advice to read its logs.
    assert "docker logs" not in inst.status_message
    assert Activity.objects.get(instance_name="bot-t4-f", result="error").message == (
        inst.status_message)


def test_privileged_refused_says_what_to_do(orch):
    text = services.troubleshooting_message(
        orch=orch, name="bot-t4-p", error="OCI runtime create failed: unable to apply caps")
    assert "requires --privileged mode" in text and "CLAWORC_DOCKER_PRIVILEGED=false" in text
    assert text.endswith("Check `docker logs bot-t4-p` for errors.")


def test_transient_error_propagates_until_the_last_attempt(orch):
    inst = _make("bot-t4-x")
    orch.fail_next["ensure"] = TransientError("Docker not available: connection refused")
    with pytest.raises(TransientError):
        services.instance_converge(pk=inst.pk, owner="w1", last_attempt=False)
    assert not InstanceLease.objects.exists()  # released even on error
    orch.fail_next["ensure"] = TransientError("Docker not available: connection refused")
    assert services.instance_converge(pk=inst.pk, owner="w1", last_attempt=True) == "error"
    inst.refresh_from_db()
    assert inst.status == "creating"  # not the instance's fault: reconcile_all keeps trying
    assert inst.status_message.startswith("Docker not available: connection refused")


def test_lease_excludes_a_second_worker_until_released_or_expired(orch):
    inst = _make("bot-t4-l")
    assert services.lease_acquire(name="bot-t4-l", owner="w1")
    assert not services.lease_acquire(name="bot-t4-l", owner="w2")
    with pytest.raises(services.LeaseBusy) as busy:
        services.instance_converge(pk=inst.pk, owner="w2")
    assert 1 <= busy.value.retry_in <= services.lease_ttl().total_seconds()
    assert orch.calls == []
    services.lease_release(name="bot-t4-l", owner="w1")
    assert services.instance_converge(pk=inst.pk, owner="w2") == "running"
    # A killed worker's lease expires: the next one takes it over.
    services.lease_acquire(name="bot-t4-l", owner="dead", ttl=timedelta(seconds=-1))
    assert services.lease_acquire(name="bot-t4-l", owner="w3")
    assert InstanceLease.objects.get(name="bot-t4-l").owner == "w3"


def test_converge_of_a_deleted_instance_does_nothing(orch):
    assert services.instance_converge(pk=999999, owner="w1") == "gone"
    assert orch.calls == []


def test_teardown_skips_a_new_instance_with_the_same_name(orch):
    _make("bot-t4-n")
    assert services.instance_teardown(name="bot-t4-n", purge_volumes=True, owner="w1") == (
        "skipped")
    assert orch.ops("delete") == []


# --- reconcile_all ------------------------------------------------------------------------------

def _running(orch, inst, **kwargs):
    from instances.specs import instance_spec

    orch.workloads[inst.name] = FakeWorkload(spec=instance_spec(inst, privileged=False), **kwargs)


def test_reconcile_all_repairs_drift_in_one_list_call(orch, run_tasks):
    gone = _make("bot-t4-gone", status="running")
    stopped = _make("bot-t4-stopped", status="running")
    crashed = _make("bot-t4-crashed", status="running")
    fine = _make("bot-t4-fine", status="creating")
    for inst in (stopped, crashed, fine):
        _running(orch, inst)
    orch.workloads["bot-t4-stopped"].status = Status.STOPPED
    orch.workloads["bot-t4-stopped"].exit_code = 143  # `docker stop`
    orch.workloads["bot-t4-crashed"].status = Status.STOPPED
    orch.workloads["bot-t4-crashed"].exit_code = 3
    orch.workloads["bot-t4-crashed"].logs = "booting\npanic: no config\n"
    orch.calls.clear()

    report, _ = run_tasks(services.instances_reconcile_all, owner="beat")

    assert orch.ops("status_all") == [""] and orch.ops("volumes_all") == [""]
    assert orch.ops("status") == []  # never one call per instance
    assert sorted(report.repairs) == ["bot-t4-gone", "bot-t4-stopped"]
    assert report.errors == ["bot-t4-crashed"]
    assert sorted(orch.ops("ensure")) == ["bot-t4-gone", "bot-t4-stopped"]
    statuses = dict(Instance.objects.values_list("name", "status"))
    assert statuses == {"bot-t4-gone": "running", "bot-t4-stopped": "running",
                        "bot-t4-crashed": "error", "bot-t4-fine": "running"}
    crash = Instance.objects.get(name="bot-t4-crashed").status_message
    assert crash.startswith("Exited with code 3. Last log lines:\nbooting\npanic: no config")
    assert "`docker logs bot-t4-crashed`" in crash
    drift = Activity.objects.filter(action="drift").order_by("instance_name")
    assert [(a.instance_name, a.result) for a in drift] == [
        ("bot-t4-gone", "info"), ("bot-t4-stopped", "info")]
    assert "removed outside Claworc" in drift[0].message
    assert "stopped outside Claworc (exit code 143)" in drift[1].message
    assert Activity.objects.get(action="crash").instance_name == "bot-t4-crashed"
    assert gone.pk and fine.pk
    # A crashed instance stays in error (a person acts); the next run does not restart it.
    orch.calls.clear()
    run_tasks(services.instances_reconcile_all, owner="beat")
    assert orch.ops("ensure") == [] and orch.ops("logs") == []


def test_reconcile_all_shows_a_crash_loop_as_error_at_once(orch, run_tasks):
    inst = _make("bot-t4-loop", status="running")
    _running(orch, inst, status=Status.CREATING, exit_code=2, logs="fatal: bad config\n")
    run_tasks(services.instances_reconcile_all, owner="beat")
    inst.refresh_from_db()
    assert inst.status == "error"
    assert inst.status_message.startswith(
        "Exited with code 2. Last log lines:\nfatal: bad config")


def test_reconcile_all_reports_orphans_and_never_deletes_them(orch, run_tasks):
    from orchestrators.base import InstanceSpec

    orch.workloads["bot-t4-orphan"] = FakeWorkload(
        spec=InstanceSpec(name="bot-t4-orphan", image="x", port_chrome=1, port_terminal=2))
    run_tasks(services.instances_reconcile_all, owner="beat")
    run_tasks(services.instances_reconcile_all, owner="beat")
    assert "bot-t4-orphan" in orch.workloads and orch.ops("delete") == []
    orphan = OrphanWorkload.objects.get()
    assert (orphan.name, orphan.backend, orphan.status) == ("bot-t4-orphan", "docker", "running")
    reported = Activity.objects.filter(action="orphan")
    assert reported.count() == 1  # reported once, not at every run
    assert "no instance has this name" in reported.get().message
    del orch.workloads["bot-t4-orphan"]
    run_tasks(services.instances_reconcile_all, owner="beat")
    assert not OrphanWorkload.objects.exists()


def test_reconcile_all_reports_volumes_whose_instance_is_gone(orch, run_tasks):
    inst = _make("bot-t4-kept", status="running")
    _running(orch, inst)
    kept = sorted(f"claworc-bot-t4-kept-{s}" for s in ("clawdbot", "homebrew", "clawd", "chrome"))
    orch.volumes.update(kept)
    run_tasks(services.instance_delete, instance_ids=[inst.pk], keep_volumes=True, actor="e")
    assert "bot-t4-kept" not in orch.workloads and sorted(orch.volumes) == kept
    run_tasks(services.instances_reconcile_all, owner="beat")
    # Just deleted: its teardown may still be running, so it is not reported yet.
    assert not OrphanWorkload.objects.exists()
    Activity.objects.filter(action="delete").update(
        created_at=timezone.now() - timedelta(hours=1))
    _volumes_listed_long_ago()  # the time passes for the last volume list too
    run_tasks(services.instances_reconcile_all, owner="beat")
    orphan = OrphanWorkload.objects.get()
    assert (orphan.name, orphan.status) == ("bot-t4-kept", "volumes only")
    assert orphan.message == (
        "4 volume(s) with no container: " + ", ".join(sorted(kept)) + ". Create an instance "
        "named bot-t4-kept to use them again, or remove them by hand.")
    assert orch.ops("delete") == ["bot-t4-kept"] and sorted(orch.volumes) == kept  # kept
    orch.volumes.clear()  # removed by hand: seen at the next periodic volume list
    run_tasks(services.instances_reconcile_all, owner="beat")
    assert OrphanWorkload.objects.get().status == "volumes only"
    _volumes_listed_long_ago()
    run_tasks(services.instances_reconcile_all, owner="beat")
    assert not OrphanWorkload.objects.exists()


def _volumes_listed_long_ago():
    from instances.services import reconcile_all

    long_ago = timezone.now() - timedelta(hours=1)
    Setting.objects.filter(key__startswith="reconcile_all.volumes_listed_at:").update(
        value=(long_ago - timedelta(minutes=1)).isoformat())
    assert reconcile_all.VOLUMES_EVERY * settings.CLAWORC_RECONCILE_INTERVAL < 3600


def test_reconcile_all_lists_volumes_after_a_delete_and_every_few_beats_only(orch, run_tasks):
    # Listing every volume cost as much as listing the containers, at every beat.
    from instances.services.reconcile_all import VOLUMES_EVERY

    inst = _make("bot-t4-vol", status="running")
    _running(orch, inst)
    orch.volumes.update(f"claworc-bot-t4-vol-{s}" for s in ("clawdbot", "homebrew", "clawd",
                                                            "chrome"))
    for _ in range(VOLUMES_EVERY):
        run_tasks(services.instances_reconcile_all, owner="beat")
    assert len(orch.ops("volumes_all")) == 1 and len(orch.ops("status_all")) == VOLUMES_EVERY
    _volumes_listed_long_ago()
    run_tasks(services.instances_reconcile_all, owner="beat")
    assert len(orch.ops("volumes_all")) == 2
    run_tasks(services.instance_delete, instance_ids=[inst.pk], keep_volumes=True, actor="e")
    run_tasks(services.instances_reconcile_all, owner="beat")
    assert len(orch.ops("volumes_all")) == 3  # right after a delete, whose volumes may stay
    # Until the delete is older than a task can run (its teardown is done): then reported.
    assert not OrphanWorkload.objects.exists()
    for _ in range(2):
        run_tasks(services.instances_reconcile_all, owner="beat")
    assert len(orch.ops("volumes_all")) == 5 and not OrphanWorkload.objects.exists()
    # Time passes, for the delete and for the last volume list alike.
    passed = services.lease_ttl() + timedelta(seconds=1)
    Activity.objects.filter(action="delete").update(created_at=F("created_at") - passed)
    listed = Setting.objects.get(key__startswith="reconcile_all.volumes_listed_at:")
    listed.value = (datetime.fromisoformat(listed.value) - passed).isoformat()
    listed.save()
    run_tasks(services.instances_reconcile_all, owner="beat")
    assert len(orch.ops("volumes_all")) == 6
    assert OrphanWorkload.objects.get().status == "volumes only"
    run_tasks(services.instances_reconcile_all, owner="beat")
    assert len(orch.ops("volumes_all")) == 6
    assert OrphanWorkload.objects.get().status == "volumes only"  # carried over, not listed


def test_reconcile_all_times_out_creating_with_the_reason(orch, run_tasks, settings):
    settings.CLAWORC_CREATING_TIMEOUT = 60
    inst = _make("bot-t4-slow", status="creating")
    Instance.objects.filter(pk=inst.pk).update(
        status_since=timezone.now() - timedelta(seconds=61))
    orch.fail_next["ensure"] = TransientError("Docker not available: timeout")
    run_tasks(services.instances_reconcile_all, owner="beat")
    inst.refresh_from_db()
    assert inst.status == "error"
    assert inst.status_message.startswith(
        "Still creating after 60 s (CLAWORC_CREATING_TIMEOUT): no workload exists: is a Celery "
        "worker running")
    assert Activity.objects.get(action="timeout").result == "error"


def test_reconcile_all_leaves_instances_a_worker_holds(orch, run_tasks):
    inst = _make("bot-t4-held", status="running")
    services.lease_acquire(name="bot-t4-held", owner="w1")
    run_tasks(services.instances_reconcile_all, owner="beat")
    inst.refresh_from_db()
    assert inst.status == "running" and orch.ops("ensure") == []
    assert not Activity.objects.filter(action="drift").exists()


def test_reconcile_all_is_a_single_runner(orch):
    assert services.lease_acquire(name=services.RECONCILE_ALL_LEASE, owner="other")
    assert services.instances_reconcile_all(owner="beat") is None
    assert orch.calls == []


def test_reconcile_all_query_count_does_not_grow_with_instances(
        orch, django_assert_max_num_queries):
    def fill(n, start):
        objs = Instance.objects.bulk_create(
            Instance(display_name=f"q{i}", name=f"bot-t4-q{i}", status="stopped",
                     observed_generation=1)
            for i in range(start, start + n))
        for inst in objs:
            _running(orch, inst)

    # The first beat of a site writes its records once (the sweep, the volumes' and the
    # capacity's read times); the beats after it are what the fleet pays for.
    services.instances_reconcile_all(owner="beat")
    fill(5, 0)
    # Constant: rows, leases, the owed-work query and its enqueue, the names re-read for orphans.
    with django_assert_max_num_queries(25) as small:
        services.instances_reconcile_all(owner="beat")
    fill(150, 5)
    with django_assert_max_num_queries(len(small.captured_queries) + 2):
        report = services.instances_reconcile_all(owner="beat")
    assert report.status_changes == 150  # stopped -> running, written in bulk
    assert Instance.objects.filter(status="running").count() == 155


def test_reconcile_all_writes_no_unchanged_row_and_every_page_says_when_it_was_seen(
        orch, client, staff, django_assert_max_num_queries):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    objs = Instance.objects.bulk_create(
        Instance(display_name=f"s{i}", name=f"bot-t4-s{i}", status="running",
                 observed_generation=1, owed_since=None) for i in range(20))
    for inst in objs:
        _running(orch, inst)
    long_ago = timezone.now() - timedelta(hours=3)
    Instance.objects.update(status_observed_at=long_ago)
    with CaptureQueriesContext(connection) as sweep:
        report = services.instances_reconcile_all(owner="beat")
    assert report.status_changes == 0
    writes = [q["sql"] for q in sweep.captured_queries
              if q["sql"].startswith('UPDATE "instances_instance" ')]
    assert writes == []  # 20 unchanged rows: nothing written to them
    assert set(Instance.objects.values_list("status_observed_at", flat=True)) == {long_ago}

    seen = Instance.objects.with_sweep().get(pk=objs[0].pk).last_observed
    assert timezone.now() - seen < timedelta(minutes=1)
    # A row added after the sweep was not seen by it; a row a worker wrote since keeps its own.
    later = _make("bot-t4-later", status="creating")
    assert Instance.objects.with_sweep().get(pk=later.pk).last_observed is None
    own = timezone.now() + timedelta(seconds=5)
    Instance.objects.filter(pk=objs[1].pk).update(status_observed_at=own)
    assert Instance.objects.with_sweep().get(pk=objs[1].pk).last_observed == own

    # What people read: the status page, the admin list's tooltip, the admin change page.
    detail = client.get(reverse("instances:detail", args=[objs[0].name])).content.decode()
    assert "observed 0\xa0minutes ago" in detail
    with django_assert_max_num_queries(12):
        listing = client.get(reverse("admin:instances_instance_changelist")).content.decode()
    assert listing.count('title="Last observed: never"') == 1  # bot-t4-later alone
    change = client.get(reverse("admin:instances_instance_change", args=[objs[0].pk]))
    assert "Last observed" in change.content.decode() and change.status_code == 200


def test_reconcile_all_query_count_does_not_grow_with_orphans(
        orch, django_assert_max_num_queries):
    from orchestrators.base import InstanceSpec

    inst = _make("bot-t4-own", status="running")
    _running(orch, inst)
    services.instances_reconcile_all(owner="beat")
    with django_assert_max_num_queries(40) as none:
        services.instances_reconcile_all(owner="beat")
    for i in range(100):
        name = f"bot-t4-orphan{i:03d}"
        orch.workloads[name] = FakeWorkload(
            spec=InstanceSpec(name=name, image="x", port_chrome=0, port_terminal=0),
            message=f"Up {i} seconds")
    # The run that finds them, one where every message changed, one where nothing did: a few
    # bulk statements each, never one per orphan.
    for _ in range(3):
        with django_assert_max_num_queries(len(none.captured_queries) + 5):
            report = services.instances_reconcile_all(owner="beat")
        assert len(report.orphans) == 100
        for workload in orch.workloads.values():
            workload.message += "!"
    assert OrphanWorkload.objects.count() == 100
    assert Activity.objects.filter(action="orphan").count() == 100  # reported once each
    assert OrphanWorkload.objects.get(name="bot-t4-orphan007").message == "Up 7 seconds!!"
    for i in range(50):
        del orch.workloads[f"bot-t4-orphan{i:03d}"]
    with django_assert_max_num_queries(len(none.captured_queries) + 5):
        services.instances_reconcile_all(owner="beat")
    assert OrphanWorkload.objects.count() == 50


def test_reconcile_all_reads_the_logs_of_many_crashes_concurrently(orch, run_tasks):
    import threading
    import time

    from instances.services.reconcile_all import CRASH_LOG_READERS

    in_flight, peak, lock = [0], [0], threading.Lock()
    plain_logs = orch.logs

    def slow_logs(name, lines=100):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.05)
        with lock:
            in_flight[0] -= 1
        return plain_logs(name, lines)

    orch.logs = slow_logs
    for i in range(20):
        inst = _make(f"bot-t4-crash{i:02d}", status="running")
        _running(orch, inst, status=Status.STOPPED, exit_code=1, logs=f"panic {i}\n")
    report, _ = run_tasks(services.instances_reconcile_all, owner="beat")
    assert len(report.errors) == 20
    assert 1 < peak[0] <= CRASH_LOG_READERS
    message = Instance.objects.get(name="bot-t4-crash07").status_message
    assert message.startswith("Exited with code 1. Last log lines:\npanic 7")
