"""The capacity budget at the door: create, start (one or many), restart, resize, from code and
from the admin, and the budget shown on the admin index and the status list.

The host's numbers are set through the record detection keeps (the `host_capacity` Setting);
instances ask for the defaults, 500m CPU and a 4Gi memory limit, so a 2 CPU / 8 GiB host holds
exactly two.
"""

import json
import os
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from instances import services
from instances.models import Activity, Instance
from instances.services.capacity import CapacityExceeded
from orchestrators import registry
from orchestrators.base import HostCapacity

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:instances_instance_changelist")
ADD = reverse("admin:instances_instance_add")
GIB = 2**30
FULL = ("needs 0.5 CPU / 4 GiB; 1 CPU / 0 GiB free of 2 CPU / 8 GiB; "
        "2 instances running")


def host(cpus, memory_gib, backend="docker"):
    """What detection records of a Docker host (as JSON, the way it is stored)."""
    registry.store_capacity(backend, HostCapacity(
        totals={"requests.cpu": Decimal(cpus), "limits.memory": Decimal(memory_gib * GIB)},
        per_instance_max={"cpu": Decimal(cpus)}, host=True, source="docker info"))


@pytest.fixture
def two_slots(orch):
    host(2, 8)
    return orch


def make(name, desired="stopped", **fields):
    return Instance.objects.create(display_name=name, name=f"bot-{name}", desired_state=desired,
                                   **fields)


def desired(name):
    return Instance.objects.get(name=f"bot-{name}").desired_state


# --- create ------------------------------------------------------------------------------------

def test_a_third_create_is_refused_with_the_numbers_and_nothing_is_created(two_slots):
    services.instance_create(display_name="a", name="bot-a")
    services.instance_create(display_name="b", name="bot-b")
    with pytest.raises(CapacityExceeded) as refused:
        services.instance_create(display_name="c", name="bot-c")
    assert refused.value.message_dict == {"memory_limit": [
        f"Not enough capacity for bot-c: {FULL}. Nothing was changed."]}
    assert sorted(Instance.objects.values_list("name", flat=True)) == ["bot-a", "bot-b"]
    assert not Activity.objects.filter(instance_name="bot-c").exists()


def test_a_create_through_the_model_alone_is_refused_and_undone_too(two_slots):
    make("a", "running")
    make("b", "running")
    with pytest.raises(CapacityExceeded):
        Instance.objects.create(display_name="c", name="bot-c")
    assert not Instance.objects.filter(name="bot-c").exists()


def test_a_create_that_is_short_of_cpu_names_the_cpu_field(two_slots):
    make("a", "running")
    with pytest.raises(CapacityExceeded) as refused:
        services.instance_create(display_name="big", name="bot-big", cpu_request="2",
                                 cpu_limit="2", memory_limit="1Gi")
    assert refused.value.message_dict == {"cpu_request": [
        "Not enough capacity for bot-big: needs 2 CPU / 1 GiB; 1.5 CPU / 4 GiB free of "
        "2 CPU / 8 GiB; 1 instance running. Nothing was changed."]}


def test_created_stopped_needs_no_budget_until_it_is_started(two_slots):
    make("a", "running")
    make("b", "running")
    services.instance_create(display_name="c", name="bot-c", desired_state="stopped")
    outcome = services.instance_start(instance_ids=[Instance.objects.get(name="bot-c").pk])
    assert outcome.queued == []
    assert outcome.skipped == [("bot-c", f"not enough capacity: {FULL}")]
    assert desired("c") == "stopped"


def test_without_a_recorded_capacity_nothing_is_refused(orch):
    for i in range(5):
        services.instance_create(display_name=f"n{i}", cpu_request="2", cpu_limit="2")
    assert Instance.objects.count() == 5


def test_stopped_and_deleting_instances_hold_nothing(two_slots):
    make("a", "running")
    make("gone", "running", status="deleting")
    make("off", "stopped")
    services.instance_create(display_name="b", name="bot-b")  # the second slot is free


# --- start -------------------------------------------------------------------------------------

def test_a_bulk_start_of_five_starts_two_in_order_and_reports_three(two_slots):
    rows = [make(f"s{i}") for i in range(5)]
    outcome = services.instance_start(instance_ids=[r.pk for r in reversed(rows)],
                                      actor="schedule")
    assert outcome.queued == ["bot-s0", "bot-s1"]
    assert [name for name, _ in outcome.skipped] == ["bot-s2", "bot-s3", "bot-s4"]
    assert all(why == f"not enough capacity: {FULL}" for _, why in outcome.skipped)
    assert [desired(f"s{i}") for i in range(5)] == ["running"] * 2 + ["stopped"] * 3
    assert "Skipped bot-s2 (not enough capacity: needs 0.5 CPU" in outcome.summary()
    # Only what was admitted is recorded as asked for.
    assert sorted(Activity.objects.filter(action="start").values_list(
        "instance_name", flat=True)) == ["bot-s0", "bot-s1"]


def test_a_refused_start_is_never_carried_out_by_a_worker(two_slots, run_tasks):
    make("a", "running")
    make("b", "running")
    c = make("c")
    outcome, _ = run_tasks(services.instance_start, instance_ids=[c.pk])
    assert outcome.skipped
    assert "bot-c" not in two_slots.workloads or two_slots.workloads["bot-c"].status != "running"
    c.refresh_from_db()
    assert (c.desired_state, c.generation) == ("stopped", 1)


def test_starting_what_is_meant_to_run_already_needs_no_new_room(two_slots):
    a, b = make("a", "running", status="error"), make("b", "running", status="stopped")
    outcome = services.instance_start(instance_ids=[a.pk, b.pk])
    assert outcome.queued == ["bot-a", "bot-b"]


def test_restart_and_recreate_of_a_stopped_instance_are_admitted_like_a_start(two_slots):
    make("a", "running")
    make("b", "running")
    c = make("c")
    for intent in (services.instance_restart, services.instance_recreate):
        outcome = intent(instance_ids=[c.pk])
        assert outcome.skipped == [("bot-c", f"not enough capacity: {FULL}")]
    assert desired("c") == "stopped"


def test_overcommit_settings_stretch_a_host(two_slots, settings):
    make("a", "running")
    make("b", "running")
    c = make("c")
    settings.CLAWORC_CPU_OVERCOMMIT = Decimal("0.5")
    settings.CLAWORC_MEMORY_OVERCOMMIT = Decimal("1.25")
    outcome = services.instance_start(instance_ids=[c.pk])
    assert outcome.skipped == [("bot-c", "not enough capacity: needs 0.5 CPU / 4 GiB; "
                                "0 CPU / 2 GiB free of 1 CPU / 10 GiB; 2 instances running")]
    settings.CLAWORC_CPU_OVERCOMMIT = settings.CLAWORC_MEMORY_OVERCOMMIT = Decimal("1.5")
    assert services.instance_start(instance_ids=[c.pk]).queued == ["bot-c"]


def test_a_quota_bounds_pods_and_says_where_it_comes_from(orch):
    orch.backend_name = "kubernetes"
    registry.store_capacity("kubernetes", HostCapacity(
        totals={"requests.cpu": Decimal(4), "pods": Decimal(2)},
        others={"requests.cpu": Decimal("1.5")},
        source="ResourceQuota compute in namespace claworc"))
    make("a", "running")
    b, c = make("b"), make("c")
    outcome = services.instance_start(instance_ids=[b.pk, c.pk])
    assert outcome.queued == ["bot-b"]
    assert outcome.skipped == [("bot-c", (
        "not enough capacity: needs 0.5 CPU / 1 pods; 1.5 CPU / 0 pods free of 2.5 CPU / "
        "2 pods; 2 instances running (requests.cpu, pods of ResourceQuota compute in namespace "
        "claworc)"))]


def test_a_limit_range_max_refuses_one_instance_too_big(orch):
    orch.backend_name = "kubernetes"
    registry.store_capacity("kubernetes", HostCapacity(
        per_instance_max={"cpu": Decimal(1)}, source="LimitRange in namespace claworc"))
    with pytest.raises(CapacityExceeded) as refused:
        services.instance_create(display_name="wide", name="bot-wide", cpu_limit="2")
    assert refused.value.message_dict == {"cpu_limit": [
        "Not enough capacity for bot-wide: 2 CPU is more than the 1 CPU one instance may "
        "have (LimitRange in namespace claworc). Nothing was changed."]}
    assert services.capacity.budget().summary() == "at most 1 CPU per instance"


def test_a_record_of_another_backend_is_not_used(two_slots):
    host(1, 8, backend="kubernetes")  # read before the backend changed
    for i in range(3):
        make(f"k{i}", "running")
    services.instance_create(display_name="d", name="bot-d")


# --- resize -------------------------------------------------------------------------------------

def test_a_resize_over_budget_is_refused_and_changes_nothing(two_slots, run_tasks):
    a, _b = make("a", "running"), make("b", "running")
    version = Instance.objects.get(pk=a.pk).version
    with pytest.raises(CapacityExceeded) as refused:
        run_tasks(services.instance_update, instance=Instance.objects.get(pk=a.pk),
                  memory_request="1Gi", memory_limit="5Gi")
    assert refused.value.message_dict == {"memory_limit": [
        "Not enough capacity for bot-a: needs 0.5 CPU / 5 GiB; 1.5 CPU / 4 GiB free of "
        "2 CPU / 8 GiB; 1 instance running. Nothing was changed."]}
    a.refresh_from_db()
    assert (a.memory_limit, a.version, a.generation) == ("4Gi", version, 1)
    assert not Activity.objects.filter(instance=a, action="update").exists()
    # Smaller always fits; a stopped instance may be given anything (it is admitted at start).
    services.instance_update(instance=a, memory_limit="2Gi")
    c = make("c")
    services.instance_update(instance=c, memory_limit="64Gi", memory_request="1Gi")


# --- the admin ---------------------------------------------------------------------------------

def _form(**fields):
    data = {"display_name": "", "name": "", "desired_state": "running", "image": "",
            "cpu_request": "500m", "cpu_limit": "2000m", "memory_request": "1Gi",
            "memory_limit": "4Gi", "storage_clawdbot": "5Gi", "storage_homebrew": "10Gi",
            "storage_clawd": "5Gi", "storage_chrome": "5Gi", "clawdbot_config": "{}",
            "ports-TOTAL_FORMS": "0", "ports-INITIAL_FORMS": "0", "_save": "Save"}
    data.update(fields)
    return data


def test_the_add_form_shows_the_refusal_on_the_field_and_creates_nothing(
        client, staff, two_slots):
    make("a", "running")
    make("b", "running")
    page = client.post(ADD, _form(display_name="Third"))
    assert page.status_code == 200
    assert page.context["adminform"].form.errors["memory_limit"] == [
        f"Not enough capacity for bot-third: {FULL}. Nothing was changed."]
    assert not Instance.objects.filter(name="bot-third").exists()


def test_the_change_form_refuses_a_resize_on_the_field(client, staff, two_slots):
    a, _b = make("a", "running"), make("b", "running")
    url = reverse("admin:instances_instance_change", args=[a.pk])
    page = client.post(url, _form(display_name="a", memory_limit="6Gi",
                                  expected_version=str(a.version)))
    assert page.status_code == 200
    errors = page.context["adminform"].form.errors
    assert errors["memory_limit"] == [
        "Not enough capacity for bot-a: needs 0.5 CPU / 6 GiB; 1.5 CPU / 4 GiB free of "
        "2 CPU / 8 GiB; 1 instance running. Nothing was changed."]
    a.refresh_from_db()
    assert a.memory_limit == "4Gi"


def test_the_start_action_starts_what_fits_and_says_which_were_refused(
        client, staff, two_slots):
    rows = [make(f"s{i}") for i in range(3)]
    page = client.post(CHANGELIST, {"action": "start_instances",
                                    "_selected_action": [r.pk for r in rows]}, follow=True)
    text = page.content.decode()
    assert "Queued start of 2 instances: bot-s0, bot-s1." in text
    assert f"Skipped bot-s2 (not enough capacity: {FULL})." in text
    assert [desired(f"s{i}") for i in range(3)] == ["running", "running", "stopped"]


def test_the_admin_index_and_the_status_list_show_the_budget_in_use(client, staff, two_slots):
    # More than fits, as after the host shrank (rows written without admission).
    Instance.objects.bulk_create([
        Instance(name="bot-a", display_name="a", cpu_request="1500m", cpu_limit="2"),
        Instance(name="bot-b", display_name="b", memory_limit="6Gi"),
        Instance(name="bot-off", display_name="off", desired_state="stopped")])
    expected = "CPU 2 / 2 · memory 10 / 8 GiB"
    index = client.get(reverse("admin:index")).content.decode()
    assert f"Budget in use: {expected} (over budget: new starts are refused)" in index
    listing = client.get(reverse("instances:list")).content.decode()
    assert f"Budget in use: {expected}" in listing and "2 instances running" in listing


def test_no_budget_is_shown_as_such(client, staff, orch):
    index = client.get(reverse("admin:index")).content.decode()
    assert "No capacity budget" in index


def test_the_record_is_json_a_person_can_read(two_slots):
    from instances.models import Setting

    stored = json.loads(Setting.get_str(registry.CAPACITY_KEY))
    assert timezone.now() - datetime.fromisoformat(stored.pop("read_at")) < timedelta(minutes=1)
    assert stored == {"backend": "docker", "totals": {"requests.cpu": "2",
                                                      "limits.memory": str(8 * GIB)},
                      "others": {}, "per_instance_max": {"cpu": "2"}, "host": True,
                      "source": "docker info"}


# --- the race for the last slot ------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def _race(tmp_path, database_url):
    """Two admin sessions and two workers, each a process of its own against the same database,
    start a different stopped instance at the same moment; one slot is left."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "claworc_site.settings",
           "DATABASE_URL": database_url, "CLAWORC_DATA_DIR": str(tmp_path / "data"),
           "SECRET_KEY": "race-secret-key-for-this-test-only", "ALLOWED_HOSTS": "testserver",
           "CELERY_BROKER_URL": "memory://", "DEBUG": "false"}
    env.pop("PYTEST_CURRENT_TEST", None)

    def run(*args, timeout=600):  # a loaded machine starts Python slowly
        done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=timeout)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    run("manage.py", "migrate", "--no-input", "-v", "0")
    ids = json.loads(run("-m", "tests.instances.capacity_race", "setup"))
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    modes = ["admin", "worker", "admin", "worker"]
    racers = [subprocess.Popen(
        [sys.executable, "-m", "tests.instances.capacity_race", "race", mode, str(pk),
         str(barrier), str(i)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for i, (mode, pk) in enumerate(zip(modes, ids,
                                                                              strict=True))]
    try:
        deadline = time.monotonic() + 300
        while len(list(barrier.glob("ready-*"))) < len(racers):
            assert all(r.poll() is None for r in racers), [r.communicate() for r in racers]
            assert time.monotonic() < deadline, "the racers did not get ready"
            time.sleep(0.05)
        (barrier / "go").touch()
        results = []
        for racer in racers:
            out, err = racer.communicate(timeout=300)
            assert racer.returncode == 0, err[-3000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
    return ids, results


def _check_one_admitted(results):
    said = [r["said"] for r in results]
    admitted = [s for s in said if s.startswith("Queued start of 1 instance")]
    refused = [s for s in said if "not enough capacity: needs 0.5 CPU / 4 GiB; 0 CPU / 0 GiB "
               "free of 1 CPU / 8 GiB; 2 instances running" in s]
    assert (len(admitted), len(refused)) == (1, 3), said


@pytest.mark.slow
def test_two_sessions_and_two_workers_racing_for_the_last_slot_admit_one_on_sqlite(tmp_path):
    _ids, results = _race(tmp_path, f"sqlite:///{tmp_path / 'race.sqlite3'}")
    _check_one_admitted(results)
    with closing(sqlite3.connect(tmp_path / "race.sqlite3")) as conn:
        assert conn.execute("SELECT COUNT(*) FROM instances_instance "
                            "WHERE desired_state = 'running'").fetchone() == (2,)


@pytest.mark.slow
@pytest.mark.postgres
def test_two_sessions_and_two_workers_racing_for_the_last_slot_admit_one_on_postgresql(
        tmp_path, postgres_url):
    import psycopg

    from tests.integration.support import postgres_database

    with postgres_database(postgres_url) as url:
        _ids, results = _race(tmp_path, url)
        _check_one_admitted(results)
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT COUNT(*) FROM instances_instance "
                                "WHERE desired_state = 'running'").fetchone() == (2,)


def test_the_budget_costs_two_queries_whatever_the_fleet(two_slots, django_assert_num_queries):
    for count in (3, 300):
        Instance.objects.bulk_create(
            Instance(name=f"bot-q{count}-{i}", display_name=str(i)) for i in range(count))
        with django_assert_num_queries(2):
            found = services.capacity.budget()
        assert found.running == Instance.objects.count()


@pytest.mark.parametrize(("value", "fragment"), [
    ("0", "CLAWORC_MEMORY_OVERCOMMIT must be more than 0 and at most 100, got 0"),
    ("lots", "CLAWORC_MEMORY_OVERCOMMIT must be a number such as 1.0 or 1.5, got 'lots'"),
])
def test_a_bad_overcommit_factor_stops_start_up_naming_it(value, fragment):
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "claworc_site.settings",
             "CLAWORC_MEMORY_OVERCOMMIT": value},
        capture_output=True, text=True, timeout=300)  # a loaded machine starts Python slowly
    assert done.returncode != 0
    assert fragment in done.stderr


def test_a_scheduled_start_that_does_not_fit_is_refused_like_a_manual_one(two_slots):
    from datetime import UTC, datetime, time, timedelta

    from instances.services.schedules import schedules_apply

    make("a", "running")
    make("b", "running")
    Instance.objects.bulk_create([Instance(
        name="bot-sched", display_name="sched", desired_state="stopped", status="stopped",
        observed_generation=1, owed_since=None, schedule_days="mon", schedule_start=time(8),
        schedule_end=time(20), schedule_timezone="UTC")])
    monday = datetime(2026, 6, 15, 7, 59, tzinfo=UTC)
    schedules_apply(now=monday)  # the window's first edge is the next one
    report = schedules_apply(now=monday + timedelta(minutes=2))
    assert report.started == []
    assert report.refused == [("bot-sched", f"not enough capacity: {FULL}")]
    assert desired("sched") == "stopped"
    assert Activity.objects.get(instance_name="bot-sched", actor="schedule").message.endswith(
        f"not enough capacity: {FULL}")


# --- the numbers follow the backend --------------------------------------------------------------

def _record_aged(seconds):
    from instances.models import Setting

    stored = json.loads(Setting.get_str(registry.CAPACITY_KEY))
    read_at = datetime.fromisoformat(stored["read_at"]) - timedelta(seconds=seconds)
    Setting.set(registry.CAPACITY_KEY, json.dumps({**stored, "read_at": read_at.isoformat()}))


def test_reconcile_all_reads_the_capacity_again_when_due_and_a_failed_read_keeps_the_last(
        two_slots, settings):
    from instances.services.reconcile_all import CAPACITY_EVERY
    from orchestrators.base import TransientError

    reads = []
    grown = HostCapacity(totals={"requests.cpu": Decimal(4), "limits.memory": Decimal(16 * GIB)},
                         per_instance_max={"cpu": Decimal(4)}, host=True, source="docker info")

    def read():
        reads.append(1)
        return grown

    two_slots.host_capacity = read  # the host was given more CPUs and memory
    every = CAPACITY_EVERY * settings.CLAWORC_RECONCILE_INTERVAL
    _record_aged(every - 60)  # read at detection, not long ago: not read at this beat
    services.instances_reconcile_all(owner="test")
    assert reads == []
    assert services.capacity.budget().summary() == "CPU 0 / 2 · memory 0 / 8 GiB"
    _record_aged(60)  # CAPACITY_EVERY intervals since the read: read again
    services.instances_reconcile_all(owner="test")
    assert reads == [1]
    assert services.capacity.budget().summary() == "CPU 0 / 4 · memory 0 / 16 GiB"
    services.instances_reconcile_all(owner="test")
    assert reads == [1]

    def down():
        raise TransientError("the daemon did not answer")

    two_slots.host_capacity = down
    _record_aged(every)
    services.instances_reconcile_all(owner="test")
    assert services.capacity.budget().summary() == "CPU 0 / 4 · memory 0 / 16 GiB"
    assert registry.capacity_read_due("docker", every)  # tried again at the next beat
