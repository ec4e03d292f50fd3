"""Run hours: the window's edges (midnight, DST), validation at the door, and the beat that
applies each edge once through the Start/Stop intents, on a clock passed in as `now`."""

from datetime import UTC, datetime, time, timedelta

import pytest
from django.core.exceptions import ValidationError

from instances import services
from instances.models import Activity, Instance
from instances.run_hours import (
    START,
    STOP,
    Schedule,
    latest_transition,
    next_transition,
    schedule_errors,
)
from instances.services import schedules
from instances.services.schedules import schedules_apply

WEEKDAYS = (0, 1, 2, 3, 4)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# --- the window's edges -----------------------------------------------------------------------

def test_weekday_window_in_a_time_zone():
    paris = Schedule(days=WEEKDAYS, start=time(8), end=time(20), zone="Europe/Paris")
    # Wednesday 2026-06-10, 12:00 in Paris (CEST, UTC+2): the window opened at 08:00 local.
    assert latest_transition(paris, at("2026-06-10T12:00+02:00")) == (
        at("2026-06-10T08:00+02:00"), START)
    # Saturday: Friday's window closed at 20:00; the next edge is Monday 08:00.
    saturday = at("2026-06-13T10:00+02:00")
    assert latest_transition(paris, saturday) == (at("2026-06-12T20:00+02:00"), STOP)
    assert next_transition(paris, saturday) == (at("2026-06-15T08:00+02:00"), START)
    # The edge itself counts as passed at its very instant.
    assert latest_transition(paris, at("2026-06-10T20:00+02:00"))[1] == STOP


def test_a_window_crossing_midnight_closes_the_next_day():
    nights = Schedule(days=(0,), start=time(22), end=time(6), zone="UTC")  # Mondays 22-06
    assert str(nights) == "Mon 22:00-06:00 (next day) UTC"
    assert latest_transition(nights, at("2026-06-16T03:00+00:00")) == (  # Tuesday 03:00
        at("2026-06-15T22:00+00:00"), START)
    assert latest_transition(nights, at("2026-06-16T07:00+00:00")) == (
        at("2026-06-16T06:00+00:00"), STOP)


def _edges_between(schedule: Schedule, start: datetime, end: datetime, step: timedelta):
    """The distinct latest edges a beat every `step` sees from `start` to `end`."""
    seen, now = [], start
    while now <= end:
        edge = latest_transition(schedule, now)
        if edge and (not seen or seen[-1] != edge):
            seen.append(edge)
        now += step
    return seen[1:]  # the first is what was already past at `start`


@pytest.mark.parametrize("day, start_text, stop_text", [
    # Clocks go forward at 02:00 to 03:00: 02:30 does not exist; it is taken as 03:30 CEST.
    ("2026-03-29", "2026-03-29T01:30+00:00", "2026-03-29T04:00+00:00"),
    # Clocks go back at 03:00 to 02:00: 02:30 happens twice; the first one is the edge.
    ("2026-10-25", "2026-10-25T00:30+00:00", "2026-10-25T05:00+00:00"),
])
def test_dst_days_neither_double_start_nor_miss(day, start_text, stop_text):
    schedule = Schedule(days=tuple(range(7)), start=time(2, 30), end=time(6), zone="Europe/Paris")
    begin = at(f"{day}T00:00+00:00") - timedelta(hours=2)
    edges = _edges_between(schedule, begin, begin + timedelta(hours=12), timedelta(minutes=1))
    assert edges == [(at(start_text), START), (at(stop_text), STOP)]


# --- validation at the door -------------------------------------------------------------------

def test_schedule_errors_name_the_field():
    assert schedule_errors(days="", start=None, end=None, zone="") == {}
    partial = schedule_errors(days="mon", start=time(8), end=None, zone="")
    assert set(partial) == {"schedule_end", "schedule_timezone"}
    assert "leave all four schedule fields empty" in partial["schedule_end"]
    assert "not an IANA time zone" in schedule_errors(
        days="mon", start=time(8), end=time(9), zone="Mars/Olympus")["schedule_timezone"]
    assert "'funday' is not a day" in schedule_errors(
        days="mon,funday", start=time(8), end=time(9), zone="UTC")["schedule_days"]
    assert "is empty" in schedule_errors(
        days="mon", start=time(8), end=time(8), zone="UTC")["schedule_end"]


@pytest.mark.django_db
def test_instance_create_refuses_a_bad_schedule_and_saves_nothing():
    with pytest.raises(ValidationError) as caught:
        services.instance_create(display_name="Sched Bad", schedule_days="mon",
                                 schedule_start=time(8), schedule_end=time(20),
                                 schedule_timezone="Europe/Pariss")
    assert "schedule_timezone" in caught.value.message_dict
    assert not Instance.objects.exists()


@pytest.mark.django_db
def test_admin_form_checks_the_schedule(staff, client):
    instance = Instance.objects.bulk_create([Instance(
        display_name="Sched Form", name="bot-sched-form", status="running",
        observed_generation=1, owed_since=None)])[0]
    url = f"/admin/instances/instance/{instance.pk}/change/"
    page = client.get(url)
    assert page.status_code == 200
    assert b'name="schedule_days"' in page.content and b"Run hours" in page.content
    base = {"display_name": "Sched Form", "image": "", "cpu_request": "500m",
            "cpu_limit": "2000m", "memory_request": "1Gi", "memory_limit": "4Gi",
            "storage_clawdbot": "5Gi", "storage_homebrew": "10Gi", "storage_clawd": "5Gi",
            "storage_chrome": "5Gi", "clawdbot_config": "{}", "idle_stop": "on",
            "expected_version": str(instance.version),
            "ports-TOTAL_FORMS": "0", "ports-INITIAL_FORMS": "0"}
    bad = client.post(url, {**base, "schedule_days": ["mon"], "schedule_start": "08:00",
                            "schedule_end": "08:00", "schedule_timezone": "Nowhere/Land"})
    assert bad.status_code == 200
    assert b"is not an IANA time zone" in bad.content
    assert b"the end must differ from the start" in bad.content
    good = client.post(url, {**base, "schedule_days": ["mon", "tue", "wed", "thu", "fri"],
                             "schedule_start": "08:00", "schedule_end": "20:00",
                             "schedule_timezone": "Europe/Paris"})
    assert good.status_code == 302, good.content.decode()[:2000]
    instance.refresh_from_db()
    assert instance.schedule_days == "mon,tue,wed,thu,fri"
    assert str(instance.schedule) == "Mon-Fri 08:00-20:00 Europe/Paris"
    shown = client.get(url).content.decode()
    assert "Mon-Fri 08:00-20:00 Europe/Paris" in shown


# --- the beat: each edge once, through the intents --------------------------------------------

def _make(name, *, running=True, **fields):
    state = "running" if running else "stopped"
    fields = {"observed_generation": 1, "owed_since": None, "status": state,
              "desired_state": state, "schedule_days": "mon,tue,wed,thu,fri",
              "schedule_start": time(8), "schedule_end": time(20), "schedule_timezone": "UTC",
              **fields}
    return Instance.objects.bulk_create([Instance(display_name=name, name=name, **fields)])[0]


def _by_schedule(name):
    return list(Activity.objects.filter(instance_name=name, actor__in=["schedule"])
                .order_by("id").values_list("action", "result", "message"))


MON_0759 = at("2026-06-15T07:59+00:00")  # a Monday


@pytest.mark.django_db
def test_a_new_schedule_acts_from_its_next_edge_then_each_edge_once():
    inst = _make("bot-sched-a", running=False)
    report = schedules_apply(now=MON_0759)
    assert report.baselined == ["bot-sched-a"] and not report.started
    assert _by_schedule("bot-sched-a") == []

    # 08:00 passes: started, once, however often or late the beat runs in the window.
    for minutes in (1, 2, 2, 30, 600):
        schedules_apply(now=MON_0759 + timedelta(minutes=minutes))
    assert _by_schedule("bot-sched-a") == [
        ("start", "queued", "Scheduled start: window Mon-Fri 08:00-20:00 UTC opened at "
                            "Mon 08:00.")]
    inst.refresh_from_db()
    assert inst.desired_state == "running" and inst.status == "starting"
    assert inst.auto_reason == "Started by the schedule at Mon 08:00 (Mon-Fri 08:00-20:00 UTC)."

    # The worker reports it running; 20:00 passes: stopped, once.
    Instance.objects.filter(pk=inst.pk).update(status="running")
    for minutes in (12 * 60 + 2, 12 * 60 + 3):
        schedules_apply(now=MON_0759 + timedelta(minutes=minutes))
    assert [a[:2] for a in _by_schedule("bot-sched-a")] == [("start", "queued"),
                                                           ("stop", "queued")]
    inst.refresh_from_db()
    assert inst.desired_state == "stopped"
    assert inst.auto_reason == "Stopped by the schedule at Mon 20:00 (Mon-Fri 08:00-20:00 UTC)."


@pytest.mark.django_db
def test_a_person_overrides_until_the_next_edge():
    inst = _make("bot-sched-b", running=False)
    schedules_apply(now=MON_0759)
    schedules_apply(now=MON_0759 + timedelta(minutes=2))  # started by the schedule
    Instance.objects.filter(pk=inst.pk).update(status="running")
    # A person stops it inside its window: the schedule leaves it stopped...
    services.instance_stop(instance_ids=[inst.pk], actor="alice")
    Instance.objects.filter(pk=inst.pk).update(status="stopped")
    for minutes in (5, 60, 300):
        schedules_apply(now=MON_0759 + timedelta(minutes=minutes))
    inst.refresh_from_db()
    assert inst.desired_state == "stopped"
    assert inst.auto_reason == ""  # a person acted since: the schedule's note is history
    # ... and starts it at the next window's start (Tuesday 08:00).
    schedules_apply(now=MON_0759 + timedelta(days=1, minutes=2))
    inst.refresh_from_db()
    assert inst.desired_state == "running"
    # A person starting it outside the window is not stopped before the window's end.
    services.instance_stop(instance_ids=[inst.pk], actor="alice")
    services.instance_start(instance_ids=[inst.pk], actor="alice")
    schedules_apply(now=MON_0759 + timedelta(days=1, hours=11))
    inst.refresh_from_db()
    assert inst.desired_state == "running"


@pytest.mark.django_db
def test_a_beat_missed_for_days_applies_only_the_latest_edge():
    inst = _make("bot-sched-c", running=True)
    schedules_apply(now=MON_0759)
    # The worker is down from Monday 07:59 until Thursday 21:00: nine edges passed.
    schedules_apply(now=at("2026-06-18T21:00+00:00"))
    assert [a[:2] for a in _by_schedule("bot-sched-c")] == [("stop", "queued")]
    assert "closed at Thu 20:00" in _by_schedule("bot-sched-c")[0][2]
    inst.refresh_from_db()
    assert inst.desired_state == "stopped"


@pytest.mark.django_db
def test_changing_the_schedule_acts_from_its_next_edge():
    inst = _make("bot-sched-d", running=True)
    schedules_apply(now=MON_0759)
    # Inside the old window's night, the schedule becomes 06:00-07:00: its 07:00 edge
    # (already past) is not applied; the next one is.
    Instance.objects.filter(pk=inst.pk).update(schedule_start=time(6), schedule_end=time(7))
    report = schedules_apply(now=MON_0759 + timedelta(minutes=1))
    assert report.baselined == ["bot-sched-d"] and _by_schedule("bot-sched-d") == []
    schedules_apply(now=MON_0759 + timedelta(days=1, hours=-1, minutes=-58))  # Tue 06:01
    assert [a[:2] for a in _by_schedule("bot-sched-d")] == []  # already running: nothing to do
    schedules_apply(now=MON_0759 + timedelta(days=1, minutes=-58))  # Tue 07:01
    assert [a[:2] for a in _by_schedule("bot-sched-d")] == [("stop", "queued")]


@pytest.fixture
def admission(monkeypatch):
    """Admission control's answer: the real start intent, with these names refused."""
    refused: dict[str, str] = {}
    real = services.instance_start

    def start(*, instance_ids, actor=None, messages=None):
        rows = dict(Instance.objects.filter(pk__in=list(instance_ids)).values_list("pk", "name"))
        allowed = [pk for pk, name in rows.items() if name not in refused]
        outcome = real(instance_ids=allowed, actor=actor, messages=messages)
        outcome.skipped += [(rows[pk], refused[rows[pk]]) for pk in rows if pk not in allowed]
        return outcome

    monkeypatch.setattr(schedules, "instance_start", start)
    return refused


@pytest.mark.django_db
def test_a_refused_scheduled_start_is_recorded_once_per_window(admission):
    inst = _make("bot-sched-e", running=False)
    schedules_apply(now=MON_0759)
    full = "needs 2 CPU / 4 GiB; 0.5 CPU / 1 GiB free of 4 CPU / 16 GiB; 3 instances running"
    admission["bot-sched-e"] = full
    for minutes in range(1, 30):  # a beat a minute for half an hour
        report = schedules_apply(now=MON_0759 + timedelta(minutes=minutes))
    assert report.refused == [("bot-sched-e", full)]
    assert _by_schedule("bot-sched-e") == [
        ("start", "error", "Scheduled start refused (window Mon-Fri 08:00-20:00 UTC opened at "
                           f"Mon 08:00): {full}")]
    inst.refresh_from_db()
    assert inst.desired_state == "stopped"
    assert inst.auto_reason == f"Scheduled start at Mon 08:00 refused: {full}"

    # The reason changes: recorded again. Then room frees up: started within the window.
    admission["bot-sched-e"] = "needs 2 CPU; 1 CPU free"
    schedules_apply(now=MON_0759 + timedelta(minutes=31))
    schedules_apply(now=MON_0759 + timedelta(minutes=32))
    del admission["bot-sched-e"]
    schedules_apply(now=MON_0759 + timedelta(minutes=33))
    assert [a[:2] for a in _by_schedule("bot-sched-e")] == [
        ("start", "error"), ("start", "error"), ("start", "queued")]
    inst.refresh_from_db()
    assert inst.desired_state == "running"


@pytest.mark.django_db
def test_a_refused_start_is_not_retried_once_a_person_acted(admission):
    inst = _make("bot-sched-f", running=False)
    schedules_apply(now=MON_0759)
    admission["bot-sched-f"] = "no room"
    schedules_apply(now=MON_0759 + timedelta(minutes=1))
    # A person decides (here: an edit of the row).
    Instance.objects.filter(pk=inst.pk).update(version=inst.version + 5)
    del admission["bot-sched-f"]
    schedules_apply(now=MON_0759 + timedelta(minutes=2))
    inst.refresh_from_db()
    assert inst.desired_state == "stopped"
    assert [a[:2] for a in _by_schedule("bot-sched-f")] == [("start", "error")]
    # The window closes: nothing to stop, and the old refusal is no longer shown.
    schedules_apply(now=MON_0759 + timedelta(hours=13))
    inst.refresh_from_db()
    assert inst.auto_kind == ""


@pytest.mark.django_db
def test_a_stop_of_the_stopped_bot_ends_the_retries_of_its_refused_start(admission):
    """The person's Stop changes nothing on a stopped bot, its version included: the refused
    scheduled start used to be tried again and started the bot once room freed up."""
    inst = _make("bot-sched-g", running=False)
    other = _make("bot-sched-h", running=False)
    schedules_apply(now=MON_0759)
    admission["bot-sched-g"] = admission["bot-sched-h"] = "no room"
    schedules_apply(now=MON_0759 + timedelta(minutes=1))

    outcome = services.instance_stop(instance_ids=[inst.pk], actor="ops")
    assert outcome.queued == []
    assert outcome.skipped == [
        ("bot-sched-g", "already stopped; its refused scheduled start is no longer tried")]
    inst.refresh_from_db()
    assert inst.auto_reason == ""
    assert Activity.objects.filter(instance_name="bot-sched-g", actor="ops").get().message == (
        "Already stopped; its refused scheduled start is no longer tried in this window.")

    admission.clear()  # room frees up: only the bot nobody stopped starts
    schedules_apply(now=MON_0759 + timedelta(minutes=2))
    inst.refresh_from_db()
    other.refresh_from_db()
    assert (inst.desired_state, other.desired_state) == ("stopped", "running")
    # A second Stop has nothing left to end: just "already stopped", nothing recorded.
    assert services.instance_stop(instance_ids=[inst.pk], actor="ops").skipped == [
        ("bot-sched-g", "already stopped")]
    assert Activity.objects.filter(instance_name="bot-sched-g", actor="ops").count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("day", ["2026-03-29", "2026-10-25"])
def test_a_beat_every_minute_through_a_dst_day_starts_and_stops_once(day):
    inst = _make("bot-sched-dst", running=False, schedule_days="sun", schedule_start=time(2, 30),
                 schedule_end=time(6), schedule_timezone="Europe/Paris")
    begin = at(f"{day}T00:00+02:00") - timedelta(hours=1)
    schedules_apply(now=begin)
    for minute in range(9 * 60):
        now = begin + timedelta(minutes=minute)
        schedules_apply(now=now)
        if Instance.objects.filter(pk=inst.pk, status="starting").update(status="running"):
            started_at = now
    assert [a[:2] for a in _by_schedule("bot-sched-dst")] == [("start", "queued"),
                                                             ("stop", "queued")]
    # The spring day has no 02:30: it starts at 03:30 CEST; the autumn day's first 02:30.
    assert started_at.astimezone(UTC).strftime("%H:%M") == (
        "01:30" if day.endswith("03-29") else "00:30")


def _fleet(count):
    Instance.objects.bulk_create(
        Instance(display_name=f"bot-fleet-{i}", name=f"bot-fleet-{i}", observed_generation=1,
                 owed_since=None, status="stopped" if i % 2 else "running",
                 desired_state="stopped" if i % 2 else "running",
                 schedule_days="mon,tue,wed,thu,fri", schedule_start=time(8 + i % 3),
                 schedule_end=time(20), schedule_timezone="UTC") for i in range(count))


@pytest.mark.django_db
@pytest.mark.parametrize("count", [4, 50])
def test_one_beat_costs_a_constant_number_of_queries(count, django_assert_max_num_queries):
    _fleet(count)
    schedules_apply(now=MON_0759)
    # The lease (4), the read, the two intents in savepoints (5 each), the marks, the release.
    with django_assert_max_num_queries(17):
        report = schedules_apply(now=MON_0759 + timedelta(hours=3))  # every window opened
    assert len(report.started) == count // 2
    with django_assert_max_num_queries(17):
        report = schedules_apply(now=MON_0759 + timedelta(hours=13))  # every window closed
    assert len(report.stopped) == count
    with django_assert_max_num_queries(6):  # the lease, one read, nothing to write
        assert not schedules_apply(now=MON_0759 + timedelta(hours=13, minutes=1)).stopped


@pytest.mark.django_db
def test_the_pages_show_the_schedule_and_why_it_stopped(staff, client, settings):
    from django.urls import reverse

    settings.CLAWORC_IDLE_AFTER = 1800
    inst = _make("bot-sched-page", running=True, schedule_timezone="Europe/Paris")
    schedules_apply(now=MON_0759)
    schedules_apply(now=at("2026-06-15T20:01+02:00"))
    reason = "Stopped by the schedule at Mon 20:00 (Mon-Fri 08:00-20:00 Europe/Paris)."
    for url in (reverse("instances:list"), reverse("instances:detail", args=[inst.name]),
                reverse("admin:instances_instance_changelist"),
                reverse("admin:instances_instance_change", args=[inst.pk])):
        page = client.get(url)
        assert page.status_code == 200
        assert reason in page.content.decode(), url
    detail = client.get(reverse("instances:detail", args=[inst.name])).content.decode()
    assert "Run hours: Mon-Fri 08:00-20:00 Europe/Paris; next: start at" in detail
    assert "stop when idle: yes, after 1800 s" in detail
    listing = client.get(reverse("instances:list")).content.decode()
    assert "runs Mon-Fri 08:00-20:00 Europe/Paris" in listing
    # A person starts it: the schedule's reason is no longer shown anywhere.
    services.instance_start(instance_ids=[inst.pk], actor="alice")
    for url in (reverse("instances:list"), reverse("instances:detail", args=[inst.name])):
        assert reason not in client.get(url).content.decode()


# --- settings and the beat --------------------------------------------------------------------

@pytest.mark.parametrize(("name", "raw", "fragment"), [
    ("CLAWORC_IDLE_CPU_THRESHOLD", "lots", "CLAWORC_IDLE_CPU_THRESHOLD must be a number"),
    ("CLAWORC_IDLE_CPU_THRESHOLD", "-0.1", "CLAWORC_IDLE_CPU_THRESHOLD must be at least 0"),
    ("CLAWORC_IDLE_CPU_THRESHOLD", "nan", "CLAWORC_IDLE_CPU_THRESHOLD must be a finite number"),
    ("CLAWORC_IDLE_AFTER", "30m", "CLAWORC_IDLE_AFTER must be a whole number"),
    ("CLAWORC_SCHEDULE_INTERVAL", "0", "CLAWORC_SCHEDULE_INTERVAL must be at least 5"),
])
def test_bad_settings_stop_start_up_naming_the_variable(name, raw, fragment):
    import os
    import subprocess
    import sys
    from pathlib import Path

    result = subprocess.run([sys.executable, "manage.py", "check"],
                            cwd=Path(__file__).resolve().parents[2],
                            env={**os.environ, name: raw}, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert fragment in result.stderr


def test_schedules_and_idle_stop_are_on_the_beat_schedule(settings):
    from claworc_site.celery import app

    entry = app.conf.beat_schedule["run hours and idle stop"]
    assert entry["task"] == "instances.tasks.apply_schedules"
    assert entry["schedule"] == float(settings.CLAWORC_SCHEDULE_INTERVAL) == 60.0
    assert entry["options"]["expires"] == entry["schedule"]


@pytest.mark.django_db
def test_the_beat_task_applies_schedules_then_idle_stop(settings):
    from instances import tasks
    from tests.fakes import eager_tasks

    settings.CLAWORC_IDLE_AFTER = 0
    _make("bot-sched-task", running=True)
    with eager_tasks():
        result = tasks.apply_schedules.delay().get()
    assert result == ("schedule: started 0, stopped 0, refused 0, new schedules 1; "
                      "idle stop: off (CLAWORC_IDLE_AFTER=0)")


@pytest.mark.django_db
def test_two_runs_at_once_apply_an_edge_once():
    from instances.services.leases import lease_acquire, lease_release

    _make("bot-sched-twice", running=False)
    schedules_apply(now=MON_0759)
    # Another beat (another worker) is in the middle of its run: this one stands aside...
    assert lease_acquire(name=schedules.LEASE, owner="other-worker")
    report = schedules_apply(now=MON_0759 + timedelta(minutes=2), owner="this-worker")
    assert report.started == [] and _by_schedule("bot-sched-twice") == []
    # ... and once it is done, the edge is applied exactly once.
    lease_release(name=schedules.LEASE, owner="other-worker")
    schedules_apply(now=MON_0759 + timedelta(minutes=2), owner="this-worker")
    schedules_apply(now=MON_0759 + timedelta(minutes=2), owner="other-worker")
    assert [a[:2] for a in _by_schedule("bot-sched-twice")] == [("start", "queued")]


@pytest.mark.django_db
def test_admission_control_refuses_a_scheduled_start_like_a_manual_one(orch):
    """The real budget (a 2 CPU / 8 GiB host holds two default instances), no stand-in."""
    from decimal import Decimal

    from orchestrators import registry
    from orchestrators.base import HostCapacity

    registry.store_capacity("docker", HostCapacity(
        totals={"requests.cpu": Decimal(2), "limits.memory": Decimal(8 * 2**30)},
        per_instance_max={"cpu": Decimal(2)}, host=True, source="docker info"))
    busy = [_make(f"bot-sched-busy{i}", running=True, schedule_days="") for i in range(2)]
    inst = _make("bot-sched-full", running=False)
    schedules_apply(now=MON_0759)
    for minutes in range(1, 10):
        report = schedules_apply(now=MON_0759 + timedelta(minutes=minutes))
    [(name, reason)] = report.refused
    assert name == "bot-sched-full" and "needs 0.5 CPU / 4 GiB" in reason
    manual = services.instance_start(instance_ids=[inst.pk], actor="alice")
    assert manual.skipped == [("bot-sched-full", reason)]  # the same words as a person gets
    assert _by_schedule("bot-sched-full") == [
        ("start", "error", "Scheduled start refused (window Mon-Fri 08:00-20:00 UTC opened at "
                           f"Mon 08:00): {reason}")]
    inst.refresh_from_db()
    assert inst.auto_reason == f"Scheduled start at Mon 08:00 refused: {reason}"
    # A bot is stopped: the next beat finds room and starts it, within its window.
    services.instance_stop(instance_ids=[busy[0].pk], actor="bob")
    Instance.objects.filter(pk=busy[0].pk).update(status="stopped")
    schedules_apply(now=MON_0759 + timedelta(minutes=11))
    inst.refresh_from_db()
    assert inst.desired_state == "running"
    assert [a[:2] for a in _by_schedule("bot-sched-full")] == [("start", "error"),
                                                              ("start", "queued")]
