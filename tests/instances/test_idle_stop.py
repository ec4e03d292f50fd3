"""Idle stop: the usage sampler (fed by a stubbed backend) keeps when each instance went idle,
and the beat stops those idle long enough, through the Stop intent, with the numbers."""

from datetime import UTC, datetime, timedelta

import pytest

from desktops.models import DesktopSession
from instances.models import Activity, Instance, InstanceUsage
from instances.services.idle import idle_stop, sample_max_age
from instances.usage import usage_sample
from orchestrators.base import Usage
from tests.fakes import FakeOrchestrator

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 6, 15, 9, 0, tzinfo=UTC)


class StubUsage(FakeOrchestrator):
    """Reports the CPU the test sets per name (as Kubernetes' metrics API: a rate)."""

    def __init__(self):
        super().__init__()
        self.cpu: dict[str, float | None] = {}

    def usage(self, names):
        return {n: Usage(name=n, cpu_cores=self.cpu.get(n), memory_bytes=50 * 2**20)
                for n in names if n in self.cpu}


@pytest.fixture(autouse=True)
def _idle_settings(settings):
    settings.CLAWORC_IDLE_AFTER = 1800
    settings.CLAWORC_IDLE_CPU_THRESHOLD = 0.05
    settings.CLAWORC_USAGE_INTERVAL = 30
    settings.CLAWORC_USAGE_MAX_CALLS = 100
    settings.CLAWORC_DESKTOP_ACCESS = "proxy"


@pytest.fixture
def stub():
    return StubUsage()


def _make(name, **fields):
    fields = {"observed_generation": 1, "owed_since": None, "status": "running",
              "desired_state": "running", **fields}
    return Instance.objects.bulk_create([Instance(display_name=name, name=name, **fields)])[0]


def _sample_every_30s(stub, start, minutes):
    now = start
    while now <= start + timedelta(minutes=minutes):
        usage_sample(orch=stub, now=now)
        now += timedelta(seconds=30)
    return now - timedelta(seconds=30)


def _idle_activities(name):
    return list(Activity.objects.filter(instance_name=name, actor="idle")
                .values_list("action", "result", "message"))


def test_an_instance_idle_for_the_set_time_is_stopped_with_the_numbers(stub):
    inst = _make("bot-idle-a")
    stub.cpu["bot-idle-a"] = 0.01
    last = _sample_every_30s(stub, T0, 29)
    assert idle_stop(now=last).stopped == []  # 29 minutes of low CPU: not yet
    last = _sample_every_30s(stub, last + timedelta(seconds=30), 1)
    assert idle_stop(now=last).stopped == ["bot-idle-a"]
    assert _idle_activities("bot-idle-a") == [
        ("stop", "queued",
         "Stopped when idle: idle for 30 min: CPU 0.01 cores < 0.05, no desktop session.")]
    inst.refresh_from_db()
    assert inst.desired_state == "stopped" and inst.status == "stopping"
    assert inst.auto_reason.endswith(
        "idle for 30 min: CPU 0.01 cores < 0.05, no desktop session.")
    # Once stopped the sampler clears its idle time: a restart counts from zero.
    Instance.objects.filter(pk=inst.pk).update(status="stopped")
    usage_sample(orch=stub, now=last + timedelta(seconds=30))
    assert InstanceUsage.objects.get(pk=inst.pk).idle_since is None


def test_a_busy_sample_starts_the_count_again(stub):
    _make("bot-idle-b")
    stub.cpu["bot-idle-b"] = 0.01
    last = _sample_every_30s(stub, T0, 20)
    stub.cpu["bot-idle-b"] = 0.8  # one busy half-minute
    usage_sample(orch=stub, now=last + timedelta(seconds=30))
    stub.cpu["bot-idle-b"] = 0.01
    last = _sample_every_30s(stub, last + timedelta(seconds=60), 20)
    assert idle_stop(now=last).stopped == []
    assert _idle_activities("bot-idle-b") == []


def test_no_number_or_a_stale_sample_is_never_idle(stub):
    _make("bot-idle-c")
    _make("bot-idle-d")
    stub.cpu.update({"bot-idle-c": None, "bot-idle-d": 0.0})  # c: the backend cannot say
    last = _sample_every_30s(stub, T0, 40)
    # d was idle, but the sampler has not run since: its last sample goes stale.
    later = last + sample_max_age(running=2) + timedelta(seconds=1)
    assert idle_stop(now=later).stopped == []
    assert idle_stop(now=last).stopped == ["bot-idle-d"]


def test_desktop_sessions_and_the_opt_out_keep_it_running(stub):
    _make("bot-idle-open")
    recent = _make("bot-idle-recent")
    _make("bot-idle-optout", idle_stop=False)
    for name in ("bot-idle-open", "bot-idle-recent", "bot-idle-optout"):
        stub.cpu[name] = 0.0
    last = _sample_every_30s(stub, T0, 45)
    open_one = Instance.objects.get(name="bot-idle-open")
    DesktopSession.objects.create(instance=open_one, instance_name=open_one.name,
                                  username="alice", desktop="chrome",
                                  last_activity_at=T0, last_seen_at=last - timedelta(seconds=5))
    DesktopSession.objects.create(instance=recent, instance_name=recent.name, username="bob",
                                  desktop="terminal", last_activity_at=last - timedelta(minutes=10),
                                  last_seen_at=last - timedelta(minutes=10),
                                  ended_at=last - timedelta(minutes=10))
    assert idle_stop(now=last).stopped == []
    # Bob's session ended ten minutes ago: idle for 30 minutes after it, not before.
    last = _sample_every_30s(stub, last + timedelta(seconds=30), 20)
    DesktopSession.objects.filter(ended_at=None).update(last_seen_at=last)  # still open
    assert idle_stop(now=last).stopped == ["bot-idle-recent"]
    assert "idle for 30 min" in _idle_activities("bot-idle-recent")[0][2]


def test_ports_mode_judges_cpu_alone_and_says_so(stub, settings):
    settings.CLAWORC_DESKTOP_ACCESS = "ports"
    _make("bot-idle-ports")
    stub.cpu["bot-idle-ports"] = 0.02
    last = _sample_every_30s(stub, T0, 61)
    assert idle_stop(now=last).stopped == ["bot-idle-ports"]
    assert _idle_activities("bot-idle-ports")[0][2] == (
        "Stopped when idle: idle for 61 min: CPU 0.02 cores < 0.05, desktop sessions not "
        "visible (CLAWORC_DESKTOP_ACCESS=ports).")


def test_the_idle_time_is_said_in_seconds_minutes_or_hours():
    from instances.services.idle import idle_message

    said = [idle_message(idle_seconds=s, cpu=0.004, threshold=0.05, sessions_seen=True)
            for s in (42, 1830, 3 * 3600 + 5 * 60)]
    assert said == ["idle for 42 s: CPU 0.00 cores < 0.05, no desktop session",
                    "idle for 30 min: CPU 0.00 cores < 0.05, no desktop session",
                    "idle for 3 h 05 min: CPU 0.00 cores < 0.05, no desktop session"]


def test_idle_after_zero_turns_it_off(stub, settings):
    settings.CLAWORC_IDLE_AFTER = 0
    _make("bot-idle-off")
    stub.cpu["bot-idle-off"] = 0.0
    last = _sample_every_30s(stub, T0, 40)
    report = idle_stop(now=last)
    assert not report.enabled and report.stopped == []


def test_one_run_costs_a_constant_number_of_queries(stub, django_assert_max_num_queries):
    for i in range(50):
        _make(f"bot-idle-fleet-{i}", idle_stop=bool(i % 5))
        stub.cpu[f"bot-idle-fleet-{i}"] = 0.01 if i % 2 else 0.5
    last = _sample_every_30s(stub, T0, 31)
    # A count, the candidates, the Stop intent (savepoint, lock, update, Activity, release),
    # the reasons: the same for 5 instances or 5,000.
    with django_assert_max_num_queries(10):
        report = idle_stop(now=last)
    assert len(report.stopped) == 20  # odd (idle) and not a multiple of 5 (opted out)
    with django_assert_max_num_queries(2):
        assert idle_stop(now=last).stopped == []
