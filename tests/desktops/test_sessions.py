"""The desktop session record: who, which instance, from where, when, how long; the per-user cap;
and the checks that close a session when its permission or its instance goes away."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from desktops import services
from desktops.models import DesktopSession
from desktops.selectors import last_desktop_activity, open_sessions, with_last_desktop_activity
from desktops.services import DesktopRefused
from instances.models import Activity, Instance

from .conftest import make_instance

pytestmark = pytest.mark.django_db


def open_one(user, name="bot-s", desktop="chrome", address="10.1.2.3"):
    return services.desktop_session_open(user=user, instance_name=name, desktop=desktop,
                                         client_address=address, user_agent="test-agent")


def test_opening_records_who_which_desktop_from_where_and_logs_it(desk_user):
    instance = make_instance("bot-s")
    session = open_one(desk_user)
    assert (session.instance, session.username, session.desktop, session.client_address) == (
        instance, "desk", "chrome", "10.1.2.3")
    assert session.ended_at is None
    activity = Activity.objects.get(instance_name="bot-s")
    assert (activity.action, activity.actor, activity.message) == (
        "desktop opened", "desk", "Chrome from 10.1.2.3")


def test_closing_records_how_long_and_why_in_the_activity_log(desk_user):
    make_instance("bot-s")
    session = open_one(desk_user, desktop="terminal")
    DesktopSession.objects.filter(pk=session.pk).update(
        started_at=timezone.now() - timedelta(minutes=3, seconds=5))
    active = timezone.now()
    services.desktop_session_close(session_id=session.pk, reason="closed by the browser",
                                   bytes_to_desktop=10, bytes_from_desktop=2000, active_at=active)
    services.desktop_session_close(session_id=session.pk, reason="again")  # once only
    session.refresh_from_db()
    assert session.ended_at is not None and session.close_reason == "closed by the browser"
    assert (session.bytes_to_desktop, session.bytes_from_desktop) == (10, 2000)
    assert session.duration >= timedelta(minutes=3)
    closed = Activity.objects.filter(action="desktop closed")
    assert [a.message for a in closed] == [
        "Terminal from 10.1.2.3 after 3 min 5 s: closed by the browser"]
    assert last_desktop_activity(session.instance) == active


def test_without_the_permission_nothing_opens_and_nothing_is_recorded(plain_user):
    make_instance("bot-s")
    with pytest.raises(DesktopRefused, match="permission") as refused:
        open_one(plain_user)
    assert refused.value.status == 403
    assert not DesktopSession.objects.exists()
    assert not Activity.objects.exists()


def test_superusers_have_the_permission(django_user_model):
    make_instance("bot-s")
    root = django_user_model.objects.create_superuser("root", password="pw-for-tests-only")
    assert open_one(root).username == "root"


@pytest.mark.parametrize(("fields", "status", "message"), [
    ({"desired_state": "stopped", "status": "stopped"}, 409, "is stopped; start it first"),
    ({"status": "deleting"}, 409, "is deleting"),
])
def test_a_stopped_or_deleting_instance_is_refused(desk_user, fields, status, message):
    make_instance("bot-s")
    Instance.objects.filter(name="bot-s").update(**fields)
    with pytest.raises(DesktopRefused, match=message) as refused:
        open_one(desk_user)
    assert refused.value.status == status


def test_a_missing_instance_is_refused_with_404(desk_user):
    with pytest.raises(DesktopRefused, match="No instance bot-nope") as refused:
        open_one(desk_user, name="bot-nope")
    assert refused.value.status == 404


def test_the_per_user_cap_refuses_one_more_and_frees_a_place_when_one_closes(
        settings, desk_user, django_user_model):
    settings.CLAWORC_DESKTOP_MAX_SESSIONS_PER_USER = 2
    make_instance("bot-s")
    first = open_one(desk_user)
    open_one(desk_user, desktop="terminal")
    with pytest.raises(DesktopRefused, match=r"already have 2 desktop sessions open.*"
                                              r"CLAWORC_DESKTOP_MAX_SESSIONS_PER_USER=2") as full:
        open_one(desk_user)
    assert full.value.status == 429
    assert DesktopSession.objects.count() == 2
    # The cap is per user: someone else still gets in.
    other = django_user_model.objects.create_superuser("other", password="pw-for-tests-only")
    open_one(other)
    services.desktop_session_close(session_id=first.pk, reason="closed by the browser")
    assert open_one(desk_user).pk


def test_sessions_of_a_dead_process_stop_counting_once_stale(settings, desk_user):
    settings.CLAWORC_DESKTOP_MAX_SESSIONS_PER_USER = 1
    settings.CLAWORC_DESKTOP_CHECK_INTERVAL = 10
    make_instance("bot-s")
    session = open_one(desk_user)
    assert open_sessions(user=desk_user).count() == 1
    # Its web process was killed: nobody vouches for it any more.
    DesktopSession.objects.filter(pk=session.pk).update(
        last_seen_at=timezone.now() - timedelta(seconds=31))
    assert open_sessions(user=desk_user).count() == 0
    assert open_one(desk_user).pk != session.pk


def test_heartbeat_keeps_an_allowed_session_and_notes_its_activity(desk_user):
    make_instance("bot-s")
    session = open_one(desk_user)
    later = timezone.now() + timedelta(seconds=5)
    assert services.desktop_session_heartbeat(session_id=session.pk, active_at=later,
                                              bytes_to_desktop=5, bytes_from_desktop=7) is None
    session.refresh_from_db()
    assert session.last_activity_at == later
    assert (session.bytes_to_desktop, session.bytes_from_desktop) == (5, 7)


def test_heartbeat_closes_when_the_permission_is_removed(desk_user):
    make_instance("bot-s")
    session = open_one(desk_user)
    desk_user.user_permissions.remove(Permission.objects.get(codename="use_desktop"))
    closing = services.desktop_session_heartbeat(session_id=session.pk)
    assert closing == services.Closing("your permission to use desktops was removed",
                                       services.CLOSE_POLICY)


def test_heartbeat_closes_when_the_user_is_deactivated(desk_user):
    make_instance("bot-s")
    session = open_one(desk_user)
    type(desk_user).objects.filter(pk=desk_user.pk).update(is_active=False)
    assert services.desktop_session_heartbeat(session_id=session.pk).code == services.CLOSE_POLICY


def test_heartbeat_closes_when_the_instance_is_stopped_or_deleted(desk_user):
    instance = make_instance("bot-s")
    session = open_one(desk_user)
    Instance.objects.filter(pk=instance.pk).update(desired_state="stopped")
    closing = services.desktop_session_heartbeat(session_id=session.pk)
    assert closing.code == services.CLOSE_GOING_AWAY
    assert "bot-s is stopped" in closing.reason
    Instance.objects.filter(pk=instance.pk).purge()  # the row gone (after its teardown)
    assert "No instance bot-s" in services.desktop_session_heartbeat(session_id=session.pk).reason


def test_last_desktop_activity_annotates_a_list_in_one_query(
        desk_user, django_assert_max_num_queries):
    for index in range(5):
        make_instance(f"bot-l{index}", port=30100 + 2 * index)
    session = open_one(desk_user, name="bot-l3")
    with django_assert_max_num_queries(1):
        rows = {i.name: i.last_desktop_activity
                for i in with_last_desktop_activity(Instance.objects.all())}
    assert rows["bot-l3"] == session.last_activity_at
    assert rows["bot-l0"] is None
