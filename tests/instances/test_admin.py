"""The Instance admin: actions through services, permissions, what the pages show, query counts.

Commit callbacks never run inside these (non-transactional) tests, so anything that reached the
orchestrator would have done so inside the request: the fake records every call.
"""

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from instances.models import Activity, Instance, PortAllocation
from orchestrators.registry import override
from tests.fakes import eager_tasks

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:instances_instance_changelist")


@pytest.fixture(autouse=True)
def _ports(settings):
    settings.CLAWORC_PORT_START, settings.CLAWORC_PORT_END = 32000, 32399


def _make(n, **fields):
    objs = Instance.objects.bulk_create(
        Instance(display_name=f"t4 {i}", name=f"bot-t4-{i:04d}", **fields) for i in range(n))
    PortAllocation.objects.bulk_create(
        PortAllocation(instance=o, port_chrome=32000 + 2 * i, port_terminal=32001 + 2 * i)
        for i, o in enumerate(objs))
    return objs


def _act(client, action, objs, follow=True, **extra):
    return client.post(CHANGELIST, {"action": action, "_selected_action": [o.pk for o in objs],
                                    **extra}, follow=follow)


@pytest.mark.parametrize(("action", "desired", "requested", "said"), [
    ("start_instances", "running", ("starting", 0, 0), "Queued start of 2 instances"),
    ("stop_instances", "stopped", ("stopping", 0, 0), "Queued stop of 2 instances"),
    ("restart_instances", "running", ("restarting", 1, 0), "Queued restart of 2 instances"),
    ("recreate_instances", "running", ("recreating", 0, 1), "Queued recreate of 2 instances"),
    ("refresh_instances", "running", ("stopped", 0, 0), "Queued status refresh of 2 instances"),
])
def test_actions_change_desired_state_record_and_say_what_was_queued(
        client, staff, orch, action, desired, requested, said,
        django_capture_on_commit_callbacks):
    objs = _make(2, status="stopped", desired_state="stopped" if action == "stop_instances"
                 else "running")
    if action == "stop_instances":
        Instance.objects.update(status="running")
    with django_capture_on_commit_callbacks() as callbacks:
        page = _act(client, action, objs)
    assert f"{said}: bot-t4-0000, bot-t4-0001." in page.content.decode()
    assert len(callbacks) == 2  # one task per instance, enqueued after commit
    assert orch.calls == []  # no orchestrator call inside the request
    for inst in Instance.objects.all():
        # The transitional status shows at once; one-shot requests are counted.
        assert (inst.desired_state, (inst.status, inst.restart_requested,
                                     inst.recreate_requested)) == (desired, requested)
    verb = action.removesuffix("_instances")
    assert sorted(Activity.objects.values_list("instance_name", "action", "actor", "result")) == [
        (o.name, verb, "root-t4", "queued") for o in objs]


def test_start_of_a_running_instance_is_skipped_with_the_reason(client, staff, orch):
    objs = _make(1, status="running")
    page = _act(client, "start_instances", objs)
    assert "Skipped bot-t4-0000 (already running)." in page.content.decode()
    assert not Activity.objects.exists()


@pytest.mark.parametrize(("action", "purge"), [
    ("delete_keeping_volumes", False), ("delete_with_volumes", True)])
def test_delete_actions_mark_rows_deleting_and_remove_them_after_teardown(
        client, staff, orch, action, purge, django_capture_on_commit_callbacks):
    objs = _make(2)
    with django_capture_on_commit_callbacks() as callbacks:
        asked = _act(client, action, objs)
    # First a confirmation page that says what happens to the volumes; nothing is deleted yet.
    question = asked.content.decode()
    assert "bot-t4-0000" in question and "bot-t4-0001" in question
    assert ("The data in the volumes is lost" in question) is purge
    assert ("are <strong>kept</strong>" in question) is not purge
    assert Instance.objects.count() == 2 and not callbacks and orch.calls == []
    with django_capture_on_commit_callbacks() as callbacks:
        page = _act(client, action, objs, confirm="yes")
    text = page.content.decode()
    assert "Queued deletion" in text and "bot-t4-0000, bot-t4-0001" in text
    # Two steps: the rows stay, `deleting`, with their names and ports, until the teardown.
    assert list(Instance.objects.values_list("status", "keep_volumes")) == [
        ("deleting", not purge)] * 2
    assert PortAllocation.objects.count() == 2
    assert orch.calls == [] and len(callbacks) == 2
    messages = Activity.objects.filter(action="delete").values_list("message", flat=True)
    assert all(("the volumes are kept" in m) is not purge for m in messages)
    with override(orch), eager_tasks():
        for callback in callbacks:
            callback()
    assert orch.ops("delete") == ["bot-t4-0000", "bot-t4-0001"]
    assert not Instance.objects.exists() and not PortAllocation.objects.exists()


def test_builtin_bulk_delete_is_replaced(client, staff):
    page = client.get(CHANGELIST)
    choices = page.context["action_form"].fields["action"].choices
    names = [c[0] for c in choices]
    assert "delete_selected" not in names
    assert {"start_instances", "stop_instances", "restart_instances", "recreate_instances",
            "refresh_instances", "delete_keeping_volumes", "delete_with_volumes"} <= set(names)


def test_view_only_staff_gets_only_refresh_and_cannot_run_others(client, orch):
    user = User.objects.create_user("viewer-t4", password="pw-t4-long-enough", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_instance"))
    client.force_login(user)
    objs = _make(1, status="running")
    names = [c[0] for c in client.get(CHANGELIST).context["action_form"].fields["action"].choices]
    assert names == ["", "refresh_instances"]
    _act(client, "stop_instances", objs)
    _act(client, "delete_with_volumes", objs, confirm="yes")
    inst = Instance.objects.get()
    assert inst.desired_state == "running"
    assert not Activity.objects.filter(action__in=["stop", "delete"]).exists()


def test_add_form_provisions_through_the_signal(client, staff, orch,
                                                django_capture_on_commit_callbacks):
    add = reverse("admin:instances_instance_add")
    form = client.get(add).context["adminform"].form
    data = {name: form[name].value() for name in form.fields
            if not name.startswith(("key_", "clear_")) and form[name].value() is not None}
    data.update(display_name="T4 Added", clawdbot_config="{}", desired_state="running",
                **{"ports-TOTAL_FORMS": "0", "ports-INITIAL_FORMS": "0"})
    with django_capture_on_commit_callbacks() as callbacks:
        reply = client.post(add, data)
    assert reply.status_code == 302, reply.context["adminform"].form.errors
    inst = Instance.objects.get(name="bot-t4-added")
    assert orch.calls == []
    assert list(Activity.objects.values_list("action", "actor", "result")) == [
        ("create", "root-t4", "queued")]
    with override(orch), eager_tasks():
        for callback in callbacks:
            callback()
    inst.refresh_from_db()
    assert orch.ops("ensure") == ["bot-t4-added"] and inst.status == "running"


def test_change_page_shows_vnc_links_status_and_recent_activity(client, staff):
    inst = _make(1, status="error", status_message="Port 32000 is already in use")[0]
    Activity.objects.create(instance=inst, instance_name=inst.name, action="stop",
                            actor="someone-t4", result="queued", message="<b>not html</b>")
    page = client.get(reverse("admin:instances_instance_change", args=[inst.pk]))
    html = page.content.decode()
    # In error, its VNC links would not answer: offered again once it runs.
    assert "http://127.0.0.1:32000/" not in html and "http://127.0.0.1:32001/" not in html
    Instance.objects.filter(pk=inst.pk).update(status="running")
    html = client.get(reverse("admin:instances_instance_change", args=[inst.pk])).content.decode()
    assert 'href="http://127.0.0.1:32000/vnc.html?autoconnect=true"' in html
    assert 'href="http://127.0.0.1:32001/vnc.html?autoconnect=true"' in html
    assert "Port 32000 is already in use" in html
    assert "someone-t4" in html and "&lt;b&gt;not html&lt;/b&gt;" in html


def test_changelist_shows_what_staff_need(client, staff):
    _make(1, status="error", status_message="Exited with code 3.", desired_state="running")
    html = client.get(CHANGELIST).content.decode()
    for text in ("Exited with code 3.", "Error", "Running"):
        assert text in html
    assert "http://127.0.0.1:32000/" not in html  # VNC links only while it runs
    Instance.objects.update(status="running")
    html = client.get(CHANGELIST).content.decode()
    for text in ('href="http://127.0.0.1:32000/vnc.html?autoconnect=true"',
                 'href="http://127.0.0.1:32001/vnc.html?autoconnect=true"'):
        assert text in html
    assert "Last observed" in html and "Desired state" in html


def test_changelist_query_count_is_constant(client, staff, django_assert_max_num_queries):
    _make(10)
    with django_assert_max_num_queries(50) as few:
        assert client.get(CHANGELIST).status_code == 200
    Instance.objects.all().purge()
    _make(1000)
    with django_assert_max_num_queries(len(few.captured_queries)) as many:
        page = client.get(CHANGELIST)
    assert page.status_code == 200
    assert "1000 instances" in page.content.decode()
    assert len(many.captured_queries) == len(few.captured_queries)


@pytest.mark.parametrize(("action", "submit"), [
    ("delete_keeping_volumes", "Yes, delete 2 instances"),
    ("delete_with_volumes", "Yes, delete 2 instances"),
    ("update_image", "Update 2 instances"),
])
def test_a_confirmation_page_posts_back_what_was_selected(client, staff, orch, action, submit):
    from tests.integration.support import form_fields

    objs = _make(3)
    page = _act(client, action, objs[:2]).content.decode()
    assert f'value="{submit}"' in page and "No, take me back" in page
    fields = form_fields(page, f"{action}_form")
    picked = [int(v) for k, v in fields if k == "_selected_action"]
    assert picked == [o.pk for o in objs[:2]]
    assert ("action", action) in fields and ("confirm", "yes") in fields
    assert all(o.name in page for o in objs[:2]) and objs[2].name not in page
