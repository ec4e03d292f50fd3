"""One-click controls, the live status endpoint and the log views (on the in-memory backend)."""

import time

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from instances.models import Activity, Instance, InstanceUsage, PortAllocation
from orchestrators.base import TransientError
from orchestrators.registry import override
from tests.fakes import FakeOrchestrator, FakeWorkload

pytestmark = pytest.mark.django_db

PASSWORD = "pw-for-tests-only"


def make_user(name, *perms, staff=True):
    user = get_user_model().objects.create_user(name, password=PASSWORD, is_staff=staff)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


@pytest.fixture
def operator(client):
    client.force_login(make_user("operator", "view_instance", "change_instance"))
    return client


@pytest.fixture
def viewer(client):
    client.force_login(make_user("viewer", "view_instance"))
    return client


def running(name="bot-c-one", port=30100, **fields):
    fields.setdefault("status", "running")
    inst = Instance.objects.bulk_create([Instance(name=name, display_name=name, **fields)])[0]
    PortAllocation.objects.create(instance=inst, port_chrome=port, port_terminal=port + 1)
    return inst


def action_url(name):
    return reverse("instances:action", args=[name])


# --- the buttons ----------------------------------------------------------------------------

def test_stop_from_the_status_page_records_the_intent_and_comes_back(
    operator, django_capture_on_commit_callbacks
):
    inst = running()
    detail = reverse("instances:detail", args=[inst.name])
    with django_capture_on_commit_callbacks() as queued:
        response = operator.post(action_url(inst.name), {"action": "stop", "next": detail})
    assert response.status_code == 302 and response["Location"] == detail
    inst.refresh_from_db()
    assert inst.desired_state == "stopped"
    assert len(queued) == 1  # the reconcile task, sent once the change is committed
    activity = Activity.objects.get(instance=inst)
    assert (activity.action, activity.actor, activity.result) == ("stop", "operator", "queued")
    page = operator.get(detail).content.decode()
    assert "Queued stop of 1 instance: bot-c-one." in page


@pytest.mark.parametrize("action, desired, requested", [
    ("start", "running", ("starting", 0, 0)), ("restart", "running", ("restarting", 1, 0)),
    ("recreate", "running", ("recreating", 0, 1)),
])
def test_each_button_calls_its_service(operator, action, desired, requested):
    inst = running(desired_state="stopped", status="stopped")
    operator.post(action_url(inst.name), {"action": action})
    inst.refresh_from_db()
    # The transitional status shows at once; one-shot requests are counted.
    assert (inst.desired_state, (inst.status, inst.restart_requested,
                                 inst.recreate_requested)) == (desired, requested)


def test_a_user_without_the_change_permission_sees_no_buttons_and_may_not_post(viewer):
    inst = running()
    page = viewer.get(reverse("instances:detail", args=[inst.name])).content.decode()
    assert 'name="action"' not in page
    listing = viewer.get(reverse("instances:list")).content.decode()
    assert 'name="action"' not in listing
    assert viewer.post(action_url(inst.name), {"action": "stop"}).status_code == 403
    inst.refresh_from_db()
    assert inst.desired_state == "running"


def test_buttons_shown_match_the_state(operator):
    inst = running()
    page = operator.get(reverse("instances:detail", args=[inst.name])).content.decode()
    for action, shown in (("stop", True), ("restart", True), ("recreate", True),
                          ("start", False)):
        tag = page.split(f'value="{action}"', 1)[1].split(">", 1)[0]
        assert ("hidden" not in tag) is shown, (action, tag)


def test_buttons_need_a_post_with_a_csrf_token():
    inst = running()
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(make_user("operator", "change_instance"))
    assert strict.get(action_url(inst.name)).status_code == 405
    assert strict.post(action_url(inst.name), {"action": "stop"}).status_code == 403
    inst.refresh_from_db()
    assert inst.desired_state == "running"


def test_anonymous_users_are_sent_to_log_in(client):
    inst = running()
    response = client.post(action_url(inst.name), {"action": "stop"})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_an_unknown_action_or_instance_is_404(operator):
    inst = running()
    assert operator.post(action_url(inst.name), {"action": "explode"}).status_code == 404
    assert operator.post(action_url("bot-nope"), {"action": "stop"}).status_code == 404


def test_next_never_leads_off_site(operator):
    inst = running()
    response = operator.post(action_url(inst.name),
                             {"action": "stop", "next": "https://evil.example/"})
    assert response["Location"] == reverse("instances:detail", args=[inst.name])


def test_the_admin_change_page_has_the_buttons_for_those_who_may_change(client):
    inst = running()
    url = reverse("admin:instances_instance_change", args=[inst.pk])
    client.force_login(make_user("viewer", "view_instance"))
    assert 'name="action"' not in client.get(url).content.decode()
    client.force_login(get_user_model().objects.create_superuser("boss", password=PASSWORD))
    html = client.get(url).content.decode()
    assert f'action="{action_url(inst.name)}"' in html
    assert 'value="stop"' in html and "Open Chrome" in html
    assert "instances/live.js" in html


# --- live status ----------------------------------------------------------------------------

def live(client, *names):
    response = client.get(reverse("instances:live"), {"names": ",".join(names)})
    assert response.status_code == 200
    return response.json()


def test_live_status_says_what_changed_and_which_buttons_apply(operator):
    inst = running()
    data = live(operator, inst.name, "bot-unknown")
    assert list(data["instances"]) == [inst.name]
    row = data["instances"][inst.name]
    assert row["status"] == "running" and row["actions"] == ["stop", "restart", "recreate"]
    assert "http://127.0.0.1:30100/vnc.html?autoconnect=true" in [v["url"] for v in row["vnc"]]
    Instance.objects.filter(pk=inst.pk).update(
        status="stopped", desired_state="stopped", status_message="Stopped (exit code 143).")
    row = live(operator, inst.name)["instances"][inst.name]
    assert row["status_display"] == "Stopped" and row["message"] == "Stopped (exit code 143)."
    assert row["vnc"] == [] and row["actions"] == ["start", "recreate"]


def test_live_status_offers_no_buttons_to_a_viewer(viewer):
    inst = running()
    assert live(viewer, inst.name)["instances"][inst.name]["actions"] == []


def test_live_status_costs_one_query_whatever_the_number_of_instances(
    operator, django_assert_max_num_queries
):
    names = [f"bot-c-{i:03d}" for i in range(100)]
    for i, name in enumerate(names):
        running(name, port=31000 + 2 * i)
    InstanceUsage.objects.bulk_create(InstanceUsage(instance=i, cpu_cores=0.5)
                                      for i in Instance.objects.all())
    # session, user, the user's permissions (2), the instances with ports and usage
    with django_assert_max_num_queries(5):
        data = live(operator, *names)
    assert len(data["instances"]) == 100
    assert data["instances"]["bot-c-042"]["cpu"] == "50.0%"
    assert data["interval"] >= 1


def test_pvc_sizes_are_shown_live_and_per_volume(operator):
    """What the Kubernetes sampler stores (requested, capacity, used or why not) reads as a
    person would want it, on the live pages and in the instance page's volume table."""
    inst = running()
    gib = 2**30
    volumes = {
        f"{inst.name}-clawdbot": {"requested": 5 * gib, "capacity": 5 * gib, "used": gib,
                                  "note": ""},
        f"{inst.name}-homebrew": {"requested": 10 * gib, "capacity": 12 * gib, "used": None,
                                  "note": "used: not available (no running pod mounts it)"},
    }
    usage = InstanceUsage.objects.create(instance=inst, volumes=volumes, volume_bytes=None)
    assert live(operator, inst.name)["instances"][inst.name]["volumes"] == (
        "17.0 GiB, used: not available")
    volumes[f"{inst.name}-homebrew"] |= {"used": 3 * gib, "note": ""}
    usage.volumes, usage.volume_bytes = volumes, 4 * gib
    usage.save()
    assert live(operator, inst.name)["instances"][inst.name]["volumes"] == (
        "4.0 GiB used of 17.0 GiB")

    class Cluster(FakeOrchestrator):
        backend_name = "kubernetes"

    usage.volumes[f"{inst.name}-homebrew"] |= {"used": None, "note": "used: not available "
                                                "(the account may not read the kubelet's stats)"}
    usage.save()
    with override(Cluster()):
        page = operator.get(reverse("instances:detail", args=[inst.name])).content.decode()
    assert "capacity 5.0 GiB · 1.0 GiB used" in page
    assert ("capacity 12.0 GiB (10.0 GiB requested) · used: not available (the account may "
            "not read the kubelet&#x27;s stats)") in page


def test_live_status_is_for_staff_only(client):
    assert client.get(reverse("instances:live")).status_code == 302


# --- logs -----------------------------------------------------------------------------------

@pytest.fixture
def backend():
    fake = FakeOrchestrator()
    with override(fake):
        yield fake


def test_the_log_downloads_as_a_text_file(operator, backend):
    inst = running()
    backend.workloads[inst.name] = FakeWorkload(
        spec=None, logs="\n".join(f"line {i}" for i in range(30)))
    response = operator.get(reverse("instances:log-download", args=[inst.name]), {"lines": 5})
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="{inst.name}-log.txt"'
    assert response.content.decode().splitlines() == [f"line {i}" for i in range(25, 30)]
    assert operator.get(reverse("instances:log-download", args=[inst.name]),
                        {"lines": "many"}).status_code == 400


def test_a_log_download_says_why_when_the_backend_is_down(operator, backend):
    inst = running()
    backend.fail_next["logs"] = TransientError("Docker not available: connection refused")
    response = operator.get(reverse("instances:log-download", args=[inst.name]))
    assert response.status_code == 503
    assert "Docker not available" in response.content.decode()


def test_the_followed_log_streams_text(operator, backend):
    inst = running()
    backend.workloads[inst.name] = FakeWorkload(spec=None, logs="hello\nworld")
    response = operator.get(reverse("instances:log-follow", args=[inst.name]))
    assert response.status_code == 200 and response.streaming
    assert b"".join(response.streaming_content).decode() == "hello\nworld"
    assert response["X-Accel-Buffering"] == "no"


def test_the_followed_log_streams_chunk_by_chunk_under_asgi(backend):
    """Under ASGI (the dashboard runs on uvicorn) each line goes out as it comes, not at the
    end of the time limit."""
    import asyncio

    from instances import controls

    def slow():
        yield "first\n"
        time.sleep(0.3)
        yield "second\n"

    async def read():
        got = []
        async for chunk in controls._async_chunks(slow()):
            got.append((chunk, time.monotonic()))
        return got

    got = asyncio.run(read())
    assert [c for c, _ in got] == ["", "first\n", "second\n"]
    assert got[2][1] - got[1][1] >= 0.25


def test_logs_are_for_staff_only(client):
    inst = running()
    for name in ("instances:log-follow", "instances:log-download"):
        assert client.get(reverse(name, args=[inst.name])).status_code == 302
