"""Celery task wiring: options that make them crash-safe, retries, and the beat schedule."""

import pytest

from claworc_site.celery import app
from instances import services, tasks
from instances.models import Instance
from orchestrators.base import TransientError
from orchestrators.registry import override
from tests.fakes import FakeOrchestrator, eager_tasks

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _ports(settings):
    settings.CLAWORC_PORT_START, settings.CLAWORC_PORT_END = 32000, 32399


@pytest.mark.parametrize("task", [tasks.reconcile_instance, tasks.teardown_instance,
                                  tasks.observe_instance])
def test_per_instance_tasks_are_late_acked_retried_and_time_limited(task, settings):
    assert task.acks_late and task.reject_on_worker_lost
    assert tasks.BACKEND_RETRIES >= 5 and tasks.LEASE_WAIT_RETRIES >= tasks.BACKEND_RETRIES
    assert task.time_limit == settings.CLAWORC_TASK_TIME_LIMIT
    assert 0 < task.soft_time_limit < task.time_limit
    # A lease lasts longer than any task may run: a live task never loses it.
    assert services.lease_ttl().total_seconds() > task.time_limit


def test_transient_errors_are_retried_until_they_pass(django_capture_on_commit_callbacks):
    fake = FakeOrchestrator()
    fake.fail_next["ensure"] = TransientError("Docker not available: connection refused")
    with override(fake), eager_tasks(propagate=False), \
            django_capture_on_commit_callbacks(execute=True):
        Instance.objects.create(display_name="T4 Retry")
    assert fake.ops("ensure") == ["bot-t4-retry", "bot-t4-retry"]
    assert Instance.objects.get().status == "running"


def test_a_task_waiting_for_a_lease_retries_instead_of_failing(monkeypatch):
    inst = Instance.objects.bulk_create([Instance(display_name="x", name="bot-t4-busy")])[0]
    services.lease_acquire(name="bot-t4-busy", owner="another-worker")
    retried = []

    def fake_retry(*, exc, countdown, max_retries, kwargs):
        retried.append((type(exc), countdown, max_retries, kwargs))
        raise RuntimeError("retry scheduled")

    monkeypatch.setattr(tasks.reconcile_instance, "retry", fake_retry)
    with override(FakeOrchestrator()), pytest.raises(RuntimeError, match="retry scheduled"):
        tasks.reconcile_instance.run(inst.pk)
    ((kind, countdown, max_retries, kwargs),) = retried
    assert kind is services.LeaseBusy
    # Counted apart from the backend retries (the task decides when to stop, not Celery).
    assert 0 < countdown <= 30 and max_retries is None and kwargs == {"lease_waits": 1}


def test_lease_waits_do_not_use_up_the_retries_of_backend_errors(monkeypatch):
    """Eight waits for a lease, then a transient Docker error: still retried, not final."""
    inst = Instance.objects.bulk_create([Instance(display_name="x", name="bot-t4-waits")])[0]
    fake = FakeOrchestrator()
    fake.fail_next["ensure"] = TransientError("Docker not available: connection refused")
    retried = []

    def fake_retry(*, exc, countdown, max_retries, **kwargs):
        retried.append(type(exc))
        raise RuntimeError("retry scheduled")

    monkeypatch.setattr(tasks.reconcile_instance, "retry", fake_retry)
    tasks.reconcile_instance.push_request(retries=8, kwargs={"lease_waits": 8}, id="t4-waits")
    try:
        with override(fake), pytest.raises(RuntimeError, match="retry scheduled"):
            tasks.reconcile_instance.run(inst.pk, lease_waits=8)
    finally:
        tasks.reconcile_instance.pop_request()
    assert retried == [TransientError]
    inst.refresh_from_db()
    assert inst.status != "error"


def test_reconcile_all_skips_quietly_when_the_backend_is_unreachable():
    fake = FakeOrchestrator()
    fake.fail_next["status_all"] = TransientError("Docker not available: no socket")
    with override(fake), eager_tasks():
        result = tasks.reconcile_all.delay().get()
    assert result == "skipped: Docker not available: no socket"


def test_reconcile_all_is_on_the_beat_schedule(settings):
    entry = app.conf.beat_schedule["reconcile all instances"]
    assert entry["task"] == "instances.tasks.reconcile_all"
    assert entry["schedule"] == float(settings.CLAWORC_RECONCILE_INTERVAL)
    assert entry["options"]["expires"] == entry["schedule"]


def test_usage_sampling_is_on_the_beat_schedule(settings):
    entry = app.conf.beat_schedule["sample resource usage"]
    assert entry["task"] == "instances.tasks.sample_usage"
    assert entry["schedule"] == float(settings.CLAWORC_USAGE_INTERVAL)
    assert entry["options"]["expires"] == entry["schedule"]


def test_usage_sampling_skips_quietly_when_the_backend_is_unreachable():
    class Down(FakeOrchestrator):
        def volume_sizes(self):
            raise TransientError("Docker not available: no socket")

    with override(Down()), eager_tasks():
        assert tasks.sample_usage.delay().get() == "skipped: Docker not available: no socket"
