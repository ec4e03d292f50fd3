"""Orphan removal from the admin, and the retention of Activity and orphan records."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from instances import housekeeping
from instances.models import Activity, Instance, OrphanWorkload
from orchestrators.registry import override
from tests.fakes import eager_tasks

pytestmark = pytest.mark.django_db
CHANGELIST = reverse("admin:instances_orphanworkload_changelist")


@pytest.fixture
def admin_client(client):
    client.force_login(User.objects.create_superuser("hk-root", password="pw-hk-long-enough"))
    return client


def _orphan(name, **fields):
    return OrphanWorkload.objects.create(name=name, backend="docker", status="stopped",
                                         last_seen=fields.pop("last_seen", timezone.now()),
                                         **fields)


def test_removing_an_orphan_removes_its_workload_after_a_confirmation(
        admin_client, orch, django_capture_on_commit_callbacks):
    orphan = _orphan("bot-left-over")
    orch.volumes.update({f"claworc-bot-left-over-{s}" for s in ("clawdbot", "chrome")})
    # The row alone cannot be deleted: it would come back at the next check.
    assert admin_client.get(reverse("admin:instances_orphanworkload_delete",
                                    args=[orphan.pk])).status_code == 403
    choices = [c[0] for c in admin_client.get(CHANGELIST).context["action_form"]
               .fields["action"].choices]
    assert choices == ["", "remove_workloads"]
    data = {"action": "remove_workloads", "_selected_action": [orphan.pk]}
    question = admin_client.post(CHANGELIST, data).content.decode()
    assert "bot-left-over" in question and "the data in the volumes is lost" in question
    assert OrphanWorkload.objects.exists() and not Activity.objects.exists()
    with django_capture_on_commit_callbacks() as callbacks:
        page = admin_client.post(CHANGELIST, {**data, "confirm": "yes"}, follow=True)
    assert "Queued removal of 1 instance: bot-left-over." in page.content.decode()
    assert orch.calls == [] and len(callbacks) == 1
    with override(orch), eager_tasks():
        callbacks[0]()
    assert orch.ops("delete") == ["bot-left-over"]
    assert not OrphanWorkload.objects.exists()  # gone because the workload is gone


def test_an_orphan_whose_name_is_an_instance_again_is_skipped(admin_client, orch,
                                                              django_capture_on_commit_callbacks):
    orphan = _orphan("bot-back")
    Instance.objects.create(display_name="Back", name="bot-back")
    with django_capture_on_commit_callbacks() as callbacks:
        page = admin_client.post(CHANGELIST, {"action": "remove_workloads", "confirm": "yes",
                                              "_selected_action": [orphan.pk]}, follow=True)
    assert "Skipped bot-back (an instance has this name now)." in page.content.decode()
    assert callbacks == []  # nothing queued


def test_records_older_than_the_window_are_expired(settings, admin_client):
    settings.CLAWORC_RETENTION_DAYS = 90
    now = timezone.now()
    old = Activity.objects.create(instance_name="bot-a", action="start")
    new = Activity.objects.create(instance_name="bot-a", action="stop")
    Activity.objects.filter(pk=old.pk).update(created_at=now - timedelta(days=91))
    Activity.objects.filter(pk=new.pk).update(created_at=now - timedelta(days=89))
    _orphan("bot-gone-long", last_seen=now - timedelta(days=100))
    _orphan("bot-seen", last_seen=now)
    purged = housekeeping.records_expire(now=now)
    assert (purged.activities, purged.orphans) == (1, 1)
    assert list(Activity.objects.values_list("action", flat=True)) == ["stop"]
    assert list(OrphanWorkload.objects.values_list("name", flat=True)) == ["bot-seen"]
    # The admin says how long records are kept.
    html = admin_client.get(reverse("admin:instances_activity_changelist")).content.decode()
    assert "Records older than 90 days are deleted daily" in html


def test_the_housekeeping_task_is_on_beat():
    from claworc_site.celery import EXPIRE_EVERY, app

    entry = app.conf.beat_schedule["expire old records"]
    assert entry["task"] == "instances.tasks.expire_records"
    assert entry["schedule"] == EXPIRE_EVERY == 86400
